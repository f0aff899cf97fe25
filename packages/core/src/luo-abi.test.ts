import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  FDT_MAGIC,
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtValue,
  getProperty,
  type FdtNode,
} from '@liveupdate/fdt';
import { PhysicalMemory } from '@liveupdate/machine';
import {
  LIVEUPDATE_FLB_COMPAT_LENGTH,
  LUO_FDT_COMPATIBLE,
  LUO_FDT_COMPATIBLE_V1,
  LUO_FDT_FLB_COMPATIBLE_V1,
  LUO_FDT_FLB_CRC,
  LUO_FDT_SESSION_COMPATIBLE_V1,
  LUO_FDT_SESSION_CRC,
  luoFileSerV1,
  luoSessionSerV1,
  LUO_FDT_FLB_COMPATIBLE,
  LUO_FDT_FLB_HEADER,
  LUO_FDT_FLB_NODE_NAME,
  LUO_FDT_KHO_ENTRY_NAME,
  LUO_FLB_MAX,
  LUO_FLB_MAX_V1,
  LUO_FLB_TABLE_SIZE,
  LUO_FDT_LIVEUPDATE_NUM,
  LUO_FDT_SESSION_COMPATIBLE,
  LUO_FDT_SESSION_HEADER,
  LUO_FDT_SESSION_NODE_NAME,
  LuoAbiError,
  decodeLuoFdt,
  encodeLuoFdt,
  luoFileSer,
  luoFileTableSize,
  luoFlbHeaderSer,
  luoFlbMax,
  luoFlbSer,
  luoFlbSerV1,
  luoSessionHeaderSer,
  luoSessionSer,
  luoSessionTableSize,
  readLuoFileTable,
  readLuoFlbTable,
  readLuoSessionTable,
  writeLuoFileTable,
  writeLuoFlbTable,
  writeLuoSessionTable,
  type LuoFileSer,
  type LuoFlbSer,
  type LuoFdt,
  type LuoSessionSer,
} from './luo-abi.js';

const hasDtc = spawnSync('dtc', ['--version']).status === 0;

/** The LuoAbiError message `fn` throws; fails the test if it returns or throws something else. */
function abiErrorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof LuoAbiError) return error.message;
    throw error;
  }
  throw new Error('expected a LuoAbiError, but the call returned');
}

const ascii = (text: string) => new TextEncoder().encode(text);
const utf8 = new TextEncoder();

describe('LUO ABI constants', () => {
  it('use the names of the document’s FDT layout, versioned luo-v2 with luo-v1 still known', () => {
    expect(LUO_FDT_KHO_ENTRY_NAME).toBe('LUO');
    expect(LUO_FDT_COMPATIBLE).toBe('luo-v2');
    expect(LUO_FDT_COMPATIBLE_V1).toBe('luo-v1');
    expect(LUO_FDT_LIVEUPDATE_NUM).toBe('liveupdate-number');
    expect(LUO_FDT_SESSION_NODE_NAME).toBe('luo-session');
    expect(LUO_FDT_SESSION_COMPATIBLE).toBe('luo-session-v2');
    expect(LUO_FDT_SESSION_COMPATIBLE_V1).toBe('luo-session-v1');
    expect(LUO_FDT_SESSION_HEADER).toBe('luo-session-header');
    expect(LUO_FDT_SESSION_CRC).toBe('luo-session-crc');
    expect(LUO_FDT_FLB_NODE_NAME).toBe('luo-flb');
    expect(LUO_FDT_FLB_COMPATIBLE).toBe('luo-flb-v2');
    expect(LUO_FDT_FLB_COMPATIBLE_V1).toBe('luo-flb-v1');
    expect(LUO_FDT_FLB_HEADER).toBe('luo-flb-header');
    expect(LUO_FDT_FLB_CRC).toBe('luo-flb-crc');
  });

  it('fit LUO_FLB_MAX = (4096 - 16) / 80 = 51 FLBs (luo-v1: / 64 = 63) in the one page of the FLB table', () => {
    expect(LIVEUPDATE_FLB_COMPAT_LENGTH).toBe(48);
    expect(LUO_FLB_TABLE_SIZE).toBe(4096);
    expect(LUO_FLB_MAX).toBe(51);
    expect(LUO_FLB_MAX_V1).toBe(63);
    expect([luoFlbMax(2), luoFlbMax(1)]).toEqual([51, 63]);
  });
});

