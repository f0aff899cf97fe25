import { FDT_HEADER_SIZE, decodeFdt, readFdtHeader, readU64, type FdtNode } from '@liveupdate/fdt';
import {
  LUO_FDT_KHO_ENTRY_NAME,
  decodeLuoFdt,
  luoFileSer,
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
  for (const child of root.children) {
    const at = nodeNameOffset(rootBlob, child.name);
    subtreeNames.push({
      what: `KHO subtree name "${child.name}"`,
      phys: khoFdtPhys + at,
      size: child.name.length,
    });
    const data = readU64(child, 'preserved-data', { littleEndian: true });
    const size = readU64(child, 'blob-size', { littleEndian: true });
    subtreeBlobs.push({
      what: `KHO subtree ${child.name}'s blob`,
      phys: Number(data),
      size: Number(size),
    });
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
  return {
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
