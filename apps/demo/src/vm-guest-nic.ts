import {
  NIC_CTRL_RX_ENABLE,
  NIC_DESC_DONE,
  NIC_DESC_SIZE,
  NIC_PACKET_SIZE,
  NIC_REG_CTRL,
  NIC_REG_RX_BASE_HI,
  NIC_REG_RX_BASE_LO,
  NIC_REG_RX_HEAD,
  NIC_REG_RX_SIZE,
  NIC_REG_RX_TAIL,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  nicPacketChecksum,
} from '@liveupdate/machine';
import type { VfioDevice } from '@liveupdate/plugin-vfio';
import type { GuestRam } from './vm-guest-ram.js';

/** Guest-physical address of the guest driver's state page. */
export const GUEST_STATE_GPA = 0;
/** Guest-physical address of the receive descriptor ring. */
export const GUEST_RING_GPA = 0x1000;
const STATE_BYTES = 64;
const STATE_MAGIC = 0x43494e47; // "GNIC"

/**
 * What the guest's NIC driver knows, kept in guest RAM (the state page at {@link GUEST_STATE_GPA})
 * so that it crosses a live update the way a real guest's memory does: the VMM process of the
 * next kernel reads it back from the same frames.
 */
export interface GuestNicState {
  readonly ringSize: number;
  /** Next descriptor the guest consumes (what it last wrote to `RX_TAIL`). */
  readonly tail: number;
  /** Sequence number the guest expects next. */
  readonly nextSequence: number;
  /** Packets taken from the ring. */
  readonly consumed: number;
  /** Sequence numbers skipped: the sum of every gap between consecutive packets. */
  readonly missing: number;
  /** Packets whose sequence number was below the expected one (a replay or a reordering). */
  readonly outOfOrder: number;
  /** Packets whose checksum did not match their bytes. */
  readonly badChecksum: number;
  /** Most descriptors found done and not yet consumed in one poll, since the VMM last cleared it. */
  readonly maxOccupancy: number;
  /** Device resets the guest recovered from (the NIC restarts its sequence numbers at 0). */
  readonly resets: number;
}

// u32 magic @0, ringSize @4, tail @8, maxOccupancy @12, resets @16; u64 nextSequence @24,
// consumed @32, missing @40, outOfOrder @48, badChecksum @56.
const U32 = { magic: 0, ringSize: 4, tail: 8, maxOccupancy: 12, resets: 16 } as const;
const U64 = {
  nextSequence: 24,
  consumed: 32,
  missing: 40,
  outOfOrder: 48,
  badChecksum: 56,
} as const;

/**
 * The guest's NIC driver, run by the VMM's "guest" loop: a receive ring of `ringSize` descriptors
 * at {@link GUEST_RING_GPA}, packet buffers after it, polled (no interrupts: the live update wants
 * them off anyway). Every packet taken from the ring is checked — sequence number in order,
 * checksum right — and counted in the state page.
 */
export class GuestNic {
  readonly device: VfioDevice;
  readonly ram: GuestRam;
  readonly ringSize: number;
  readonly buffersGpa: number;
  readonly #state: DataView;
  #loop: Promise<void> | undefined;
  #running = false;
  #failure: unknown;

  private constructor(device: VfioDevice, ram: GuestRam, ringSize: number) {
    this.device = device;
    this.ram = ram;
    this.ringSize = ringSize;
    this.buffersGpa = alignUp(GUEST_RING_GPA + ringSize * NIC_DESC_SIZE, 4096);
    this.#state = ram.view(GUEST_STATE_GPA, STATE_BYTES);
  }

  /** Guest RAM needed for a ring of `ringSize` descriptors and its buffers. */
  static bytesNeeded(ringSize: number): number {
    return alignUp(GUEST_RING_GPA + ringSize * NIC_DESC_SIZE, 4096) + ringSize * NIC_PACKET_SIZE;
  }

