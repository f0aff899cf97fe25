import { describe, expect, it } from 'vitest';
import { decodeFdt, fdtValueOffset, readFdtHeader, readU64 } from '@liveupdate/fdt';
import {
  MachineHaltedError,
  PAGE_SIZE,
  type HandoverEvent,
  type PhysicalMemory,
} from '@liveupdate/machine';
import { sealKhoHandover } from '../src/kho/seal-kho-handover.js';
import { bootedMachine, probe, testImage } from './helpers.js';
import { khoSubtreeBlob } from './kho-subtree.js';

/** Where the handover's parts are, read the way a debugger would: from the root FDT. */
function locate(memory: PhysicalMemory, fdtPhys: number): { fdtSize: number; mapPhys: number } {
  const header = readFdtHeader(memory.read(fdtPhys, 40));
  const root = decodeFdt(memory.read(fdtPhys, header.totalSize)).root;
  return {
    fdtSize: header.totalSize,
    mapPhys: Number(readU64(root, 'preserved-memory-map', { littleEndian: true })),
  };
}

/** Live-update with preserved folios, corrupting the handover between the kernels. */
async function kexecWithCorruption(corrupt: (memory: PhysicalMemory, fdtPhys: number) => void) {
  const machine = await bootedMachine(testImage('6.18.0'), {
    onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => corrupt(memory, khoFdtPhys!),
  });
  const process = machine.spawn();
  await probe(process, 'preserve', { orders: [0, 2, 4], seed: 11 });
  await process.kexecLoad(testImage('6.18.1'));
  const error = await process.reboot(0x45584543).catch((e: unknown) => e);
  return { machine, error };
}

type Corruption = (memory: PhysicalMemory, fdtPhys: number) => void;

/** `corrupt`, then KHO's checksums resealed: KHO's structural checks are what is tested. */
const resealed =
  (corrupt: Corruption): Corruption =>
  (memory, fdtPhys) => {
    corrupt(memory, fdtPhys);
    sealKhoHandover(memory, fdtPhys);
  };

const cases: [string, Corruption, RegExp][] = [
  [
    'a truncated root FDT',
    (memory, fdt) => memory.writeU32(fdt + 4, swap32(locate(memory, fdt).fdtSize - 24)),
    /^KHO: root FDT at 0x[0-9a-f]+ is corrupt: .*/,
  ],
  [
    'a root FDT with a bad magic',
    (memory, fdt) => memory.writeU32(fdt, 0x12345678),
    /^KHO: root FDT at 0x[0-9a-f]+ is corrupt: .*magic/i,
  ],
  [
    'a memory map page with a bad magic',
    (memory, fdt) => memory.writeU32(locate(memory, fdt).mapPhys, 0xdeadbeef),
    /^KHO: memory map page 0x[0-9a-f]+: bad magic 0xdeadbeef/,
  ],
  [
    'a preserved range outside RAM',
    resealed((memory, fdt) =>
      memory.writeU64(locate(memory, fdt).mapPhys + 16, BigInt(memory.size + 4 * PAGE_SIZE)),
    ),
    /^KHO: memory map page 0x[0-9a-f]+ entry 0: range 0x[0-9a-f]+\+0x1000 is outside RAM/,
  ],
  [
    'overlapping preserved ranges',
    resealed((memory, fdt) => {
      const { mapPhys } = locate(memory, fdt);
      // The second entry becomes an order-3 folio over the first one's frame.
      const first = memory.readU64(mapPhys + 16) & ~0xfffn;
      memory.writeU64(mapPhys + 24, (first & ~BigInt(8 * PAGE_SIZE - 1)) | 3n);
    }),
    /^KHO: preserved ranges overlap: 0x[0-9a-f]+\+0x[0-9a-f]+ and 0x[0-9a-f]+\+0x[0-9a-f]+/,
  ],
  [
    'a memory map chain that loops',
    (memory, fdt) => {
      const { mapPhys } = locate(memory, fdt);
      memory.writeU64(mapPhys + 8, BigInt(mapPhys));
    },
    /^KHO: memory map chain loops back to page 0x[0-9a-f]+/,
  ],
  // Value-only changes that KHO's structural checks cannot see: the kho-v2 checksums catch them.
  [
    'a map entry moved to another aligned frame in RAM',
    (memory, fdt) => {
      const { mapPhys } = locate(memory, fdt);
      const order = memory.readU64(mapPhys + 16) & 0xfffn;
      const top = BigInt(memory.size) - (BigInt(PAGE_SIZE) << order);
      memory.writeU64(mapPhys + 16, top | order);
    },
    /^KHO: preserved-memory-map-crc 0x[0-9a-f]+ does not match the memory map \(0x[0-9a-f]+\)$/,
  ],
  [
    'a root property changed into another valid value',
    (memory, fdt) => {
      // scratch-len one page shorter: still a usable scratch area.
      const bytes = memory.view(fdt, locate(memory, fdt).fdtSize);
      const root = decodeFdt(bytes).root;
      const len = root.properties.find((p) => p.name === 'scratch-len')!;
      const at = fdtValueOffset(len)!;
      const value = readU64(root, 'scratch-len', { littleEndian: true }) - BigInt(PAGE_SIZE);
      new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(at, value, true);
    },
    /^KHO: root FDT fdt-crc 0x[0-9a-f]+ does not match its blob \(0x[0-9a-f]+\)$/,
  ],
  [
    'a changed byte in a subtree blob',
    (memory, fdt) => {
      const blob = khoSubtreeBlob(memory, fdt, 'kho-probe');
      memory.write(blob, Uint8Array.of(memory.read(blob, 1)[0]! ^ 0x80));
    },
    /^KHO: subtree "kho-probe" blob-crc 0x[0-9a-f]+ does not match its blob \(0x[0-9a-f]+\)$/,
  ],
];

