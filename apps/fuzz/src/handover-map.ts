import { FDT_HEADER_SIZE, decodeFdt, readFdtHeader, readU64, type FdtNode } from '@liveupdate/fdt';
import {
  LUO_FDT_KHO_ENTRY_NAME,
  decodeLuoFdt,
  luoFileSer,
  luoFlbHeaderSer,
  luoFlbSer,
  luoSessionHeaderSer,
  luoSessionSer,
} from '@liveupdate/core';
import type { PhysicalMemory } from '@liveupdate/machine';
import {
  MEMFD_LUO_FH_COMPATIBLE_V2,
  memfdLuoFolioSer,
  memfdLuoRunSer,
  memfdLuoSer,
} from '@liveupdate/plugin-memfd';
import {
  IOMMU_LU_CONTEXT_SIZE,
  IOMMU_LU_DEVICE_SIZE,
  IOMMU_LU_DOMAIN_SIZE,
  IOMMU_LU_HEADER_SIZE,
  IOMMU_LU_SUBTREE,
  PCI_LU_SUBTREE,
} from '@liveupdate/kernel';
import {
  IOMMUFD_LUO_COMPATIBLE,
  IOMMU_FLB_COMPATIBLE,
  iommuLuFlbSer,
  iommufdHwptLu,
  iommufdLu,
} from '@liveupdate/plugin-iommufd';
import { VFIO_PCI_LUO_COMPATIBLE, vfioPciCoreDeviceSer } from '@liveupdate/plugin-vfio';

/** A range of RAM the fuzzer may damage, and what it holds. */
export interface Region {
  readonly what: string;
  readonly phys: number;
  readonly size: number;
}

/** A field holding a physical address, and how wide it is. */
export interface AddressField extends Region {
  readonly size: 8;
}

/** One preserved file as the handover lists it. */
export interface MappedFile {
  readonly session: number;
  readonly index: number;
  /** Its `luo_file_ser`. */
  readonly entry: Region;
  /** Its `luo_file_ser.compatible`. */
  readonly compatible: string;
  /** The memfd's `memfd_luo_ser`, when the file is a memfd. */
  readonly memfdSer?: Region;
  /**
   * Its entries (in the first page of the KHO vmalloc area): `memfd_luo_run_ser[]` for
   * memfd-v3, `memfd_luo_folio_ser[]` for memfd-v2.
   */
  readonly entries: Region[];
  /**
   * A device file's serialized state: `iommufd_lu` with its `iommufd_hwpt_lu[]` (iommufd-v1), or
   * `vfio_pci_core_device_ser` (vfio-pci-v1).
   */
  readonly deviceSer?: Region;
}

/**
 * The KHO `iommu` subtree's blob (`docs/device-live-update.md`): its counts, and where its
 * context tables, domains, devices and table frames start.
 */
export interface IommuBlob extends Region {
  readonly contexts: number;
  readonly domains: number;
  readonly devices: number;
  readonly frames: number;
  readonly contextsAt: number;
  readonly domainsAt: number;
  readonly devicesAt: number;
  readonly framesAt: number;
}

/**
 * Where everything of a handover is, found the way the next kernel finds it: from the KHO root
 * FDT's address, walking the documented layouts (docs/kho-handover.md, docs/luo-handover.md,
 * plugins/memfd/README.md). Read from an intact handover, before any damage.
 */
export interface HandoverMap {
  readonly khoRoot: Region;
  /** Each subtree node's name in the root FDT's structure block (bytes, without the NUL). */
  readonly subtreeNames: Region[];
  /** Each subtree's blob (`preserved-data`, `blob-size`). */
  readonly subtreeBlobs: Region[];
  readonly memoryMap: Region[];
  readonly luoFdt: Region;
  readonly sessionHeader: Region;
  readonly sessions: Region[];
  readonly files: MappedFile[];
  readonly flbTable: Region;
  /** The IOMMU FLB's `iommu_lu_flb_ser`, when the handover has the FLB. */
  readonly iommuFlb?: Region;
  /** The `iommu` subtree's blob, when the handover has one. */
  readonly iommuBlob?: IommuBlob;
  /** The `pci` subtree's blob (`pci_ser`), when the handover has one. */
  readonly pciBlob?: Region;
  /** Every field that holds a physical address, for the "address elsewhere" family. */
  readonly addresses: AddressField[];
}

const BEGIN_NODE = [0, 0, 0, 1];

/** Offset in `blob` of the name of the node `name` (a direct child of the root). */
function nodeNameOffset(blob: Uint8Array, name: string): number {
  const needle = Buffer.from([...BEGIN_NODE, ...Buffer.from(name), 0]);
  const at = Buffer.from(blob).indexOf(needle);
  if (at < 0) throw new Error(`no node ${name} in the FDT`);
  return at + 4;
}

/** Offset in `blob` of the value of property `name` of a node, found by its u64 value. */
function u64Offset(blob: Uint8Array, value: bigint): number {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(value);
  return Buffer.from(blob).indexOf(bytes);
}

