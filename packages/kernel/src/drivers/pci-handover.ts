import { formatBdf } from '@liveupdate/machine';

/** Name of the PCI bus's subtree in the KHO root FDT; the name versions the `pci_ser` layout. */
export const PCI_LU_SUBTREE = 'pci';
/**
 * The format of the `pci` subtree's `pci_ser`, as the kernel's image note names it (the subtree
 * name itself carries no version).
 */
export const PCI_LU_COMPATIBLE = 'pci-ser-v1';

/** `struct pci_ser` header: `u64 max_nr_devices; u64 nr_devices`. */
export const PCI_SER_HEADER_SIZE = 16;
/** `struct pci_dev_ser`: `u32 domain; u16 bdf; u16 refcount`. */
export const PCI_DEV_SER_SIZE = 8;

/** One preserved device (`struct pci_dev_ser`). */
export interface PciDevSer {
  /** PCI segment; this machine has only segment 0. */
  readonly domain: number;
  readonly bdf: number;
  /** How many times it was preserved; never 0 for a listed device. */
  readonly refcount: number;
}

/** The incoming `pci_ser` is malformed; the kernel panics with this message. */
export class PciHandoverError extends Error {
  override readonly name = 'PciHandoverError';
}

/**
 * Encode `struct pci_ser` (little-endian, packed): `u64 max_nr_devices` (the devices on the bus
 * at the time), `u64 nr_devices`, then `nr_devices` × `pci_dev_ser { u32 domain; u16 bdf;
 * u16 refcount }`.
 */
export function encodePciSer(maxDevices: number, devices: readonly PciDevSer[]): Uint8Array {
  const bytes = new Uint8Array(PCI_SER_HEADER_SIZE + devices.length * PCI_DEV_SER_SIZE);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(maxDevices), true);
  view.setBigUint64(8, BigInt(devices.length), true);
  devices.forEach((dev, i) => {
    const at = PCI_SER_HEADER_SIZE + i * PCI_DEV_SER_SIZE;
    view.setUint32(at, dev.domain, true);
    view.setUint16(at + 4, dev.bdf, true);
    view.setUint16(at + 6, dev.refcount, true);
  });
  return bytes;
}

/**
 * Decode and check `struct pci_ser` against what {@link encodePciSer} writes on this machine:
 * `max_nr_devices` is the number of functions on the bus (`busSize`: the hardware outlives the
 * kernel), `nr_devices ≤ max_nr_devices` and matches the blob's size, every `domain` is segment
 * 0, every `bdf` is a function of the bus (`onBus`), none is listed twice and none has a zero
 * refcount. Throws {@link PciHandoverError} naming the field and its value.
 */
export function decodePciSer(
  bytes: Uint8Array,
  busSize: number,
  onBus: (bdf: number) => boolean,
): PciDevSer[] {
  const fail = (reason: string): never => {
    throw new PciHandoverError(`pci_ser: ${reason}`);
  };
  if (bytes.length < PCI_SER_HEADER_SIZE) fail(`${bytes.length} bytes is too short for a header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const max = view.getBigUint64(0, true);
  const count = view.getBigUint64(8, true);
  if (max !== BigInt(busSize)) {
    fail(`max_nr_devices ${max} is not the ${busSize} functions on the bus`);
  }
  if (
    count > max ||
    BigInt(PCI_SER_HEADER_SIZE) + count * BigInt(PCI_DEV_SER_SIZE) !== BigInt(bytes.length)
  ) {
    fail(`nr_devices ${count} (max ${max}) does not match its ${bytes.length} bytes`);
  }
  const devices: PciDevSer[] = [];
  for (let i = 0; i < Number(count); i++) {
    const at = PCI_SER_HEADER_SIZE + i * PCI_DEV_SER_SIZE;
    const dev = {
      domain: view.getUint32(at, true),
      bdf: view.getUint16(at + 4, true),
      refcount: view.getUint16(at + 6, true),
    };
    const where = `pci_dev_ser[${i}]`;
    if (dev.domain !== 0) fail(`${where}.domain ${dev.domain}: this machine has only segment 0`);
    if (!onBus(dev.bdf)) fail(`${where}.bdf ${formatBdf(dev.bdf)} is not a function on the bus`);
    if (dev.refcount === 0) fail(`${where}.refcount is 0`);
    if (devices.some((d) => d.bdf === dev.bdf)) {
      fail(`${where}.bdf ${formatBdf(dev.bdf)} is listed twice`);
    }
    devices.push(dev);
  }
  return devices;
}
