import { PAGE_SIZE, formatBdf, hex } from '@liveupdate/machine';

/** Name of the IOMMU's subtree in the KHO root FDT. */
export const IOMMU_LU_SUBTREE = 'iommu';
/**
 * The ABI version of the IOMMU handover blob (upstream's `IOMMU_LUO_FLB_COMPATIBLE` plus its
 * version). A kernel that finds another string panics, as upstream treats a version mismatch.
 */
export const IOMMU_LU_COMPATIBLE = 'iommu-liveupdate-v1';

/** `iommu_flb_ser`-like header: `char compatible[32]`, then counts. */
export const IOMMU_LU_HEADER_SIZE = 56;
const COMPATIBLE_SIZE = 32;
/** `{ u64 phys; u16 bus; u16 reserved; u32 reserved }` */
export const IOMMU_LU_CONTEXT_SIZE = 16;
/** `{ u64 page_table_root; u32 id; u32 nr_tables }` */
export const IOMMU_LU_DOMAIN_SIZE = 16;
/** `{ u16 bdf; u16 reserved; u32 domain_id }` */
export const IOMMU_LU_DEVICE_SIZE = 8;

/** A preserved domain as it crosses: id, top table, and every page-table frame (root first). */
export interface IommuHandoverDomain {
  readonly id: number;
  readonly pageTableRoot: number;
  readonly tables: readonly number[];
}

/** The IOMMU state one kernel hands to the next (documented in `docs/device-live-update.md`). */
export interface IommuHandoverState {
  /** 0, with no context tables, when no device is preserved (domains alone cross). */
  readonly rootTable: number;
  readonly contextTables: readonly { readonly bus: number; readonly phys: number }[];
  readonly domains: readonly IommuHandoverDomain[];
  readonly devices: readonly { readonly bdf: number; readonly domainId: number }[];
}

/** The incoming IOMMU state is malformed; the kernel panics with this message. */
export class IommuHandoverError extends Error {
  override readonly name = 'IommuHandoverError';
}

/** Bytes of the blob for `state`. */
export function iommuHandoverSize(state: IommuHandoverState): number {
  const frames = state.domains.reduce((sum, d) => sum + d.tables.length, 0);
  return (
    IOMMU_LU_HEADER_SIZE +
    state.contextTables.length * IOMMU_LU_CONTEXT_SIZE +
    state.domains.length * IOMMU_LU_DOMAIN_SIZE +
    state.devices.length * IOMMU_LU_DEVICE_SIZE +
    frames * 8
  );
}

/**
 * Encode the blob (little-endian, packed):
 *
 * | offset | field |
 * |---|---|
 * | 0 | `char compatible[32]`, NUL-padded |
 * | 32 | `u64 root_table_phys` |
 * | 40 | `u32 nr_context_tables` |
 * | 44 | `u32 nr_domains` |
 * | 48 | `u32 nr_devices` |
 * | 52 | `u32 nr_table_frames` |
 * | 56 | context tables, then domains, then devices, then `u64 table_frames[]` |
 *
 * `table_frames` holds each domain's frames in domain order, `nr_tables` of them per domain, the
 * domain's `page_table_root` first.
 */
export function encodeIommuHandover(state: IommuHandoverState): Uint8Array {
  const bytes = new Uint8Array(iommuHandoverSize(state));
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode(IOMMU_LU_COMPATIBLE));
  const frames = state.domains.flatMap((d) => d.tables);
  view.setBigUint64(32, BigInt(state.rootTable), true);
  view.setUint32(40, state.contextTables.length, true);
  view.setUint32(44, state.domains.length, true);
  view.setUint32(48, state.devices.length, true);
  view.setUint32(52, frames.length, true);
  let at = IOMMU_LU_HEADER_SIZE;
  for (const table of state.contextTables) {
    view.setBigUint64(at, BigInt(table.phys), true);
    view.setUint16(at + 8, table.bus, true);
    at += IOMMU_LU_CONTEXT_SIZE;
  }
  for (const domain of state.domains) {
    view.setBigUint64(at, BigInt(domain.pageTableRoot), true);
    view.setUint32(at + 8, domain.id, true);
    view.setUint32(at + 12, domain.tables.length, true);
    at += IOMMU_LU_DOMAIN_SIZE;
  }
  for (const device of state.devices) {
    view.setUint16(at, device.bdf, true);
    view.setUint32(at + 4, device.domainId, true);
    at += IOMMU_LU_DEVICE_SIZE;
  }
  for (const frame of frames) {
    view.setBigUint64(at, BigInt(frame), true);
    at += 8;
  }
  return bytes;
}

/**
 * Decode and check a blob against what {@link encodeIommuHandover} can write: the compatible,
 * counts that fill the blob exactly, non-zero page addresses, zero reserved fields, unique buses,
 * domain ids, bdfs and frames, every device on a listed domain and a listed bus, each domain's
 * frames summing to `nr_table_frames` with its root first. Throws {@link IommuHandoverError}
 * naming the structure, the field and the value. Whether the frames were really preserved and
 * the tables in RAM agree is the driver's check.
 */
