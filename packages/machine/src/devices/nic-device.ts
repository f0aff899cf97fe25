import type { DmaEngine } from './dma-engine.js';

/**
 * The NIC model: a packet source at a fixed rate delivering into a receive descriptor ring in
 * guest memory (addressed by IOVA).
 *
 * BAR0 registers (u32, byte offsets):
 *
 * | offset | register | who writes |
 * |---|---|---|
 * | 0x00 | CTRL: bit 0 receive enable, bit 1 interrupt on receive | driver |
 * | 0x04 / 0x08 | RX ring base IOVA, low / high | driver |
 * | 0x0c | RX ring size (descriptors) | driver |
 * | 0x10 | RX head: next descriptor the NIC fills | NIC |
 * | 0x14 | RX tail: next descriptor the driver consumes; the ring is full when head + 1 = tail | driver |
 * | 0x18 | packets delivered | NIC |
 * | 0x1c | packets dropped | NIC |
 * | 0x20 | interrupt status: bit 0 receive (write 1 to clear) | both |
 * | 0x24 | STATUS: bit 0 receive engine active ({@link NIC_STATUS_RX_ACTIVE}) | NIC |
 *
 * Clearing CTRL bit 0 does not stop a packet the NIC is already delivering. As with a real NIC's
 * queue-enable bit (ixgbe's `RXDCTL.ENABLE`), a driver that stops the NIC waits for
 * {@link NIC_STATUS_RX_ACTIVE} to clear: from then on no packet, descriptor write or interrupt
 * comes, and every counter is final. The NIC sets the bit before it reads CTRL and clears it once
 * it has read CTRL bit 0 clear, both sequentially consistent, so a driver that cleared CTRL and
 * then reads the bit clear knows the NIC saw the stop.
 * With CTRL bit 1 set, each packet delivered into the ring sets interrupt status bit 0 and raises
 * one interrupt, delivered as an MSI-X message while MSI-X is enabled in config space and lost
 * while it is disabled or masked (`PciFunction.raiseInterrupt`).
 *
 * A receive descriptor is 16 bytes: u64 buffer IOVA and u16 buffer length (driver), u16 packet
 * length and u32 status (NIC; bit 0 descriptor done). A packet is {@link NIC_PACKET_SIZE} bytes:
 * u64 sequence number, u32 length, u32 checksum ({@link nicPacketChecksum}), then payload.
 */
export const NIC_REG_CTRL = 0x00;
export const NIC_REG_RX_BASE_LO = 0x04;
export const NIC_REG_RX_BASE_HI = 0x08;
export const NIC_REG_RX_SIZE = 0x0c;
export const NIC_REG_RX_HEAD = 0x10;
export const NIC_REG_RX_TAIL = 0x14;
export const NIC_REG_RX_PACKETS = 0x18;
export const NIC_REG_RX_DROPS = 0x1c;
export const NIC_REG_INT_STATUS = 0x20;
export const NIC_REG_STATUS = 0x24;
/** {@link NIC_REG_STATUS}: set while the receive engine runs; clear once it has seen the stop. */
export const NIC_STATUS_RX_ACTIVE = 1 << 0;
export const NIC_CTRL_RX_ENABLE = 1 << 0;
export const NIC_CTRL_RX_IRQ = 1 << 1;
export const NIC_DESC_SIZE = 16;
export const NIC_DESC_DONE = 1 << 0;
export const NIC_PACKET_SIZE = 64;
export const NIC_VENDOR_ID = 0x8086;
export const NIC_DEVICE_ID = 0x100e;

/** Checksum of a packet: a 32-bit Fletcher sum over every byte but the checksum field. */
export function nicPacketChecksum(packet: Uint8Array): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < packet.length; i++) {
    if (i >= 12 && i < 16) continue;
    a = (a + packet[i]!) % 65521;
    b = (b + a) % 65521;
  }
  return ((b << 16) | a) >>> 0;
}

