/**
 * What a kernel image says it can read, as ELF notes: the data an old kernel reads from the image
 * it `kexec_load`s, never a JS object of the next kernel (DESIGN rule 1 holds the other way too).
 *
 * The blob is a sequence of notes, each laid out as in an ELF `PT_NOTE` segment (little-endian,
 * every field 4-byte aligned):
 *
 * | offset | field |
 * |---|---|
 * | 0 | `u32 namesz`: bytes of `name` including its NUL |
 * | 4 | `u32 descsz`: bytes of `desc` |
 * | 8 | `u32 type` |
 * | 12 | `name`, NUL-terminated, padded to 4 bytes |
 * | … | `desc`, padded to 4 bytes |
 *
 * A note of type {@link NT_HANDOVER_READS} has the owner's name (`"Linux"` for the kernel itself,
 * else a module's name) and, as `desc`, the compatible strings of the handover data that owner can
 * read, each NUL-terminated (an FDT string list).
 *
 * @module
 */
import { KernelError } from '@liveupdate/machine';

/** Note type: the handover formats (compatible strings) the note's owner reads. */
export const NT_HANDOVER_READS = 0x4c55_0001;
/** The owner name of the kernel's own notes (its KHO, IOMMU and PCI formats). */
export const KERNEL_NOTE_OWNER = 'Linux';

/** One note of a kernel image. */
export interface KernelNote {
  /** Who wrote it: `"Linux"` or a module's name. 1..63 bytes of UTF-8 without NUL. */
  readonly owner: string;
  readonly type: number;
  readonly desc: Uint8Array;
}

/** The most notes and bytes a kernel image may carry; more is a damaged image (`ENOEXEC`). */
export const KERNEL_NOTES_MAX_BYTES = 64 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const align4 = (n: number): number => (n + 3) & ~3;

/** Encode `notes` as one note blob. Throws `EINVAL` for a bad owner or a blob too large. */
export function encodeKernelNotes(notes: readonly KernelNote[]): Uint8Array {
  const parts = notes.map((note) => {
    const name = encoder.encode(note.owner);
    if (name.length === 0 || name.length > 63 || name.includes(0)) {
      throw new KernelError('EINVAL', `kernel note: bad owner ${JSON.stringify(note.owner)}`);
    }
    return { name, note };
  });
  const size = parts.reduce(
    (n, p) => n + 12 + align4(p.name.length + 1) + align4(p.note.desc.length),
    0,
  );
  if (size > KERNEL_NOTES_MAX_BYTES) {
    throw new KernelError(
      'EINVAL',
      `kernel notes: ${size} bytes, more than ${KERNEL_NOTES_MAX_BYTES}`,
    );
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const { name, note } of parts) {
    view.setUint32(at, name.length + 1, true);
    view.setUint32(at + 4, note.desc.length, true);
    view.setUint32(at + 8, note.type >>> 0, true);
    out.set(name, at + 12);
    at += 12 + align4(name.length + 1);
    out.set(note.desc, at);
    at += align4(note.desc.length);
  }
  return out;
}

/**
 * Decode a note blob, checking everything {@link encodeKernelNotes} guarantees: sizes inside the
 * blob, a NUL-terminated UTF-8 owner, zero padding. Throws `ENOEXEC` naming what is wrong.
 */
export function decodeKernelNotes(blob: Uint8Array): KernelNote[] {
  const bad = (at: number, what: string): never => {
    throw new KernelError('ENOEXEC', `kernel notes: note at byte ${at}: ${what}`);
  };
  if (blob.length > KERNEL_NOTES_MAX_BYTES) bad(0, `the blob is ${blob.length} bytes, too large`);
  if (blob.length % 4 !== 0) bad(0, `the blob's ${blob.length} bytes are not a multiple of 4`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const notes: KernelNote[] = [];
  let at = 0;
  while (at < blob.length) {
    if (blob.length - at < 12) bad(at, 'truncated header');
    const namesz = view.getUint32(at, true);
    const descsz = view.getUint32(at + 4, true);
    const type = view.getUint32(at + 8, true);
    if (namesz < 2 || namesz > 64) bad(at, `namesz ${namesz} is not 2..64`);
    const nameEnd = at + 12 + align4(namesz);
    const descEnd = nameEnd + align4(descsz);
    if (descEnd > blob.length) bad(at, `namesz ${namesz} and descsz ${descsz} run past the blob`);
    const name = blob.subarray(at + 12, at + 12 + namesz);
    if (name[namesz - 1] !== 0 || name.subarray(0, namesz - 1).includes(0)) {
      bad(at, 'the name is not one NUL-terminated string');
    }
    const isZero = (from: number, to: number): boolean =>
      blob.subarray(from, to).every((b) => b === 0);
    if (!isZero(at + 12 + namesz, nameEnd) || !isZero(nameEnd + descsz, descEnd)) {
      bad(at, 'padding is not zero');
    }
    let owner: string;
    try {
      owner = decoder.decode(name.subarray(0, namesz - 1));
    } catch {
      return bad(at, 'the name is not UTF-8');
    }
    notes.push({ owner, type, desc: blob.slice(nameEnd, nameEnd + descsz) });
    at = descEnd;
  }
  return notes;
}

/** A {@link NT_HANDOVER_READS} note: `owner` reads `compatibles`. */
export function handoverReadsNote(owner: string, compatibles: readonly string[]): KernelNote {
  const strings = compatibles.map((c) => {
    const bytes = encoder.encode(c);
    if (bytes.length === 0 || bytes.includes(0)) {
      throw new KernelError('EINVAL', `kernel note ${owner}: bad compatible ${JSON.stringify(c)}`);
    }
    return bytes;
  });
  const desc = new Uint8Array(strings.reduce((n, s) => n + s.length + 1, 0));
  let at = 0;
  for (const s of strings) {
    desc.set(s, at);
    at += s.length + 1;
  }
  return { owner, type: NT_HANDOVER_READS, desc };
}

/**
 * The compatible strings of a {@link NT_HANDOVER_READS} note's `desc`. Throws `ENOEXEC` when it is
 * not a list of non-empty NUL-terminated UTF-8 strings.
 */
export function readHandoverReads(note: KernelNote): string[] {
  const { desc } = note;
  if (desc.length === 0) return [];
  if (desc[desc.length - 1] !== 0) {
    throw new KernelError(
      'ENOEXEC',
      `kernel note ${note.owner}: the reads list is not NUL-terminated`,
    );
  }
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < desc.length; i++) {
    if (desc[i] !== 0) continue;
    if (i === start)
      throw new KernelError('ENOEXEC', `kernel note ${note.owner}: an empty compatible`);
    try {
      out.push(decoder.decode(desc.subarray(start, i)));
    } catch {
      throw new KernelError('ENOEXEC', `kernel note ${note.owner}: a compatible is not UTF-8`);
    }
    start = i + 1;
  }
  return out;
}
