import { luoFlbHeaderSer, luoFlbSer } from '@liveupdate/core';
import type { PhysicalMemory } from '@liveupdate/machine';
import { IOMMUFD_LUO_COMPATIBLE } from '@liveupdate/plugin-iommufd';
import { MEMFD_LUO_FH_COMPATIBLE_V2, MEMFD_LUO_FOLIO_UPTODATE } from '@liveupdate/plugin-memfd';
import { VFIO_PCI_LUO_COMPATIBLE } from '@liveupdate/plugin-vfio';
import { deviceScenario } from './device-scenario.js';
import type { HandoverMap, Region } from './handover-map.js';
import { memfdScenario } from './memfd-scenario.js';
import type { Random } from './random.js';
import type { Scenario } from './scenario.js';

/** What a family may use besides the handover's map. */
export interface MutationContext {
  readonly memory: PhysicalMemory;
  readonly map: HandoverMap;
  readonly random: Random;
}

/**
 * One kind of damage. `apply` changes the handover in RAM, once, and says what it changed; it
 * returns `null` when the handover has nothing it could damage (the update then counts as
 * skipped, never as intact).
 */
export interface MutationFamily {
  readonly name: string;
  readonly description: string;
  /**
   * What the update preserves, whose handover the family damages: by default
   * {@link memfdScenario} with the newest memfd module (memfd-v3); `memfdScenario(MEMFD_V2_MODULE)`
   * for memfd-v2 handovers, {@link deviceScenario} for a VM with a passthrough NIC.
   */
  readonly scenario?: Scenario;
  apply(ctx: MutationContext): string | null;
}

/** The memfd module of kernel 6.18.0, which writes memfd-v2. */
export const MEMFD_V2_MODULE = '@liveupdate/plugin-memfd/memfd-v2';
const MEMFD_V2 = memfdScenario(MEMFD_V2_MODULE);

const PAGE = 4096;

function flipBit({ memory, random }: MutationContext, region: Region): string {
  const offset = random.below(region.size);
  const bit = random.below(8);
  memory.view(region.phys + offset, 1)[0]! ^= 1 << bit;
  return `${region.what}: bit ${bit} of byte ${offset} flipped`;
}

const bitFlip = (name: string, description: string, regions: (map: HandoverMap) => Region[]) =>
  ({
    name,
    description,
    apply(ctx) {
      const candidates = regions(ctx.map).filter((r) => r.size > 0);
      return candidates.length === 0 ? null : flipBit(ctx, ctx.random.pick(candidates));
    },
  }) satisfies MutationFamily;

/** Change one byte of the string `text` found in `region` to another printable character. */
function changeString(ctx: MutationContext, region: Region, text: string): string | null {
  const bytes = Buffer.from(ctx.memory.view(region.phys, region.size));
  const at = bytes.indexOf(Buffer.from(text));
  if (at < 0) return null;
  const offset = ctx.random.below(text.length);
  const old = text.charCodeAt(offset);
  let value = 0x21 + ctx.random.below(0x5e);
  if (value === old) value = old === 0x7e ? 0x21 : old + 1;
  ctx.memory.view(region.phys + at + offset, 1)[0] = value;
  return `${region.what}: "${text}" byte ${offset} changed to "${String.fromCharCode(value)}"`;
}

function swapU64(memory: PhysicalMemory, a: number, b: number): void {
  const x = memory.readU64(a);
  memory.writeU64(a, memory.readU64(b));
  memory.writeU64(b, x);
}

function copyBytes(memory: PhysicalMemory, from: number, to: number, size: number): void {
  memory.write(to, memory.read(from, size));
}

/** Two distinct items of `items`, or null. */
function pair<T>(ctx: MutationContext, items: readonly T[]): [T, T] | null {
  if (items.length < 2) return null;
  const i = ctx.random.below(items.length);
  let j = ctx.random.below(items.length - 1);
  if (j >= i) j++;
  return [items[i]!, items[j]!];
}