/** The packet with sequence number `sequence`. */
export function nicPacket(sequence: number): Uint8Array {
  const packet = new Uint8Array(NIC_PACKET_SIZE);
  const view = new DataView(packet.buffer);
  view.setBigUint64(0, BigInt(sequence), true);
  view.setUint32(8, NIC_PACKET_SIZE, true);
  for (let i = 16; i < NIC_PACKET_SIZE; i++) packet[i] = (sequence * 31 + i) & 0xff;
  view.setUint32(12, nicPacketChecksum(packet), true);
  return packet;
}

const MAX_PACKETS_PER_STEP = 256;

export class NicDevice {
  readonly #dma: DmaEngine;
  readonly #packetsPerSecond: number;
  #resetGeneration: number;
  #sequence = 0;
  #emitted = 0;
  #since: number | undefined;

  constructor(dma: DmaEngine, packetsPerSecond: number) {
    this.#dma = dma;
    this.#packetsPerSecond = packetsPerSecond;
    this.#resetGeneration = dma.fn.resetGeneration;
  }

  /** Emit the packets due since the last step. */
  step(now: number): void {
    const fn = this.#dma.fn;
    if (fn.resetGeneration !== this.#resetGeneration) {
      this.#resetGeneration = fn.resetGeneration;
      this.#sequence = 0;
      this.#since = undefined;
    }
    // Active before CTRL is read: a driver that cleared CTRL and reads the bit clear knows this
    // step saw the stop (a store, then a load of the other's, on each side).
    fn.writeRegister(NIC_REG_STATUS, NIC_STATUS_RX_ACTIVE);
    if (!fn.memoryDecode || (fn.readRegister(NIC_REG_CTRL) & NIC_CTRL_RX_ENABLE) === 0) {
      fn.writeRegister(NIC_REG_STATUS, 0);
      this.#since = undefined;
      return;
    }
    if (this.#since === undefined) {
      this.#since = now;
      this.#emitted = 0;
    }
    const due = Math.floor(((now - this.#since) * this.#packetsPerSecond) / 1000) - this.#emitted;
    for (let i = 0; i < Math.min(due, MAX_PACKETS_PER_STEP); i++) this.#receive();
    this.#emitted += due;
  }

  #receive(): void {
    const fn = this.#dma.fn;
    const packet = nicPacket(this.#sequence++);
    let delivered = false;
    this.#dma.transaction(() => {
      const size = fn.readRegister(NIC_REG_RX_SIZE);
      const head = fn.readRegister(NIC_REG_RX_HEAD);
      if (size === 0 || head >= size || (head + 1) % size === fn.readRegister(NIC_REG_RX_TAIL)) {
        return;
      }
      const base =
        fn.readRegister(NIC_REG_RX_BASE_LO) + fn.readRegister(NIC_REG_RX_BASE_HI) * 2 ** 32;
      const slot = base + head * NIC_DESC_SIZE;
      const descriptor = this.#dma.read(slot, NIC_DESC_SIZE);
      if (!descriptor) return;
      const view = new DataView(descriptor.buffer);
      const buffer = Number(view.getBigUint64(0, true));
      if (view.getUint16(8, true) < NIC_PACKET_SIZE) return;
      if (!this.#dma.write(buffer, packet)) return;
      view.setUint16(10, NIC_PACKET_SIZE, true);
      view.setUint32(12, NIC_DESC_DONE, true);
      // Counted before the descriptor and the head register publish the packet.
      const published = this.#dma.write(slot + 8, descriptor.subarray(8), () =>
        this.#dma.count('packets'),
      );
      if (!published) return;
      fn.writeRegister(NIC_REG_RX_HEAD, (head + 1) % size);
      fn.addRegister(NIC_REG_RX_PACKETS, 1);
      delivered = true;
      if ((fn.readRegister(NIC_REG_CTRL) & NIC_CTRL_RX_IRQ) !== 0) {
        // The cause is latched before the message, so a handler woken by it sees the cause.
        fn.writeRegister(NIC_REG_INT_STATUS, fn.readRegister(NIC_REG_INT_STATUS) | 1);
        this.#dma.raiseInterrupt();
      }
    });
    if (!delivered) {
      fn.addRegister(NIC_REG_RX_DROPS, 1);
      this.#dma.count('drops');
    }
  }
}