export function mapHandover(memory: PhysicalMemory, khoFdtPhys: number): HandoverMap {
  const header = readFdtHeader(memory.read(khoFdtPhys, FDT_HEADER_SIZE));
  const rootBlob = memory.read(khoFdtPhys, header.totalSize);
  const root = decodeFdt(rootBlob).root;
  const addresses: AddressField[] = [];
  const addressIn = (blobPhys: number, blob: Uint8Array, value: bigint, what: string) => {
    const at = u64Offset(blob, value);
    if (at >= 0) addresses.push({ what, phys: blobPhys + at, size: 8 });
  };

  const subtreeNames: Region[] = [];
  const subtreeBlobs: Region[] = [];
  const blobsByName = new Map<string, Region>();
  for (const child of root.children) {
    const at = nodeNameOffset(rootBlob, child.name);
    subtreeNames.push({
      what: `KHO subtree name "${child.name}"`,
      phys: khoFdtPhys + at,
      size: child.name.length,
    });
    const data = readU64(child, 'preserved-data', { littleEndian: true });
    const size = readU64(child, 'blob-size', { littleEndian: true });
    const blob = {
      what: `KHO subtree ${child.name}'s blob`,
      phys: Number(data),
      size: Number(size),
    };
    subtreeBlobs.push(blob);
    blobsByName.set(child.name, blob);
    addressIn(khoFdtPhys, rootBlob, data, `${child.name}/preserved-data`);
  }

  const memoryMap: Region[] = [];
  let page = Number(readU64(root, 'preserved-memory-map', { littleEndian: true }));
  addressIn(khoFdtPhys, rootBlob, BigInt(page), 'preserved-memory-map');
  for (let i = 0; page !== 0 && i < 1024; i++) {
    const entries = Math.min(memory.readU32(page + 4), 510);
    memoryMap.push({ what: `KHO memory map page ${i}`, phys: page, size: 16 + 8 * entries });
    page = Number(memory.readU64(page + 8));
  }

  const luo = child(root, LUO_FDT_KHO_ENTRY_NAME);
  const luoPhys = Number(readU64(luo, 'preserved-data', { littleEndian: true }));
  const luoSize = Number(readU64(luo, 'blob-size', { littleEndian: true }));
  const luoBlob = memory.read(luoPhys, luoSize);
  const luoFdt = decodeLuoFdt(luoBlob);
  const headerPhys = Number(luoFdt.sessionHeaderPhys);
  addressIn(luoPhys, luoBlob, luoFdt.sessionHeaderPhys, 'luo-session-header');
  const flbPhys = Number(luoFdt.flbHeaderPhys);
  addressIn(luoPhys, luoBlob, luoFdt.flbHeaderPhys, 'luo-flb-header');

  const count = Number(memory.readU64(headerPhys));
  const sessions: Region[] = [];
  const files: MappedFile[] = [];
  for (let s = 0; s < count; s++) {
    const phys = headerPhys + luoSessionHeaderSer.size + s * luoSessionSer.size;
    sessions.push({ what: `luo_session_ser[${s}]`, phys, size: luoSessionSer.size });
    const session = luoSessionSer.decode(memory.view(phys, luoSessionSer.size));
    if (session.files !== 0n)
      addresses.push({ what: `luo_session_ser[${s}].files`, phys: phys + 64, size: 8 });
    for (let f = 0; f < Number(session.count); f++) {
      const entryPhys = Number(session.files) + f * luoFileSer.size;
      const entry = luoFileSer.decode(memory.view(entryPhys, luoFileSer.size));
      const where = `session ${s} file ${f}`;
      addresses.push({ what: `${where} luo_file_ser.data`, phys: entryPhys + 48, size: 8 });
      const mapped: MappedFile = {
        session: s,
        index: f,
        entry: { what: `${where} luo_file_ser`, phys: entryPhys, size: luoFileSer.size },
        compatible: entry.compatible,
        entries: [],
      };
      const deviceSer = deviceSerOf(memory, entry.compatible, Number(entry.data), where);
      if (deviceSer) Object.assign(mapped, { deviceSer });
      if (entry.compatible === IOMMUFD_LUO_COMPATIBLE) {
        for (let h = 0; h < (deviceSer!.size - iommufdLu.size) / iommufdHwptLu.size; h++) {
          addresses.push({
            what: `${where} iommufd_hwpt_lu[${h}].page_table_root`,
            phys: deviceSer!.phys + iommufdLu.size + h * iommufdHwptLu.size + 16,
            size: 8,
          });
        }
      }
      if (entry.compatible.startsWith('memfd-')) {
        // memfd-v2 and v3 share the header: the entry count @24, their kho_vmalloc @32.
        const v2 = entry.compatible === MEMFD_LUO_FH_COMPATIBLE_V2;
        const [struct, array, codec] = v2
          ? (['memfd_luo_folio_ser', 'folios', memfdLuoFolioSer] as const)
          : (['memfd_luo_run_ser', 'runs', memfdLuoRunSer] as const);
        const serPhys = Number(entry.data);
        const ser = memfdLuoSer.decode(memory.view(serPhys, memfdLuoSer.size));
        Object.assign(mapped, {
          memfdSer: { what: `${where} memfd_luo_ser`, phys: serPhys, size: memfdLuoSer.size },
        });
        if (ser.nrFolios > 0n) {
          addresses.push({
            what: `${where} memfd_luo_ser.${array}.first`,
            phys: serPhys + 32,
            size: 8,
          });
          const page = Number(memory.readU64(Number(ser.folios.first) + 8));
          for (let i = 0; i < Number(ser.nrFolios); i++) {
            mapped.entries.push({
              what: `${where} ${struct}[${i}]`,
              phys: page + i * codec.size,
              size: codec.size,
            });
          }
        }
      }
      files.push(mapped);
    }
  }
  let iommuFlb: Region | undefined;
  const flbCount = Number(memory.readU64(flbPhys + 8));
  for (let i = 0; i < flbCount; i++) {
    const at = flbPhys + luoFlbHeaderSer.size + i * luoFlbSer.size;
    const flb = luoFlbSer.decode(memory.view(at, luoFlbSer.size));
    addresses.push({ what: `luo_flb_ser[${i}] (${flb.name}).data`, phys: at + 48, size: 8 });
    if (flb.name === IOMMU_FLB_COMPATIBLE)
      iommuFlb = { what: 'iommu_lu_flb_ser', phys: Number(flb.data), size: iommuLuFlbSer.size };
  }
  const iommu = blobsByName.get(IOMMU_LU_SUBTREE);
  const iommuBlob = iommu && mapIommuBlob(memory, iommu, addresses);
  const pci = blobsByName.get(PCI_LU_SUBTREE);
  return {
    ...(iommuFlb ? { iommuFlb } : {}),
    ...(iommuBlob ? { iommuBlob } : {}),
    ...(pci ? { pciBlob: { ...pci, what: 'pci_ser' } } : {}),
    khoRoot: { what: 'KHO root FDT', phys: khoFdtPhys, size: header.totalSize },
    subtreeNames,
    subtreeBlobs,
    memoryMap,
    luoFdt: { what: 'LUO FDT', phys: luoPhys, size: luoSize },
    sessionHeader: {
      what: 'luo_session_header_ser',
      phys: headerPhys,
      size: luoSessionHeaderSer.size,
    },
    sessions,
    files,
    flbTable: { what: 'luo_flb table', phys: flbPhys, size: 4096 },
    addresses,
  };
}