const khoSubtreeName = {
  name: 'kho-subtree-name',
  description: 'one character of a KHO subtree name (LUO, iommu, pci, …)',
  apply: (ctx) => {
    const region = ctx.random.pick(ctx.map.subtreeNames);
    const text = Buffer.from(ctx.memory.read(region.phys, region.size)).toString('latin1');
    return changeString(ctx, region, text);
  },
} satisfies MutationFamily;

const addressElsewhere = {
  name: 'address-elsewhere',
  description:
    'an address field pointed at 0, past RAM, the firmware area, scratch, a random frame, another structure, or off by 8',
  apply: (ctx) => {
    const { memory, map, random } = ctx;
    const field = random.pick(map.addresses);
    const old = memory.readU64(field.phys);
    // Another structure than the one the field points at: the same address is no mutation.
    const structures = [
      map.sessionHeader,
      map.luoFdt,
      map.flbTable,
      ...map.files.map((f) => f.entry),
      ...map.files.flatMap((f) => (f.deviceSer ? [f.deviceSer] : [])),
      ...(map.iommuBlob ? [map.iommuBlob] : []),
    ].filter((structure) => BigInt(structure.phys) !== old);
    const choices: [string, bigint][] = [
      ['0', 0n],
      ['past RAM', BigInt(memory.size)],
      ['far past RAM', BigInt(memory.size) * 16n],
      ['the firmware area', 0x1000n],
      ['a random frame', BigInt(PAGE * (256 + random.below(memory.size / PAGE - 256)))],
      ['another structure', BigInt(random.pick(structures).phys)],
      ['8 bytes on', old + 8n],
    ];
    const [what, value] = random.pick(choices);
    memory.writeU64(field.phys, value);
    return `${field.what} ${old} → ${value} (${what})`;
  },
} satisfies MutationFamily;

const truncate = {
  name: 'truncate',
  description: "an FDT's totalsize or blob-size made shorter, or a count made smaller",
  apply: (ctx) => {
    const { memory, map, random } = ctx;
    switch (random.below(3)) {
      case 0: {
        const blob = random.pick([map.khoRoot, map.luoFdt]);
        const size = memory.view(blob.phys + 4, 4);
        const old = Buffer.from(size).readUInt32BE(0);
        const value = Math.max(0, old - 4 * (1 + random.below(16)));
        Buffer.from(size.buffer, size.byteOffset, 4).writeUInt32BE(value, 0);
        return `${blob.what}.totalsize ${old} → ${value}`;
      }
      case 1: {
        const sessions = map.sessions.filter((_, s) => map.files.some((f) => f.session === s));
        if (sessions.length === 0) return null;
        const session = random.pick(sessions);
        const old = memory.readU64(session.phys + 72);
        memory.writeU64(session.phys + 72, old - 1n);
        return `${session.what}.count ${old} → ${old - 1n}`;
      }
      default: {
        const old = memory.readU64(map.sessionHeader.phys);
        if (old === 0n) return null;
        memory.writeU64(map.sessionHeader.phys, old - 1n);
        return `luo_session_header_ser.count ${old} → ${old - 1n}`;
      }
    }
  },
} satisfies MutationFamily;

/** A u32 at `phys` moved by one, up or down. */
function nudgeU32(ctx: MutationContext, phys: number, what: string): string {
  const old = ctx.memory.readU32(phys);
  const value = ctx.random.below(2) === 0 || old === 0 ? old + 1 : old - 1;
  ctx.memory.writeU32(phys, value);
  return `${what} ${old} → ${value}`;
}