export function decodeIommuHandover(bytes: Uint8Array): IommuHandoverState {
  const fail = (reason: string): never => {
    throw new IommuHandoverError(reason);
  };
  if (bytes.length < IOMMU_LU_HEADER_SIZE) fail(`blob of ${bytes.length} bytes is too short`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const raw = bytes.subarray(0, COMPATIBLE_SIZE);
  const nul = raw.indexOf(0);
  const compatible = new TextDecoder().decode(raw.subarray(0, nul < 0 ? COMPATIBLE_SIZE : nul));
  if (compatible !== IOMMU_LU_COMPATIBLE || raw.subarray(nul).some((b) => b !== 0)) {
    fail(`compatible ${JSON.stringify(compatible)} is not "${IOMMU_LU_COMPATIBLE}"`);
  }
  /** A page address; 0 only where `zeroAllowed` (the writer never lists frame 0). */
  const address = (at: number, what: string, zeroAllowed = false): number => {
    const value = view.getBigUint64(at, true);
    if (value % BigInt(PAGE_SIZE) !== 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
      fail(`${what} ${hex(value)} is not a page address`);
    }
    if (value === 0n && !zeroAllowed) fail(`${what} is 0`);
    return Number(value);
  };
  const reserved = (at: number, size: 2 | 4, what: string): void => {
    const value = size === 2 ? view.getUint16(at, true) : view.getUint32(at, true);
    if (value !== 0) fail(`${what} is ${hex(value)}, not 0`);
  };
  const rootTable = address(32, 'root table', true);
  const nrContext = view.getUint32(40, true);
  const nrDomains = view.getUint32(44, true);
  const nrDevices = view.getUint32(48, true);
  const nrFrames = view.getUint32(52, true);
  const expected =
    IOMMU_LU_HEADER_SIZE +
    nrContext * IOMMU_LU_CONTEXT_SIZE +
    nrDomains * IOMMU_LU_DOMAIN_SIZE +
    nrDevices * IOMMU_LU_DEVICE_SIZE +
    nrFrames * 8;
  if (expected !== bytes.length) {
    fail(
      `counts (${nrContext} context tables, ${nrDomains} domains, ${nrDevices} devices, ${nrFrames} table frames) need ${expected} bytes, the blob has ${bytes.length}`,
    );
  }
  if (nrDomains === 0)
    fail('nr_domains is 0: the blob is written only while a domain is preserved');
  if ((rootTable === 0) !== (nrDevices === 0) || (nrDevices === 0) !== (nrContext === 0)) {
    fail(
      `root table ${hex(rootTable)} with ${nrContext} context tables and ${nrDevices} devices: the hardware unit crosses with the devices, or not at all`,
    );
  }
  const seenFrames = new Set<number>(rootTable === 0 ? [] : [rootTable]);
  const frame = (phys: number, what: string): number => {
    if (seenFrames.has(phys)) fail(`${what} ${hex(phys)} is listed twice`);
    seenFrames.add(phys);
    return phys;
  };
  let at = IOMMU_LU_HEADER_SIZE;
  const contextTables: { bus: number; phys: number }[] = [];
  for (let i = 0; i < nrContext; i++, at += IOMMU_LU_CONTEXT_SIZE) {
    const where = `context table ${i}`;
    const bus = view.getUint16(at + 8, true);
    if (bus > 0xff || contextTables.some((t) => t.bus === bus)) {
      fail(`${where}: bus ${bus} is out of range or listed twice`);
    }
    reserved(at + 10, 2, `${where}: reserved u16`);
    reserved(at + 12, 4, `${where}: reserved u32`);
    contextTables.push({ bus, phys: frame(address(at, where), 'context table') });
  }
  const domainHeaders: { id: number; pageTableRoot: number; count: number }[] = [];
  for (let i = 0; i < nrDomains; i++, at += IOMMU_LU_DOMAIN_SIZE) {
    const pageTableRoot = address(at, `domain ${i} page-table root`);
    const id = view.getUint32(at + 8, true);
    const count = view.getUint32(at + 12, true);
    // Domain ids are the context entry's 16-bit DID; 0 is reserved.
    if (id < 1 || id > 0xffff || domainHeaders.some((d) => d.id === id)) {
      fail(`domain ${i}: id ${id} is out of range or listed twice`);
    }
    if (count < 1) fail(`domain ${id}: nr_tables is 0, but a domain has at least its root`);
    domainHeaders.push({ id, pageTableRoot, count });
  }
  const devices: { bdf: number; domainId: number }[] = [];
  for (let i = 0; i < nrDevices; i++, at += IOMMU_LU_DEVICE_SIZE) {
    const bdf = view.getUint16(at, true);
    const domainId = view.getUint32(at + 4, true);
    reserved(at + 2, 2, `device ${i} (${formatBdf(bdf)}): reserved u16`);
    if (devices.some((d) => d.bdf === bdf)) fail(`device ${formatBdf(bdf)} is listed twice`);
    if (!domainHeaders.some((d) => d.id === domainId)) {
      fail(`device ${formatBdf(bdf)} points at domain ${domainId}, which is not in the handover`);
    }
    if (!contextTables.some((t) => t.bus === bdf >> 8)) {
      fail(
        `device ${formatBdf(bdf)} is on bus ${bdf >> 8}, which has no context table in the handover`,
      );
    }
    devices.push({ bdf, domainId });
  }
  const total = domainHeaders.reduce((sum, d) => sum + d.count, 0);
  if (total !== nrFrames) {
    fail(`domains list ${total} page-table frames, the header says ${nrFrames}`);
  }
  const domains: IommuHandoverDomain[] = domainHeaders.map((d) => {
    const tables: number[] = [];
    for (let i = 0; i < d.count; i++, at += 8) {
      tables.push(frame(address(at, `domain ${d.id} table`), `domain ${d.id} table`));
    }
    if (tables[0] !== d.pageTableRoot) {
      fail(
        `domain ${d.id}: first table ${hex(tables[0]!)} is not its root ${hex(d.pageTableRoot)}`,
      );
    }
    return { id: d.id, pageTableRoot: d.pageTableRoot, tables };
  });
  return { rootTable, contextTables, domains, devices };
}