function child(root: FdtNode, name: string): FdtNode {
  const node = root.children.find((c) => c.name === name);
  if (!node) throw new Error(`the KHO root FDT has no ${name} node`);
  return node;
}

/** A device file's serialized state, by the file's compatible; undefined for other files. */
function deviceSerOf(
  memory: PhysicalMemory,
  compatible: string,
  phys: number,
  where: string,
): Region | undefined {
  if (compatible === VFIO_PCI_LUO_COMPATIBLE)
    return { what: `${where} vfio_pci_core_device_ser`, phys, size: vfioPciCoreDeviceSer.size };
  if (compatible !== IOMMUFD_LUO_COMPATIBLE) return undefined;
  const hwpts = memory.readU32(phys);
  return {
    what: `${where} iommufd_lu`,
    phys,
    size: iommufdLu.size + hwpts * iommufdHwptLu.size,
  };
}

/** The `iommu` blob's layout, and its address fields added to `addresses`. */
function mapIommuBlob(memory: PhysicalMemory, blob: Region, addresses: AddressField[]): IommuBlob {
  const [contexts, domains, devices, frames] = [40, 44, 48, 52].map((at) =>
    memory.readU32(blob.phys + at),
  ) as [number, number, number, number];
  const contextsAt = blob.phys + IOMMU_LU_HEADER_SIZE;
  const domainsAt = contextsAt + contexts * IOMMU_LU_CONTEXT_SIZE;
  const devicesAt = domainsAt + domains * IOMMU_LU_DOMAIN_SIZE;
  const framesAt = devicesAt + devices * IOMMU_LU_DEVICE_SIZE;
  addresses.push({ what: 'iommu blob root_table_phys', phys: blob.phys + 32, size: 8 });
  for (let i = 0; i < contexts; i++)
    addresses.push({
      what: `iommu blob context[${i}].phys`,
      phys: contextsAt + i * IOMMU_LU_CONTEXT_SIZE,
      size: 8,
    });
  for (let i = 0; i < domains; i++)
    addresses.push({
      what: `iommu blob domain[${i}].page_table_root`,
      phys: domainsAt + i * IOMMU_LU_DOMAIN_SIZE,
      size: 8,
    });
  for (let i = 0; i < frames; i++)
    addresses.push({ what: `iommu blob table_frames[${i}]`, phys: framesAt + i * 8, size: 8 });
  return {
    ...blob,
    what: 'iommu blob',
    contexts,
    domains,
    devices,
    frames,
    contextsAt,
    domainsAt,
    devicesAt,
    framesAt,
  };
}