/** The device scenario's families: each damages one device structure of its handover. */
const DEVICE_FAMILIES: readonly MutationFamily[] = (
  [
    {
      name: 'iommu-subtree',
      description:
        "a bit of the KHO iommu blob, a device's domain id moved, a domain's root made another table frame, or two table frames swapped",
      apply: (ctx) => {
        const blob = ctx.map.iommuBlob;
        if (!blob) return null;
        const { memory, random } = ctx;
        const frame = (i: number) => blob.framesAt + i * 8;
        switch (random.below(5)) {
          case 0:
            if (blob.devices === 0) return null;
            return nudgeU32(ctx, blob.devicesAt + 4, 'iommu blob device[0].domain_id');
          case 1: {
            if (blob.domains === 0 || blob.frames < 2) return null;
            const root = memory.readU64(blob.domainsAt);
            const other = 1 + random.below(blob.frames - 1);
            memory.writeU64(blob.domainsAt, memory.readU64(frame(other)));
            return `iommu blob domain[0].page_table_root ${root} := table_frames[${other}]`;
          }
          case 2: {
            const two = pair(
              ctx,
              Array.from({ length: blob.frames }, (_, i) => i),
            );
            if (!two) return null;
            swapU64(memory, frame(two[0]), frame(two[1]));
            return `iommu blob table_frames[${two[0]}] ⇄ table_frames[${two[1]}]`;
          }
          default:
            return flipBit(ctx, blob);
        }
      },
    },
    {
      name: 'pci-subtree',
      description:
        "a bit of the KHO pci blob (pci_ser), its device count moved, or a device's bdf or refcount changed",
      apply: (ctx) => {
        const blob = ctx.map.pciBlob;
        if (!blob) return null;
        const { memory, random } = ctx;
        // pci_ser: max_nr_devices u64 @0, nr_devices u64 @8; pci_dev_ser[] from 16: domain u32,
        // bdf u16 @4, refcount u16 @6.
        switch (random.below(4)) {
          case 0: {
            const old = memory.readU64(blob.phys + 8);
            const value = random.below(2) === 0 || old === 0n ? old + 1n : old - 1n;
            memory.writeU64(blob.phys + 8, value);
            return `pci_ser.nr_devices ${old} → ${value}`;
          }
          case 1: {
            const view = memory.view(blob.phys + 20, 2);
            const old = view[0]! | (view[1]! << 8);
            const value = random.pick([0x20, 0x19, 0x100 | old].filter((b) => b !== old));
            view[0] = value & 0xff;
            view[1] = value >> 8;
            return `pci_dev_ser[0].bdf 0x${old.toString(16)} → 0x${value.toString(16)}`;
          }
          case 2: {
            const view = memory.view(blob.phys + 22, 2);
            const old = view[0]!;
            view[0] = random.below(2) === 0 ? 0 : old + 1;
            return `pci_dev_ser[0].refcount ${old} → ${view[0]}`;
          }
          default:
            return flipBit(ctx, blob);
        }
      },
    },
    {
      name: 'iommu-flb',
      description:
        "a bit of the IOMMU FLB's iommu_lu_flb_ser, or its version or reserved field changed",
      apply: (ctx) => {
        const flb = ctx.map.iommuFlb;
        if (!flb) return null;
        switch (ctx.random.below(3)) {
          case 0:
            return nudgeU32(ctx, flb.phys, 'iommu_lu_flb_ser.version');
          case 1:
            ctx.memory.writeU32(flb.phys + 4, 1 << ctx.random.below(32));
            return `iommu_lu_flb_ser.__reserved → 0x${ctx.memory.readU32(flb.phys + 4).toString(16)}`;
          default:
            return flipBit(ctx, flb);
        }
      },
    },
    {
      name: 'iommufd-ser',
      description:
        "a bit of an iommufd_lu, or its HWPT count, a HWPT's token, reclaimed flag, domain id or page-table root changed",
      apply: (ctx) => {
        const file = ctx.map.files.find((f) => f.compatible === IOMMUFD_LUO_COMPATIBLE);
        const ser = file?.deviceSer;
        if (!ser) return null;
        const { memory, random } = ctx;
        // iommufd_lu: nr_hwpts u32 @0; iommufd_hwpt_lu[0] @8: token u32, reclaimed u32 @4,
        // domain_id u32 @8, page_table_root u64 @16.
        const hwpt = ser.phys + 8;
        switch (random.below(6)) {
          case 0:
            return nudgeU32(ctx, ser.phys, 'iommufd_lu.nr_hwpts');
          case 1:
            return nudgeU32(ctx, hwpt, 'iommufd_hwpt_lu[0].token');
          case 2:
            memory.writeU32(hwpt + 4, 1);
            return 'iommufd_hwpt_lu[0].reclaimed → 1';
          case 3:
            return nudgeU32(ctx, hwpt + 8, 'iommufd_hwpt_lu[0].domain_id');
          case 4: {
            const blob = ctx.map.iommuBlob;
            if (!blob || blob.frames < 2) return null;
            const other = 1 + random.below(blob.frames - 1);
            memory.writeU64(hwpt + 16, memory.readU64(blob.framesAt + other * 8));
            return `iommufd_hwpt_lu[0].page_table_root := iommu blob table_frames[${other}]`;
          }
          default:
            return flipBit(ctx, ser);
        }
      },
    },
    {
      name: 'vfio-ser',
      description:
        'a bit of a vfio_pci_core_device_ser, or its segment, bdf or iommufd token changed',
      apply: (ctx) => {
        const file = ctx.map.files.find((f) => f.compatible === VFIO_PCI_LUO_COMPATIBLE);
        const ser = file?.deviceSer;
        if (!ser) return null;
        const { memory, random } = ctx;
        // vfio_pci_core_device_ser: domain u32 @0, bdf u16 @4, reserved u16 @6, iommufd_token u64 @8.
        switch (random.below(4)) {
          case 0:
            memory.writeU32(ser.phys, 1);
            return 'vfio_pci_core_device_ser.domain → 1';
          case 1: {
            const view = memory.view(ser.phys + 4, 2);
            const old = view[0]! | (view[1]! << 8);
            const value = random.pick([0x20, 0x19, 0x100 | old].filter((b) => b !== old));
            view[0] = value & 0xff;
            view[1] = value >> 8;
            return `vfio_pci_core_device_ser.bdf 0x${old.toString(16)} → 0x${value.toString(16)}`;
          }
          case 2: {
            const old = memory.readU64(ser.phys + 8);
            // The session's other tokens (the memfd's, the device's own) and one nobody has.
            const value = random.pick([1n, 3n, 99n]);
            memory.writeU64(ser.phys + 8, value);
            return `vfio_pci_core_device_ser.iommufd_token ${old} → ${value}`;
          }
          default:
            return flipBit(ctx, ser);
        }
      },
    },
    {
      ...khoSubtreeName,
      name: 'device-subtree-name',
      description: 'kho-subtree-name in the device scenario (LUO, iommu, pci)',
    },
    {
      ...addressElsewhere,
      name: 'device-address-elsewhere',
      description: 'address-elsewhere in the device scenario, device structures included',
    },
    { ...truncate, name: 'device-truncate', description: 'truncate in the device scenario' },
  ] satisfies MutationFamily[]
).map((family) => ({ ...family, scenario: deviceScenario }));