describe('the serialized structs', () => {
  // Sizes and offsets from spec §3 (luo-v1) and docs/luo-handover.md (luo-v2).
  it.each([
    ['luo_session_header_ser', luoSessionHeaderSer, 8, { count: 0 }],
    [
      'luo_session_ser',
      luoSessionSer,
      88,
      { name: 0, files: 64, count: 72, filesCrc: 80, reserved: 84 },
    ],
    ['luo_session_ser', luoSessionSerV1, 80, { name: 0, files: 64, count: 72 }],
    [
      'luo_file_ser',
      luoFileSer,
      80,
      { compatible: 0, data: 48, token: 56, dataSize: 64, dataCrc: 72, reserved: 76 },
    ],
    ['luo_file_ser', luoFileSerV1, 64, { compatible: 0, data: 48, token: 56 }],
    ['luo_flb_header_ser', luoFlbHeaderSer, 16, { pgcnt: 0, count: 8 }],
    [
      'luo_flb_ser',
      luoFlbSer,
      80,
      { name: 0, data: 48, count: 56, dataSize: 64, dataCrc: 72, reserved: 76 },
    ],
    ['luo_flb_ser', luoFlbSerV1, 64, { name: 0, data: 48, count: 56 }],
  ] as const)('struct %s has the documented size and offsets', (name, codec, size, offsets) => {
    expect(codec.name).toBe(name);
    expect(codec.size).toBe(size);
    expect(codec.offsets).toEqual(offsets);
  });

  it('lays out luo_file_ser of luo-v2 as the v1 entry then data_size, data_crc and reserved', () => {
    const value = {
      compatible: 'memfd-v1',
      data: 0x1122334455667788n,
      token: 0xabn,
      dataSize: 0x2000n,
      dataCrc: 0xe3069283,
      reserved: 0,
    };
    const bytes = luoFileSer.encode(value);
    expect(luoFileSerV1.decode(bytes)).toEqual({
      compatible: 'memfd-v1',
      data: 0x1122334455667788n,
      token: 0xabn,
    });
    expect([...bytes.subarray(64, 80)]).toEqual([
      0, 0x20, 0, 0, 0, 0, 0, 0, 0x83, 0x92, 0x06, 0xe3, 0, 0, 0, 0,
    ]);
    expect(luoFileSer.decode(bytes)).toEqual(value);
  });

  it('lays out luo_file_ser of luo-v1 as a NUL-padded compatible and two little-endian u64s', () => {
    const value = { compatible: 'memfd-v1', data: 0x1122334455667788n, token: 0xabn };
    const bytes = luoFileSerV1.encode(value);
    expect(bytes.subarray(0, 8)).toEqual(ascii('memfd-v1'));
    expect(bytes.subarray(8, 48).every((b) => b === 0)).toBe(true);
    expect([...bytes.subarray(48, 56)]).toEqual([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    expect([...bytes.subarray(56, 64)]).toEqual([0xab, 0, 0, 0, 0, 0, 0, 0]);
    expect(luoFileSerV1.decode(bytes)).toEqual(value);
  });

  it('lays out luo_session_ser as the name, the embedded luo_file_set_ser and (v2) files_crc', () => {
    const value = {
      name: utf8.encode('vm0'),
      files: 0x5000n,
      count: 3n,
      filesCrc: 0x8a9136aa,
      reserved: 0,
    };
    const bytes = luoSessionSer.encode(value);
    const view = new DataView(bytes.buffer);
    expect(bytes.subarray(0, 4)).toEqual(new Uint8Array([0x76, 0x6d, 0x30, 0]));
    expect(view.getBigUint64(64, true)).toBe(0x5000n);
    expect(view.getBigUint64(72, true)).toBe(3n);
    expect(view.getUint32(80, true)).toBe(0x8a9136aa);
    expect(luoSessionSer.decode(bytes)).toEqual(value);
    expect(luoSessionSerV1.decode(bytes)).toEqual({
      name: utf8.encode('vm0'),
      files: 0x5000n,
      count: 3n,
    });
    expect(luoSessionHeaderSer.decode(luoSessionHeaderSer.encode({ count: 819n }))).toEqual({
      count: 819n,
    });
  });

  it('sizes the tables to what they hold', () => {
    expect(luoSessionTableSize(0)).toBe(8);
    expect(luoSessionTableSize(3)).toBe(8 + 3 * 88);
    expect(luoSessionTableSize(3, 1)).toBe(8 + 3 * 80);
    expect(luoFileTableSize(0)).toBe(0);
    expect(luoFileTableSize(5)).toBe(5 * 80);
    expect(luoFileTableSize(5, 1)).toBe(5 * 64);
  });
});

describe('the LUO FDT', () => {
  const fdt: LuoFdt = {
    version: 2,
    liveupdateNumber: 3n,
    sessionHeaderPhys: 0x1234000n,
    sessionCrc: 0x11223344,
    flbHeaderPhys: 0x5678000n,
    flbCrc: 0xfedcba98,
  };

  it('round-trips through encodeLuoFdt and decodeLuoFdt, luo-v2 and luo-v1', () => {
    expect(decodeLuoFdt(encodeLuoFdt(fdt))).toEqual(fdt);
    const extremes: LuoFdt = {
      version: 2,
      liveupdateNumber: 0n,
      sessionHeaderPhys: 0xffff_ffff_ffff_ffffn,
      sessionCrc: 0,
      flbHeaderPhys: 0n,
      flbCrc: 0xffff_ffff,
    };
    expect(decodeLuoFdt(encodeLuoFdt(extremes))).toEqual(extremes);
    const v1: LuoFdt = { ...fdt, version: 1, sessionCrc: null, flbCrc: null };
    expect(decodeLuoFdt(encodeLuoFdt(v1))).toEqual(v1);
  });

  it('refuses to encode a luo-v2 FDT without its checksums', () => {
    expect(abiErrorOf(() => encodeLuoFdt({ ...fdt, flbCrc: null }))).toMatch(/luo-flb-crc/);
  });

  it('is a DTB with the luo-v2 layout, native-endian u64 addresses and u32 checksums', () => {
    const blob = encodeLuoFdt(fdt);
    expect(new DataView(blob.buffer).getUint32(0)).toBe(FDT_MAGIC);
    const { root } = decodeFdt(blob);
    expect(getProperty(root, 'compatible')).toEqual(ascii('luo-v2\0'));
    expect([...getProperty(root, 'liveupdate-number')!]).toEqual([3, 0, 0, 0, 0, 0, 0, 0]);
    expect(root.children.map((c) => c.name)).toEqual(['luo-session', 'luo-flb']);
    const session = root.children[0]!;
    expect(getProperty(session, 'compatible')).toEqual(ascii('luo-session-v2\0'));
    expect([...getProperty(session, 'luo-session-header')!]).toEqual([
      0x00, 0x40, 0x23, 0x01, 0, 0, 0, 0,
    ]);
    expect([...getProperty(session, 'luo-session-crc')!]).toEqual([0x11, 0x22, 0x33, 0x44]);
    const flb = root.children[1]!;
    expect(getProperty(flb, 'compatible')).toEqual(ascii('luo-flb-v2\0'));
    expect([...getProperty(flb, 'luo-flb-header')!]).toEqual([0x00, 0x80, 0x67, 0x05, 0, 0, 0, 0]);
    expect([...getProperty(flb, 'luo-flb-crc')!]).toEqual([0xfe, 0xdc, 0xba, 0x98]);
  });

  it.skipIf(!hasDtc)('is read by dtc and survives a round trip through its source form', () => {
    const dts = execFileSync('dtc', ['-q', '-I', 'dtb', '-O', 'dts'], {
      input: encodeLuoFdt(fdt),
    }).toString();
    expect(dts).toContain('compatible = "luo-v2";');
    expect(dts).toContain('liveupdate-number = <0x3000000 0x00>;');
    expect(dts).toMatch(/luo-session \{\s*compatible = "luo-session-v2";/);
    expect(dts).toContain('luo-session-header = <0x402301 0x00>;');
    expect(dts).toMatch(/luo-flb \{\s*compatible = "luo-flb-v2";/);
    expect(dts).toContain('luo-flb-header = <0x806705 0x00>;');
    const back = execFileSync('dtc', ['-q', '-I', 'dts', '-O', 'dtb'], { input: dts });
    expect(decodeLuoFdt(new Uint8Array(back))).toEqual(fdt);
  });

  /** A LUO FDT built by hand, with `change` applied to the default properties. */
  function luoFdt(
    change: {
      root?: Record<string, Uint8Array | null>;
      session?: Record<string, Uint8Array | null> | null;
      flb?: Record<string, Uint8Array | null> | null;
    } = {},
  ): Uint8Array {
    const le = (v: bigint) => fdtValue.u64(v, { littleEndian: true });
    const props = (
      base: Record<string, Uint8Array>,
      edits: Record<string, Uint8Array | null> = {},
    ): Record<string, Uint8Array> => {
      const out: Record<string, Uint8Array> = { ...base };
      for (const [name, value] of Object.entries(edits)) {
        if (value === null) delete out[name];
        else out[name] = value;
      }
      return out;
    };
    const children: FdtNode[] = [];
    if (change.session !== null) {
      children.push(
        fdtNode(
          'luo-session',
          props(
            { compatible: fdtValue.string('luo-session-v1'), 'luo-session-header': le(0x2000n) },
            change.session,
          ),
        ),
      );
    }
    if (change.flb !== null) {
      children.push(
        fdtNode(
          'luo-flb',
          props(
            { compatible: fdtValue.string('luo-flb-v1'), 'luo-flb-header': le(0x3000n) },
            change.flb,
          ),
        ),
      );
    }
    return encodeFdt(
      fdtNode(
        '',
        props({ compatible: fdtValue.string('luo-v1'), 'liveupdate-number': le(1n) }, change.root),
        children,
      ),
    );
  }

  it('accepts a hand-built luo-v1 tree, and a compatible list that holds ours', () => {
    expect(decodeLuoFdt(luoFdt())).toEqual({
      version: 1,
      liveupdateNumber: 1n,
      sessionHeaderPhys: 0x2000n,
      sessionCrc: null,
      flbHeaderPhys: 0x3000n,
      flbCrc: null,
    });
    const listed = luoFdt({ root: { compatible: fdtValue.stringList(['acme,luo', 'luo-v1']) } });
    expect(decodeLuoFdt(listed).liveupdateNumber).toBe(1n);
  });

  it.each([
    ['a blob that is not an FDT', () => new Uint8Array(64).fill(7), /not a valid FDT.*magic/i],
    ['a truncated blob', () => luoFdt().subarray(0, 60), /not a valid FDT/],
    ['no root compatible', () => luoFdt({ root: { compatible: null } }), /"compatible"/],
    [
      'another root compatible',
      () => luoFdt({ root: { compatible: fdtValue.string('luo-v5') } }),
      /node \/ is not compatible with "luo-v2" or "luo-v1".*luo-v5/,
    ],
    [
      'no liveupdate-number',
      () => luoFdt({ root: { 'liveupdate-number': null } }),
      /"liveupdate-number"/,
    ],
    [
      'a 4-byte liveupdate-number',
      () => luoFdt({ root: { 'liveupdate-number': fdtValue.u32(1) } }),
      /"liveupdate-number".*4 bytes/,
    ],
    ['no luo-session node', () => luoFdt({ session: null }), /no node \/luo-session/],
    [
      'no session compatible',
      () => luoFdt({ session: { compatible: null } }),
      /"compatible".*luo-session|luo-session.*"compatible"/,
    ],
    [
      'another session compatible',
      () => luoFdt({ session: { compatible: fdtValue.string('luo-session-v2') } }),
      /node \/luo-session is not compatible with "luo-session-v1".*luo-session-v2/,
    ],
    [
      'no luo-session-header',
      () => luoFdt({ session: { 'luo-session-header': null } }),
      /"luo-session-header"/,
    ],
    [
      'a 16-byte luo-session-header',
      () => luoFdt({ session: { 'luo-session-header': new Uint8Array(16) } }),
      /"luo-session-header".*16 bytes/,
    ],
    ['no luo-flb node', () => luoFdt({ flb: null }), /no node \/luo-flb/],
    [
      'another FLB compatible',
      () => luoFdt({ flb: { compatible: fdtValue.string('luo-flb-v2') } }),
      /node \/luo-flb is not compatible with "luo-flb-v1".*luo-flb-v2/,
    ],
    ['no luo-flb-header', () => luoFdt({ flb: { 'luo-flb-header': null } }), /"luo-flb-header"/],
    [
      'a 4-byte luo-flb-header',
      () => luoFdt({ flb: { 'luo-flb-header': fdtValue.u32(1) } }),
      /"luo-flb-header".*4 bytes/,
    ],
  ])('refuses %s with a LuoAbiError naming it', (_what, blob, message) => {
    expect(abiErrorOf(() => decodeLuoFdt(blob()))).toMatch(message);
  });

  it('keeps the FDT error as the cause', () => {
    try {
      decodeLuoFdt(new Uint8Array(8));
      expect.unreachable();
    } catch (error) {
      expect(LuoAbiError.isInstance(error)).toBe(true);
      expect((error as LuoAbiError).cause).toBeInstanceOf(Error);
      expect((error as LuoAbiError).name).toBe('LuoAbiError');
    }
  });
});

describe('the session table', () => {
  const RAM = 64 * 1024;
  const sessions: LuoSessionSer[] = [
    { name: utf8.encode('vm0'), files: 0x3000n, count: 2n, filesCrc: 0x12345678 },
    // Names are bytes: not UTF-8 is fine.
    { name: new Uint8Array([0xff, 0xfe, 0x01]), files: 0n, count: 0n, filesCrc: 0 },
    { name: utf8.encode('x'.repeat(63)), files: 0x4000n, count: 1n, filesCrc: 0xffffffff },
  ];

  it('reads back what was written', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoSessionTable(memory, 0x1000, sessions);
    expect(memory.readU64(0x1000)).toBe(3n);
    expect(readLuoSessionTable(memory, 0x1000, 3)).toEqual(sessions);
  });

  it('reads back a luo-v1 table, whose entries carry no checksum', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoSessionTable(memory, 0x1000, sessions, 1);
    expect(memory.readU64(0x1000 + 8 + 80 + 64)).toBe(0n); // "cache".files, 80 bytes apart
    expect(readLuoSessionTable(memory, 0x1000, 3, 1)).toEqual(
      sessions.map((session) => ({ ...session, filesCrc: 0 })),
    );
  });

  it('refuses a luo-v2 entry whose reserved field is not 0, naming it', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoSessionTable(memory, 0x1000, sessions);
    memory.writeU32(0x1000 + 8 + 88 + 84, 1);
    expect(abiErrorOf(() => readLuoSessionTable(memory, 0x1000, 3))).toMatch(
      /luo_session_ser\[1\]: reserved is 0x1, not 0/,
    );
  });

  it('reads an empty table', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoSessionTable(memory, 0x1000, []);
    expect(readLuoSessionTable(memory, 0x1000, 0)).toEqual([]);
  });

  it('refuses a count above the limit', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoSessionTable(memory, 0x1000, sessions);
    expect(abiErrorOf(() => readLuoSessionTable(memory, 0x1000, 2))).toMatch(
      /count 3 is more than the 2 allowed/,
    );
    memory.writeU64(0x1000, 0xffff_ffff_ffff_ffffn);
    expect(abiErrorOf(() => readLuoSessionTable(memory, 0x1000, 1000))).toMatch(/count/);
  });

  it('refuses a header or an array outside RAM', () => {
    const memory = PhysicalMemory.allocate(RAM);
    expect(abiErrorOf(() => readLuoSessionTable(memory, RAM - 4, 10))).toMatch(/outside RAM/);
    expect(abiErrorOf(() => readLuoSessionTable(memory, RAM, 10))).toMatch(/outside RAM/);
    expect(abiErrorOf(() => readLuoSessionTable(memory, -8, 10))).toMatch(/outside RAM/);
    expect(abiErrorOf(() => readLuoSessionTable(memory, 2 ** 60, 10))).toMatch(/outside RAM/);
    memory.writeU64(RAM - 96, 2n); // room for the header and one entry, not two
    expect(abiErrorOf(() => readLuoSessionTable(memory, RAM - 96, 10))).toMatch(
      /2 luo_session_ser entries run outside RAM/,
    );
  });

  it('refuses a name without a NUL within 64 bytes', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoSessionTable(memory, 0x1000, sessions);
    memory.fill(0x1000 + 8 + 88, 64, 0x41);
    expect(abiErrorOf(() => readLuoSessionTable(memory, 0x1000, 3))).toMatch(
      /luo_session_ser\[1\]: name has no NUL/,
    );
  });

  it('refuses an empty name', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoSessionTable(memory, 0x1000, sessions);
    memory.fill(0x1000 + 8 + 2 * 88, 1, 0);
    expect(abiErrorOf(() => readLuoSessionTable(memory, 0x1000, 3))).toMatch(
      /luo_session_ser\[2\]: name is empty/,
    );
  });

  it('refuses a name that appears twice', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoSessionTable(memory, 0x1000, sessions);
    memory.write(
      0x1000 + 8 + 88,
      luoSessionSer.encode({
        name: utf8.encode('vm0'),
        files: 0n,
        count: 0n,
        filesCrc: 0,
        reserved: 0,
      }),
    );
    expect(abiErrorOf(() => readLuoSessionTable(memory, 0x1000, 3))).toMatch(
      /luo_session_ser\[1\]: name "vm0" appears twice/,
    );
  });

  it('refuses to write what it would not read, and writes nothing then', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const cases: [LuoSessionSer[], RegExp][] = [
      [[{ name: new Uint8Array(0), files: 0n, count: 0n, filesCrc: 0 }], /name is empty/],
      [[sessions[0]!, { ...sessions[1]!, name: utf8.encode('vm0') }], /name appears twice/],
      [[{ name: utf8.encode('y'.repeat(64)), files: 0n, count: 0n, filesCrc: 0 }], /does not fit/],
      [[{ name: utf8.encode('é'.repeat(32)), files: 0n, count: 0n, filesCrc: 0 }], /does not fit/],
      [
        [{ name: new Uint8Array([0x61, 0, 0x62]), files: 0n, count: 0n, filesCrc: 0 }],
        /does not fit/,
      ],
    ];
    for (const [table, message] of cases) {
      expect(abiErrorOf(() => writeLuoSessionTable(memory, 0x1000, table))).toMatch(message);
    }
    expect(abiErrorOf(() => writeLuoSessionTable(memory, RAM - 100, sessions))).toMatch(
      /outside RAM/,
    );
    expect(memory.read(0, RAM).every((b) => b === 0)).toBe(true);
  });
});

