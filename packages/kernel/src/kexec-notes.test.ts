import { describe, expect, it } from 'vitest';
import { errnoOf } from '../test/errno-of.js';
import {
  NT_HANDOVER_READS,
  decodeKernelNotes,
  encodeKernelNotes,
  handoverReadsNote,
  readHandoverReads,
} from './kexec-notes.js';
import { kexecTarget } from './kexec-target.js';
import { kernelFormatsCheck, kernelOwnNote } from './kernel-formats.js';

const blob = () =>
  encodeKernelNotes([
    handoverReadsNote('Linux', ['kho-v1']),
    handoverReadsNote('memfd', ['memfd-v3', 'memfd-v2']),
  ]);

describe('kernel image notes', () => {
  it('lay out each note as an ELF note: sizes, type, padded name and desc', () => {
    const bytes = blob();
    const view = new DataView(bytes.buffer);
    expect(view.getUint32(0, true)).toBe(6); // "Linux\0"
    expect(view.getUint32(4, true)).toBe(7); // "kho-v1\0"
    expect(view.getUint32(8, true)).toBe(NT_HANDOVER_READS);
    expect(new TextDecoder().decode(bytes.subarray(12, 17))).toBe('Linux');
    expect(bytes.subarray(17, 20)).toEqual(new Uint8Array(3));
    expect(new TextDecoder().decode(bytes.subarray(20, 26))).toBe('kho-v1');
    // the second note starts after the desc padded to 4 bytes: 20 + 8
    expect(view.getUint32(28, true)).toBe(6); // "memfd\0"
    expect(bytes.length % 4).toBe(0);
  });

  it('decode to what was encoded, and a target maps each format to its owner', () => {
    const notes = decodeKernelNotes(blob());
    expect(notes.map((n) => [n.owner, readHandoverReads(n)])).toEqual([
      ['Linux', ['kho-v1']],
      ['memfd', ['memfd-v3', 'memfd-v2']],
    ]);
    const target = kexecTarget('6.19.0', 'kho=on', blob());
    expect([...target.reads]).toEqual([
      ['kho-v1', 'Linux'],
      ['memfd-v3', 'memfd'],
      ['memfd-v2', 'memfd'],
    ]);
  });

  it('ignore notes of other types when listing what a target reads', () => {
    const bytes = encodeKernelNotes([
      { owner: 'vendor', type: 7, desc: new TextEncoder().encode('memfd-v9\0') },
      handoverReadsNote('memfd', ['memfd-v2']),
    ]);
    expect([...kexecTarget('x', '', bytes).reads.keys()]).toEqual(['memfd-v2']);
  });

  it.each([
    ['a length that is not a multiple of 4', (b: Uint8Array) => b.subarray(0, b.length - 2)],
    ['a truncated header', (b: Uint8Array) => b.subarray(0, 8).slice()],
    ['namesz 0', (b: Uint8Array) => (new DataView(b.buffer).setUint32(0, 0, true), b)],
    [
      'descsz past the end',
      (b: Uint8Array) => (new DataView(b.buffer).setUint32(4, 4000, true), b),
    ],
    ['a name without its NUL', (b: Uint8Array) => ((b[17] = 0x41), b)],
    ['non-zero padding', (b: Uint8Array) => ((b[19] = 1), b)],
    ['a name that is not UTF-8', (b: Uint8Array) => ((b[12] = 0xff), b)],
  ])('refuse a blob with %s (ENOEXEC)', (_what, damage) => {
    expect(errnoOf(() => decodeKernelNotes(damage(blob())))).toBe('ENOEXEC');
  });

  it.each([
    ['an empty compatible', 'a\0\0'],
    ['no final NUL', 'a\0b'],
  ])('refuse a reads list with %s (ENOEXEC)', (_what, text) => {
    const note = { owner: 'm', type: NT_HANDOVER_READS, desc: new TextEncoder().encode(text) };
    expect(errnoOf(() => readHandoverReads(note))).toBe('ENOEXEC');
  });

  it('refuse to encode a bad owner or compatible (EINVAL)', () => {
    expect(errnoOf(() => encodeKernelNotes([handoverReadsNote('', ['a'])]))).toBe('EINVAL');
    expect(errnoOf(() => handoverReadsNote('m', ['a\0b']))).toBe('EINVAL');
  });
});

describe("the kernel's own check before a kexec", () => {
  const kho = (subtrees: string[], preservedFolios = 1) => ({
    enabled: true,
    stats: { preservedFolios },
    subtreeNames: () => subtrees,
  });
  const target = (reads: string[], cmdline = 'kho=on') =>
    kexecTarget('6.17.0', cmdline, encodeKernelNotes([handoverReadsNote('Linux', reads)]));

  it('names the KHO root and each driver subtree the target does not read', () => {
    const check = kernelFormatsCheck(kho(['iommu', 'pci', 'LUO-not-yet', 'vendor']));
    expect(check.check(target(['kho-v1', 'iommu-liveupdate-v1']))).toEqual([
      'the KHO subtree "pci" (pci-ser-v1)',
    ]);
    expect(check.check(target([]))).toEqual([
      'the KHO root (kho-v2 or kho-v1)',
      'the KHO subtree "iommu" (iommu-liveupdate-v1)',
      'the KHO subtree "pci" (pci-ser-v1)',
    ]);
  });

  it('accepts a target that reads either KHO root, and names the root only when it reads neither', () => {
    const check = kernelFormatsCheck(kho([]));
    expect(check.check(target(['kho-v2']))).toEqual([]);
    expect(check.check(target(['kho-v1']))).toEqual([]);
    expect(check.check(target(['kho-v3']))).toEqual(['the KHO root (kho-v2 or kho-v1)']);
  });

  it("says, in the kernel's own note, that it reads both KHO roots", () => {
    const reads = kexecTarget('6.19.0', 'kho=on', encodeKernelNotes([kernelOwnNote()])).reads;
    expect(reads.get('kho-v2')).toBe('Linux');
    expect(reads.get('kho-v1')).toBe('Linux');
  });

  it('leaves a target booted with KHO off to LUO: a bare KHO handover may be dropped', () => {
    expect(
      kernelFormatsCheck(kho(['iommu'])).check(
        target(['kho-v1', 'iommu-liveupdate-v1'], 'kho=off'),
      ),
    ).toEqual([]);
  });

  it('has nothing to say when KHO hands nothing over or is off', () => {
    expect(kernelFormatsCheck(kho([], 0)).check(target([]))).toEqual([]);
    expect(kernelFormatsCheck({ ...kho(['iommu']), enabled: false }).check(target([]))).toEqual([]);
  });
});