  /** A guest booting: fresh state page, descriptors written, the NIC programmed and receiving. */
  static async boot(device: VfioDevice, ram: GuestRam, ringSize: number): Promise<GuestNic> {
    if (GuestNic.bytesNeeded(ringSize) > ram.size) {
      throw new RangeError(`a ring of ${ringSize} descriptors does not fit in guest RAM`);
    }
    const nic = new GuestNic(device, ram, ringSize);
    new Uint8Array(nic.#state.buffer, nic.#state.byteOffset, STATE_BYTES).fill(0);
    nic.#state.setUint32(U32.magic, STATE_MAGIC, true);
    nic.#state.setUint32(U32.ringSize, ringSize, true);
    await nic.#program();
    return nic;
  }

  /**
   * The same guest after a live update, seen by the next kernel's VMM: its state page and ring
   * are read back from guest RAM. If the device was reset meanwhile (its receive is off), the
   * driver recovers as a guest would: it takes what the ring still holds, then programs the NIC
   * afresh.
   */
  static async resume(device: VfioDevice, ram: GuestRam): Promise<GuestNic> {
    const state = ram.view(GUEST_STATE_GPA, STATE_BYTES);
    if (state.getUint32(U32.magic, true) !== STATE_MAGIC) {
      throw new Error('guest RAM holds no NIC driver state: it did not survive the update');
    }
    const nic = new GuestNic(device, ram, state.getUint32(U32.ringSize, true));
    // A reset function has memory decode off (its BAR cannot even be read) and receive off.
    const decoding = ((await device.readConfig16(PCI_COMMAND)) & PCI_COMMAND_MEMORY) !== 0;
    if (!decoding || ((await device.readRegister(NIC_REG_CTRL)) & NIC_CTRL_RX_ENABLE) === 0) {
      nic.poll();
      nic.#set32('resets', nic.state.resets + 1);
      nic.#set64('nextSequence', 0);
      await nic.#program();
    }
    return nic;
  }

  get state(): GuestNicState {
    const u32 = (at: number): number => this.#state.getUint32(at, true);
    const u64 = (at: number): number => Number(this.#state.getBigUint64(at, true));
    return {
      ringSize: u32(U32.ringSize),
      tail: u32(U32.tail),
      maxOccupancy: u32(U32.maxOccupancy),
      resets: u32(U32.resets),
      nextSequence: u64(U64.nextSequence),
      consumed: u64(U64.consumed),
      missing: u64(U64.missing),
      outOfOrder: u64(U64.outOfOrder),
      badChecksum: u64(U64.badChecksum),
    };
  }

  /** Start counting {@link GuestNicState.maxOccupancy} afresh. */
  clearMaxOccupancy(): void {
    this.#set32('maxOccupancy', 0);
  }

  /**
   * Take every done descriptor from the tail on, check its packet, hand the descriptor back.
   * Returns how many were taken; the new tail still has to reach the NIC ({@link service}).
   */
  poll(): number {
    let { tail, nextSequence, consumed, missing, outOfOrder, badChecksum } = this.state;
    let taken = 0;
    for (;;) {
      const descriptor = this.ram.view(GUEST_RING_GPA + tail * NIC_DESC_SIZE, NIC_DESC_SIZE);
      if ((descriptor.getUint32(12, true) & NIC_DESC_DONE) === 0) break;
      const packet = this.ram.read(this.#bufferGpa(tail), NIC_PACKET_SIZE);
      const view = new DataView(packet.buffer);
      const sequence = Number(view.getBigUint64(0, true));
      if (view.getUint32(12, true) !== nicPacketChecksum(packet)) badChecksum++;
      if (sequence < nextSequence) outOfOrder++;
      else missing += sequence - nextSequence;
      nextSequence = Math.max(nextSequence, sequence + 1);
      descriptor.setUint32(12, 0, true);
      consumed++;
      taken++;
      tail = (tail + 1) % this.ringSize;
      if (taken === this.ringSize) break;
    }
    if (taken > 0) {
      this.#set32('tail', tail);
      this.#set64('nextSequence', nextSequence);
      this.#set64('consumed', consumed);
      this.#set64('missing', missing);
      this.#set64('outOfOrder', outOfOrder);
      this.#set64('badChecksum', badChecksum);
      if (taken > this.state.maxOccupancy) this.#set32('maxOccupancy', taken);
    }
    return taken;
  }

  /** {@link poll}, then hand the descriptors back to the NIC (`RX_TAIL`) if it took any. */
  async service(): Promise<number> {
    const taken = this.poll();
    if (taken > 0) await this.device.writeRegister(NIC_REG_RX_TAIL, this.state.tail);
    return taken;
  }

  /** The guest loop: {@link service} the ring every `intervalMs` until {@link pause}. */
  run(intervalMs = 1): void {
    if (this.#loop) return;
    this.#running = true;
    this.#failure = undefined;
    this.#loop = (async () => {
      while (this.#running) {
        await this.service();
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    })().catch((error: unknown) => {
      this.#running = false;
      this.#failure = error;
    });
  }

  /**
   * Pause the guest loop (the VM's vCPUs stop); resolves once its last poll is done, and rejects
   * with what stopped the loop if it failed on its own.
   */
  async pause(): Promise<void> {
    this.#running = false;
    await this.#loop;
    this.#loop = undefined;
    if (this.#failure !== undefined) throw this.#failure;
  }

  /** Descriptors, ring registers, memory decode and bus mastering, receive on. */
  async #program(): Promise<void> {
    const descriptor = new Uint8Array(NIC_DESC_SIZE);
    const view = new DataView(descriptor.buffer);
    for (let i = 0; i < this.ringSize; i++) {
      view.setBigUint64(0, BigInt(this.#bufferGpa(i)), true);
      view.setUint16(8, NIC_PACKET_SIZE, true);
      this.ram.write(GUEST_RING_GPA + i * NIC_DESC_SIZE, descriptor);
    }
    this.#set32('tail', 0);
    const { device } = this;
    await device.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    await device.writeRegister(NIC_REG_RX_BASE_LO, GUEST_RING_GPA);
    await device.writeRegister(NIC_REG_RX_BASE_HI, 0);
    await device.writeRegister(NIC_REG_RX_SIZE, this.ringSize);
    await device.writeRegister(NIC_REG_RX_HEAD, 0);
    await device.writeRegister(NIC_REG_RX_TAIL, 0);
    await device.writeRegister(NIC_REG_CTRL, NIC_CTRL_RX_ENABLE);
  }

  #bufferGpa(index: number): number {
    return this.buffersGpa + index * NIC_PACKET_SIZE;
  }

  #set32(name: keyof typeof U32, value: number): void {
    this.#state.setUint32(U32[name], value, true);
  }

  #set64(name: keyof typeof U64, value: number): void {
    this.#state.setBigUint64(U64[name], BigInt(value), true);
  }
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