describe('the file table', () => {
  const RAM = 64 * 1024;
  const files: LuoFileSer[] = [
    { compatible: 'memfd-v1', data: 0x8000n, token: 1n, dataSize: 4096n, dataCrc: 0xabcdef01 },
    {
      compatible: 'iommufd-v1',
      data: 0n,
      token: 0xffff_ffff_ffff_ffffn,
      dataSize: 0n,
      dataCrc: 0,
    },
    { compatible: 'c'.repeat(47), data: 0x9000n, token: 0n, dataSize: 8192n, dataCrc: 1 },
  ];

  it('reads back what was written', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoFileTable(memory, 0x2000, files);
    expect(readLuoFileTable(memory, 0x2000, 3, 3)).toEqual(files);
    expect(readLuoFileTable(memory, 0x2000, 1, 3)).toEqual(files.slice(0, 1));
  });

  it('reads an empty table without looking at its address', () => {
    const memory = PhysicalMemory.allocate(RAM);
    expect(readLuoFileTable(memory, 0, 0, 0)).toEqual([]);
    expect(readLuoFileTable(memory, 2 ** 40, 0, 128)).toEqual([]);
  });

  it('refuses a count above the limit, negative or fractional', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoFileTable(memory, 0x2000, files);
    expect(abiErrorOf(() => readLuoFileTable(memory, 0x2000, 3, 2))).toMatch(
      /count 3 is not in 0\.\.2/,
    );
    expect(abiErrorOf(() => readLuoFileTable(memory, 0x2000, -1, 2))).toMatch(/count -1/);
    expect(abiErrorOf(() => readLuoFileTable(memory, 0x2000, 1.5, 2))).toMatch(/count 1.5/);
    expect(abiErrorOf(() => readLuoFileTable(memory, 0x2000, 2 ** 64, 2 ** 64))).toMatch(/count/);
  });

  it('refuses an array at address 0 or outside RAM', () => {
    const memory = PhysicalMemory.allocate(RAM);
    expect(abiErrorOf(() => readLuoFileTable(memory, 0, 1, 10))).toMatch(/outside RAM/);
    expect(abiErrorOf(() => readLuoFileTable(memory, RAM - 80, 2, 10))).toMatch(/outside RAM/);
    expect(abiErrorOf(() => readLuoFileTable(memory, RAM, 1, 10))).toMatch(/outside RAM/);
    expect(abiErrorOf(() => readLuoFileTable(memory, 2 ** 53, 1, 10))).toMatch(/outside RAM/);
  });

  it('refuses a compatible without a NUL within 48 bytes, or an empty one', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoFileTable(memory, 0x2000, files);
    memory.fill(0x2000 + 80, 48, 0x41);
    expect(abiErrorOf(() => readLuoFileTable(memory, 0x2000, 3, 3))).toMatch(
      /entry 1: compatible has no NUL/,
    );
    writeLuoFileTable(memory, 0x2000, files);
    memory.fill(0x2000 + 160, 1, 0);
    expect(abiErrorOf(() => readLuoFileTable(memory, 0x2000, 3, 3))).toMatch(
      /entry 2: compatible is empty/,
    );
  });

  it('refuses a token that appears twice', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoFileTable(memory, 0x2000, files);
    memory.writeU64(0x2000 + 160 + 56, 1n);
    expect(abiErrorOf(() => readLuoFileTable(memory, 0x2000, 3, 3))).toMatch(
      /entry 2: token 1 appears twice/,
    );
  });

  it('reads back a luo-v1 table, and refuses a luo-v2 entry whose reserved is not 0', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoFileTable(memory, 0x2000, files, 1);
    expect(readLuoFileTable(memory, 0x2000, 3, 3, 1)).toEqual(
      files.map((file) => ({ ...file, dataSize: 0n, dataCrc: 0 })),
    );
    writeLuoFileTable(memory, 0x2000, files);
    memory.writeU32(0x2000 + 80 + 76, 0x100);
    expect(abiErrorOf(() => readLuoFileTable(memory, 0x2000, 3, 3))).toMatch(
      /entry 1: reserved is 0x100, not 0/,
    );
  });

  it('refuses to write what it would not read, and writes nothing then', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const cases: [LuoFileSer[], RegExp][] = [
      [[{ compatible: '', data: 0n, token: 0n, dataSize: 0n, dataCrc: 0 }], /compatible is empty/],
      [[files[0]!, { ...files[1]!, token: 1n }], /token appears twice/],
      [
        [{ compatible: 'z'.repeat(48), data: 0n, token: 0n, dataSize: 0n, dataCrc: 0 }],
        /does not fit/,
      ],
      [[{ compatible: 'ok', data: -1n, token: 0n, dataSize: 0n, dataCrc: 0 }], /out of range/],
    ];
    for (const [table, message] of cases) {
      expect(abiErrorOf(() => writeLuoFileTable(memory, 0x2000, table))).toMatch(message);
    }
    expect(abiErrorOf(() => writeLuoFileTable(memory, RAM - 80, files))).toMatch(/outside RAM/);
    expect(memory.read(0, RAM).every((b) => b === 0)).toBe(true);
  });
});