/** FDT header fields are big-endian; RAM accessors are little-endian. */
function swap32(value: number): number {
  return (
    ((value & 0xff) << 24) | ((value & 0xff00) << 8) | ((value >>> 8) & 0xff00) | (value >>> 24)
  );
}

describe('a corrupted KHO handover', () => {
  it.each(cases)(
    'makes the new kernel panic naming the problem: %s',
    async (_name, corrupt, reason) => {
      const { machine, error } = await kexecWithCorruption(corrupt);
      expect(MachineHaltedError.isInstance(error)).toBe(true);
      expect(machine.state).toBe('halted');
      expect(machine.panicReason).toMatch(reason);
      expect(machine.dmesg(1)).toMatch(/Kernel panic - not syncing: KHO: /);
      // The new kernel panicked before bringing up anything that uses memory.
      expect(machine.dmesg(1)).not.toMatch(/Run \/sbin\/init/);
    },
  );

  it('is ignored, not used, when the root FDT is of another KHO version', async () => {
    const machine = await bootedMachine(testImage('6.18.0'), {
      onHandover: ({ memory, khoFdtPhys }) => {
        // "kho-v2" -> "kho-v9" in the strings of the compatible property, same length.
        const bytes = memory.view(khoFdtPhys!, locate(memory, khoFdtPhys!).fdtSize);
        const at = Buffer.from(bytes).indexOf('kho-v2');
        bytes[at + 5] = '9'.charCodeAt(0);
      },
    });
    const first = machine.spawn();
    await probe(first, 'preserve', { orders: [0], seed: 1 });
    await first.kexecLoad(testImage('6.18.1'));
    await first.reboot(0x45584543);
    const second = machine.spawn();
    expect(machine.dmesg()).toMatch(
      /KHO: incompatible handover \(compatible = "kho-v9"\); ignoring it/,
    );
    expect(await probe(second, 'retrieveSubtree', { name: 'kho-probe' })).toBe('ENOENT');
  });

  it('reports, as an error naming it, a subtree whose name was damaged into another valid one', async () => {
    const machine = await bootedMachine(testImage('6.18.0'), {
      onHandover: ({ memory, khoFdtPhys }) => {
        const bytes = memory.view(khoFdtPhys!, locate(memory, khoFdtPhys!).fdtSize);
        const at = Buffer.from(bytes).indexOf('kho-probe\0');
        bytes[at + 4] = 'q'.charCodeAt(0); // "kho-qrobe": still a valid name, unknown to all
        sealKhoHandover(memory, khoFdtPhys!);
      },
    });
    const first = machine.spawn();
    await probe(first, 'preserve', { orders: [0], seed: 1 });
    await first.kexecLoad(testImage('6.18.1'));
    await first.reboot(0x45584543);
    const second = machine.spawn();
    expect(await probe(second, 'retrieveSubtree', { name: 'kho-probe' })).toBe('ENOENT');
    expect(machine.dmesg()).toMatch(
      /KHO: incoming subtree "kho-qrobe" \(blob 0x[0-9a-f]+\+\d+\) was retrieved by no subsystem: its name is damaged or unknown to this kernel/,
    );
  });
});