export const MUTATION_FAMILIES: readonly MutationFamily[] = [
  bitFlip('kho-root', 'a bit of the KHO root FDT', (m) => [m.khoRoot]),
  khoSubtreeName,
  bitFlip('kho-memory-map', "a bit of KHO's preserved-memory map", (m) => m.memoryMap),
  bitFlip('luo-fdt', 'a bit of the LUO FDT', (m) => [m.luoFdt]),
  {
    name: 'luo-compatible',
    description: 'one character of a compatible string of the LUO FDT',
    apply: (ctx) => {
      const blob = Buffer.from(ctx.memory.read(ctx.map.luoFdt.phys, ctx.map.luoFdt.size));
      const present = ['luo-v', 'luo-session-v', 'luo-flb-v'].flatMap((prefix) =>
        ['1', '2'].map((v) => prefix + v).filter((text) => blob.includes(`${text}\0`)),
      );
      return present.length === 0
        ? null
        : changeString(ctx, ctx.map.luoFdt, ctx.random.pick(present));
    },
  },
  {
    name: 'session-count',
    description: 'luo_session_header_ser.count set to another value',
    apply: ({ memory, map, random }) => {
      const count = BigInt(map.sessions.length);
      const value = random.pick([0n, count - 1n, count + 1n, 1n << 32n, 0xffff_ffff_ffff_ffffn]);
      memory.writeU64(map.sessionHeader.phys, value);
      return `luo_session_header_ser.count ${count} → ${value}`;
    },
  },
  bitFlip('session-entry', 'a bit of a luo_session_ser', (m) => m.sessions),
  {
    name: 'session-names',
    description: 'two sessions with the same name, or two names swapped',
    apply: (ctx) => {
      const two = pair(ctx, ctx.map.sessions);
      if (!two) return null;
      const [a, b] = two;
      if (ctx.random.below(2) === 0) {
        copyBytes(ctx.memory, a.phys, b.phys, 64);
        return `${b.what}.name := ${a.what}.name`;
      }
      const name = ctx.memory.read(a.phys, 64);
      copyBytes(ctx.memory, b.phys, a.phys, 64);
      ctx.memory.write(b.phys, name);
      return `${a.what}.name ⇄ ${b.what}.name`;
    },
  },
  bitFlip('file-entry', 'a bit of a luo_file_ser', (m) => m.files.map((f) => f.entry)),
  {
    name: 'file-tokens',
    description: 'two files of a session with the same token, or two tokens swapped',
    apply: (ctx) => {
      const sessions = [...new Set(ctx.map.files.map((f) => f.session))];
      const bySession = sessions
        .map((s) => ctx.map.files.filter((f) => f.session === s))
        .filter((files) => files.length >= 2);
      if (bySession.length === 0) return null;
      const [a, b] = pair(ctx, ctx.random.pick(bySession))!;
      if (ctx.random.below(2) === 0) {
        copyBytes(ctx.memory, a.entry.phys + 56, b.entry.phys + 56, 8);
        return `${b.entry.what}.token := ${a.entry.what}.token`;
      }
      swapU64(ctx.memory, a.entry.phys + 56, b.entry.phys + 56);
      return `${a.entry.what}.token ⇄ ${b.entry.what}.token`;
    },
  },
  {
    name: 'file-data',
    description: "two files pointing at the same serialized state, or two files' data swapped",
    apply: (ctx) => {
      const two = pair(ctx, ctx.map.files);
      if (!two) return null;
      const [a, b] = two;
      if (ctx.random.below(2) === 0) {
        copyBytes(ctx.memory, a.entry.phys + 48, b.entry.phys + 48, 8);
        return `${b.entry.what}.data := ${a.entry.what}.data`;
      }
      swapU64(ctx.memory, a.entry.phys + 48, b.entry.phys + 48);
      return `${a.entry.what}.data ⇄ ${b.entry.what}.data`;
    },
  },
  {
    name: 'file-compatible',
    description: "one character of a file's compatible",
    apply: (ctx) => {
      const file = ctx.random.pick(ctx.map.files);
      const text = Buffer.from(ctx.memory.read(file.entry.phys, 48)).toString('latin1');
      return changeString(ctx, file.entry, text.slice(0, text.indexOf('\0')));
    },
  },
  bitFlip('memfd-ser', 'a bit of a memfd_luo_ser', (m) =>
    m.files.flatMap((f) => (f.memfdSer ? [f.memfdSer] : [])),
  ),
  {
    name: 'memfd-values',
    description: "a memfd's size, position, seals or run count set to another plausible value",
    apply: ({ memory, map, random }) => {
      const files = map.files.filter((f) => f.memfdSer);
      if (files.length === 0) return null;
      const file = random.pick(files);
      const ser = file.memfdSer!;
      const count = file.compatible === MEMFD_LUO_FH_COMPATIBLE_V2 ? 'nr_folios' : 'nr_runs';
      const field = random.pick([
        ['pos', 0, 1n],
        ['size', 8, BigInt(PAGE)],
        ['size', 8, 1n],
        [count, 24, 1n],
      ] as const);
      const [name, offset, delta] = field;
      if (random.below(3) === 0 && name !== count) {
        // Seals, u32 @16: one bit toggled.
        const bit = random.pick([1, 2, 4, 8, 16]);
        memory.writeU32(ser.phys + 16, memory.readU32(ser.phys + 16) ^ bit);
        return `${ser.what}.seals ^= ${bit}`;
      }
      const old = memory.readU64(ser.phys + offset);
      const value = random.below(2) === 0 || old < delta ? old + delta : old - delta;
      memory.writeU64(ser.phys + offset, value);
      return `${ser.what}.${name} ${old} → ${value}`;
    },
  },
  bitFlip('memfd-run', 'a bit of a memfd_luo_run_ser', (m) => m.files.flatMap((f) => f.entries)),
  {
    name: 'memfd-run-values',
    description:
      "a run's pfn made 0 or another run's, UPTODATE cleared, its index moved, or its folio count or order changed by one",
    apply: (ctx) => {
      const { memory, random } = ctx;
      // memfd_luo_run_ser: pfn u64 @0, index u64 @8, nr_folios u32 @16, order u16 @20, flags u16 @22.
      const runs = ctx.map.files.flatMap((f) => f.entries);
      if (runs.length === 0) return null;
      const run = random.pick(runs);
      switch (random.below(6)) {
        case 0:
          memory.writeU64(run.phys, 0n);
          return `${run.what}.pfn → 0`;
        case 1: {
          const other = runs.filter((r) => r !== run);
          if (other.length === 0) return null;
          const from = random.pick(other);
          memory.writeU64(run.phys, memory.readU64(from.phys));
          return `${run.what}.pfn := ${from.what}.pfn`;
        }
        case 2: {
          const flags = memory.view(run.phys + 22, 2);
          flags[0]! &= ~MEMFD_LUO_FOLIO_UPTODATE;
          return `${run.what}: UPTODATE cleared`;
        }
        case 3: {
          const index = memory.readU64(run.phys + 8);
          memory.writeU64(run.phys + 8, index + 1n);
          return `${run.what}.index ${index} → ${index + 1n}`;
        }
        case 4: {
          const old = memory.readU32(run.phys + 16);
          const value = random.below(2) === 0 || old === 0 ? old + 1 : old - 1;
          memory.writeU32(run.phys + 16, value);
          return `${run.what}.nr_folios ${old} → ${value}`;
        }
        default: {
          const order = memory.view(run.phys + 20, 2);
          const old = order[0]!;
          order[0] = random.below(2) === 0 || old === 0 ? old + 1 : old - 1;
          return `${run.what}.order ${old} → ${order[0]}`;
        }
      }
    },
  },
  {
    ...bitFlip('memfd-v2-folio', 'a bit of a memfd_luo_folio_ser (memfd-v2)', (m) =>
      m.files.flatMap((f) => f.entries),
    ),
    scenario: MEMFD_V2,
  },
  {
    name: 'memfd-v2-folio-values',
    description:
      "a memfd-v2 folio's pfn made 0 or another file's, UPTODATE cleared, or its index moved",
    scenario: MEMFD_V2,
    apply: (ctx) => {
      const { memory, random } = ctx;
      const folios = ctx.map.files.flatMap((f) => f.entries);
      if (folios.length === 0) return null;
      const folio = random.pick(folios);
      const pfnFlags = memory.readU64(folio.phys);
      const PFN_MASK = (1n << 52n) - 1n;
      switch (random.below(4)) {
        case 0:
          memory.writeU64(folio.phys, pfnFlags & ~PFN_MASK);
          return `${folio.what}.pfn → 0`;
        case 1: {
          const other = folios.filter((f) => f !== folio);
          if (other.length === 0) return null;
          const from = random.pick(other);
          const pfn = memory.readU64(from.phys) & PFN_MASK;
          memory.writeU64(folio.phys, (pfnFlags & ~PFN_MASK) | pfn);
          return `${folio.what}.pfn := ${from.what}.pfn`;
        }
        case 2:
          memory.writeU64(folio.phys, pfnFlags & ~(BigInt(MEMFD_LUO_FOLIO_UPTODATE) << 52n));
          return `${folio.what}: UPTODATE cleared`;
        default: {
          const index = memory.readU64(folio.phys + 8);
          memory.writeU64(folio.phys + 8, index + 1n);
          return `${folio.what}.index ${index} → ${index + 1n}`;
        }
      }
    },
  },
  addressElsewhere,
  truncate,
  bitFlip('flb-table', 'a bit of the FLB table header or its first entry', (m) => [
    { ...m.flbTable, size: luoFlbHeaderSer.size + luoFlbSer.size },
  ]),
  ...DEVICE_FAMILIES,
];