describe('the FLB table', () => {
  const RAM = 64 * 1024;
  const flbs: LuoFlbSer[] = [
    { name: 'iommu-v1', data: 0x7000n, count: 3n, dataSize: 0x2000n, dataCrc: 0xe3069283 },
    { name: 'pci-v2', data: 0xffff_ffff_ffff_ffffn, count: 1n, dataSize: 0n, dataCrc: 0 },
  ];
  const entry = (name: string): LuoFlbSer => ({
    name,
    data: 0n,
    count: 1n,
    dataSize: 0n,
    dataCrc: 0,
  });

  it('is luo_flb_header_ser { pgcnt = 1, count } then luo_flb_ser[] of 80 bytes, little-endian', () => {
    const memory = PhysicalMemory.allocate(RAM);
    memory.fill(0x2000, 4096, 0xee);
    writeLuoFlbTable(memory, 0x2000, flbs);
    expect(memory.readU64(0x2000)).toBe(1n);
    expect(memory.readU64(0x2008)).toBe(2n);
    expect(memory.read(0x2010, 9)).toEqual(ascii('iommu-v1\0'));
    expect(memory.readU64(0x2010 + 48)).toBe(0x7000n);
    expect(memory.readU64(0x2010 + 56)).toBe(3n);
    expect(memory.readU64(0x2010 + 64)).toBe(0x2000n);
    expect(memory.readU32(0x2010 + 72)).toBe(0xe3069283);
    expect(memory.readU32(0x2010 + 76)).toBe(0);
    expect(memory.read(0x2060, 7)).toEqual(ascii('pci-v2\0'));
    expect(memory.readU64(0x2060 + 56)).toBe(1n);
    // The rest of the page is zeroed, not left as it was.
    expect(memory.read(0x20b0, 4096 - 0xb0).every((b) => b === 0)).toBe(true);
    expect(readLuoFlbTable(memory, 0x2000)).toEqual(flbs);
  });

  it('writes and reads luo-v1 entries of 64 bytes, without data_size and data_crc', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoFlbTable(memory, 0x2000, flbs, 1);
    expect(memory.read(0x2050, 7)).toEqual(ascii('pci-v2\0'));
    expect(memory.read(0x2090, 4096 - 0x90).every((b) => b === 0)).toBe(true);
    expect(readLuoFlbTable(memory, 0x2000, 1)).toEqual([
      { ...flbs[0]!, dataSize: 0n, dataCrc: 0 },
      flbs[1],
    ]);
  });

  it.each([
    [2, 51],
    [1, 63],
  ] as const)("holds up to luo-v%i's %i FLBs and refuses to write one more", (version, max) => {
    const memory = PhysicalMemory.allocate(RAM);
    const many = Array.from({ length: max }, (_, i) => entry(`flb-${i}`));
    writeLuoFlbTable(memory, 0x2000, many, version);
    expect(readLuoFlbTable(memory, 0x2000, version)).toHaveLength(max);
    const tooMany = [...many, entry(`flb-${max}`)];
    expect(abiErrorOf(() => writeLuoFlbTable(memory, 0x2000, tooMany, version))).toMatch(
      new RegExp(`${max + 1} FLBs, but ${max} fit`),
    );
    memory.writeU64(0x2008, BigInt(max + 1));
    expect(abiErrorOf(() => readLuoFlbTable(memory, 0x2000, version))).toMatch(
      new RegExp(`count ${max + 1} is more than the ${max} that fit`),
    );
  });

  it.each([
    ['pgcnt is not 1', (m: PhysicalMemory) => m.writeU64(0x2000, 2n), /pgcnt 2 is not 1/],
    ['count is above 51', (m: PhysicalMemory) => m.writeU64(0x2008, 52n), /count 52 .* 51/],
    [
      'a name has no NUL',
      (m: PhysicalMemory) => m.fill(0x2060, 48, 0x41),
      /luo_flb_ser\[1\]: name has no NUL/,
    ],
    [
      'one entry more than written',
      (m: PhysicalMemory) => m.writeU64(0x2008, 3n),
      /luo_flb_ser\[2\]: name is empty/,
    ],
    [
      'a name appears twice',
      (m: PhysicalMemory) => m.write(0x2060, ascii('iommu-v1\0')),
      /luo_flb_ser\[1\]: name "iommu-v1" appears twice/,
    ],
    ['a count is 0', (m: PhysicalMemory) => m.writeU64(0x2010 + 56, 0n), /\[0\]: count is 0/],
    [
      'reserved is not 0',
      (m: PhysicalMemory) => m.writeU32(0x2060 + 76, 0x100),
      /luo_flb_ser\[1\]: reserved is 0x100, not 0/,
    ],
  ])('refuses a table where %s', (_what, corrupt, message) => {
    const memory = PhysicalMemory.allocate(RAM);
    writeLuoFlbTable(memory, 0x2000, flbs);
    corrupt(memory);
    expect(abiErrorOf(() => readLuoFlbTable(memory, 0x2000))).toMatch(message);
  });

  it('refuses a table at address 0 or running outside RAM', () => {
    const memory = PhysicalMemory.allocate(RAM);
    expect(abiErrorOf(() => readLuoFlbTable(memory, 0))).toMatch(/outside RAM/);
    expect(abiErrorOf(() => readLuoFlbTable(memory, RAM - 64))).toMatch(/outside RAM/);
  });

  it('refuses to write what it would not read, and writes nothing then', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const cases: [LuoFlbSer[], RegExp][] = [
      [[entry('')], /name is empty/],
      [[flbs[0]!, { ...flbs[1]!, name: 'iommu-v1' }], /name appears twice/],
      [[{ ...entry('unused'), count: 0n }], /count is 0/],
      [[entry('z'.repeat(48))], /does not fit/],
    ];
    for (const [table, message] of cases) {
      expect(abiErrorOf(() => writeLuoFlbTable(memory, 0x2000, table))).toMatch(message);
    }
    expect(abiErrorOf(() => writeLuoFlbTable(memory, RAM - 64, flbs))).toMatch(/outside RAM/);
    expect(memory.read(0, RAM).every((b) => b === 0)).toBe(true);
  });
});
