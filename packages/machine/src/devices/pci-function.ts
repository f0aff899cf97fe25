/**
 * A PCI function: its config space and its register window (BAR0), each a `SharedArrayBuffer`
 * shared by the device's worker and the kernel's driver, plus a few words of the function's
 * internal state that a reset and the IOMMU's invalidation have to synchronize with.
 *
 * Config space layout (little-endian, type 0 header, offsets in bytes):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0x00 | u16 | vendor id (read-only) |
 * | 0x02 | u16 | device id (read-only) |
 * | 0x04 | u16 | command: bit 1 memory decode, bit 2 bus master enable, bit 10 INTx disable |
 * | 0x08 | u32 | revision (bits 0-7), class code (bits 8-31) (read-only) |
 * | 0x10 | u32 | BAR0: 32-bit memory BAR, placed by firmware (read-only here) |
 * | 0x34 | u8 | capabilities pointer (0x40) |
 * | 0x40 | u32 | MSI-X-like capability: id 0x11, next 0x50; message control bits 15 enable, 14 mask |
 * | 0x50 | u32 | PCI Express capability: id 0x10 |
 * | 0x58 | u16 | device control: bit 15 initiate function-level reset (self-clearing) |
 *
 * Interrupts are message-signalled: the function's MSI-X message is a 32-bit word after the config
 * space (not software-visible config), which the device increments with `Atomics.add` and wakes
 * waiters on with `Atomics.notify`, as a real MSI is a posted write of a message to an address the
 * interrupt controller watches. The word only ever grows (modulo 2^32): a function-level reset
 * disables MSI-X but leaves the word alone, so a kernel that remembers the last value it saw counts
 * exactly the interrupts raised since, and a reset can never make it see old ones as new.
 *
 * @packageDocumentation
 */

export const PCI_CONFIG_SPACE_SIZE = 256;
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_CLASS_REVISION = 0x08;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_MSIX_CAP = 0x40;
/** Message control of the MSI-X-like capability (u16). */
export const PCI_MSIX_FLAGS = 0x42;
export const PCI_EXP_CAP = 0x50;
/** Device control of the PCI Express capability (u16). */
export const PCI_EXP_DEVCTL = 0x58;

export const PCI_COMMAND_MEMORY = 1 << 1;
export const PCI_COMMAND_MASTER = 1 << 2;
export const PCI_COMMAND_INTX_DISABLE = 1 << 10;
export const PCI_MSIX_FLAGS_ENABLE = 1 << 15;
export const PCI_MSIX_FLAGS_MASKALL = 1 << 14;
export const PCI_EXP_DEVCTL_BCR_FLR = 1 << 15;

const COMMAND_WRITABLE = PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE;
const MSIX_WRITABLE = PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL;

// Internal words after the config space (indices into the Int32Array), not visible to software.
/** 1 while the device has a DMA transaction in flight. */
const INFLIGHT = PCI_CONFIG_SPACE_SIZE / 4;
/** Incremented by every function-level reset; the device drops its internal state when it moves. */
const RESET_GENERATION = INFLIGHT + 1;
/** The IOMMU invalidation generation this function's translations were last flushed at. */
const IOTLB_ACK = INFLIGHT + 2;
/** The MSI-X message word: interrupts delivered so far, modulo 2^32 (see the file header). */
const MSI_MESSAGE = INFLIGHT + 3;
const FUNCTION_WORDS = INFLIGHT + 4;

/** Size of a BAR0 register window in bytes. */
export const PCI_BAR_SIZE = 4096;

/** Bus/device/function packed as in `pci_dev_id()`: `bus << 8 | device << 3 | function`. */
export type Bdf = number;

/** Parse `"00:03.0"` (or `"0000:00:03.0"`) into a {@link Bdf}. */
export function parseBdf(text: string): Bdf {
  const match = /^(?:0000:)?([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/i.exec(text);
  if (!match) throw new RangeError(`invalid PCI address ${JSON.stringify(text)}, want "bb:dd.f"`);
  const device = Number.parseInt(match[2]!, 16);
  if (device > 31) throw new RangeError(`invalid PCI device number in ${JSON.stringify(text)}`);
  return (Number.parseInt(match[1]!, 16) << 8) | (device << 3) | Number.parseInt(match[3]!, 10);
}

/** `0000:bb:dd.f`, as Linux prints a PCI address. */
export function formatBdf(bdf: Bdf): string {
  const hex2 = (n: number): string => n.toString(16).padStart(2, '0');
  return `0000:${hex2(bdf >> 8)}:${hex2((bdf >> 3) & 0x1f)}.${bdf & 7}`;
}

/** The shared buffers of one PCI function, as they cross to the kernel and device workers. */
export interface PciFunctionBuffers {
  readonly bdf: Bdf;
  /** Config space followed by the function's internal words. */
  readonly config: SharedArrayBuffer;
  /** BAR0's register window. */
  readonly bar0: SharedArrayBuffer;
}

/** Identity of a function, fixed by the hardware. */
export interface PciFunctionIdentity {
  readonly vendor: number;
  readonly device: number;
  readonly classCode: number;
  readonly bar0Address: number;
}

/**
 * Access to one PCI function's config space and registers. Each side (kernel driver, device
 * model, machine) wraps the same buffers in its own instance; every access is atomic.
 */
export class PciFunction {
  readonly bdf: Bdf;
  readonly buffers: PciFunctionBuffers;
  readonly #config: Int32Array;
  readonly #bar0: Int32Array;

  constructor(buffers: PciFunctionBuffers) {
    this.bdf = buffers.bdf;
    this.buffers = buffers;
    this.#config = new Int32Array(buffers.config);
    this.#bar0 = new Int32Array(buffers.bar0);
  }

  /** New buffers for a function at `bdf` with `identity`, in its power-on state. */
  static create(bdf: Bdf, identity: PciFunctionIdentity): PciFunction {
    const fn = new PciFunction({
      bdf,
      config: new SharedArrayBuffer(FUNCTION_WORDS * 4),
      bar0: new SharedArrayBuffer(PCI_BAR_SIZE),
    });
    const c = fn.#config;
    c[PCI_VENDOR_ID / 4] = (identity.device << 16) | identity.vendor;
    c[PCI_CLASS_REVISION / 4] = (identity.classCode << 8) | 1;
    c[PCI_BASE_ADDRESS_0 / 4] = identity.bar0Address;
    c[PCI_CAPABILITY_LIST / 4] = PCI_MSIX_CAP;
    c[PCI_MSIX_CAP / 4] = (PCI_EXP_CAP << 8) | 0x11;
    c[PCI_EXP_CAP / 4] = 0x10;
    return fn;
  }

  get vendor(): number {
    return this.readConfig16(PCI_VENDOR_ID);
  }

  get device(): number {
    return this.readConfig16(PCI_DEVICE_ID);
  }

  get classCode(): number {
    return this.readConfig32(PCI_CLASS_REVISION) >>> 8;
  }

  get command(): number {
    return this.readConfig16(PCI_COMMAND);
  }

  /** Whether the function may master the bus (issue DMA). */
  get busMaster(): boolean {
    return (this.command & PCI_COMMAND_MASTER) !== 0;
  }

  /** Whether the function responds to accesses to its BAR. */
  get memoryDecode(): boolean {
    return (this.command & PCI_COMMAND_MEMORY) !== 0;
  }

  /** Whether the MSI-X-like capability is enabled and not masked. */
  get interruptsEnabled(): boolean {
    const flags = this.readConfig16(PCI_MSIX_FLAGS);
    return (flags & PCI_MSIX_FLAGS_ENABLE) !== 0 && (flags & PCI_MSIX_FLAGS_MASKALL) === 0;
  }

  readConfig32(offset: number): number {
    checkConfigOffset(offset, 4);
    return Atomics.load(this.#config, offset >> 2) >>> 0;
  }

  readConfig16(offset: number): number {
    checkConfigOffset(offset, 2);
    return (Atomics.load(this.#config, offset >> 2) >>> ((offset & 2) * 8)) & 0xffff;
  }

  /**
   * A config write as the function sees it: only the writable bits of the command register,
   * the MSI-X message control and the device control change; other fields are read-only.
   * Setting {@link PCI_EXP_DEVCTL_BCR_FLR} performs a function-level reset before returning.
   */
  writeConfig16(offset: number, value: number): void {
    checkConfigOffset(offset, 2);
    if (offset === PCI_COMMAND) {
      this.#update16(offset, COMMAND_WRITABLE, value);
    } else if (offset === PCI_MSIX_FLAGS) {
      this.#update16(offset, MSIX_WRITABLE, value);
    } else if (offset === PCI_EXP_DEVCTL && (value & PCI_EXP_DEVCTL_BCR_FLR) !== 0) {
      this.functionLevelReset();
    }
  }

  /**
   * Function-level reset: the function stops mastering the bus, waits for its DMA in flight to
   * complete, and returns config and registers to their power-on state. When this returns, the
   * function issues no DMA until software enables bus mastering again.
   */
  functionLevelReset(): void {
    this.#update16(PCI_COMMAND, 0xffff, 0);
    this.#update16(PCI_MSIX_FLAGS, 0xffff, 0);
    this.waitForIdle();
    this.#bar0.fill(0);
    Atomics.add(this.#config, RESET_GENERATION, 1);
  }

  /** Wait until the function has no DMA in flight. */
  waitForIdle(): void {
    while (Atomics.load(this.#config, INFLIGHT) !== 0) {
      Atomics.wait(this.#config, INFLIGHT, 1, 10);
    }
  }

  /** Read a 32-bit register of BAR0 (byte offset). */
  readRegister(offset: number): number {
    return Atomics.load(this.#bar0, registerIndex(offset)) >>> 0;
  }

  writeRegister(offset: number, value: number): void {
    Atomics.store(this.#bar0, registerIndex(offset), value | 0);
  }

  /** Add `delta` to a 32-bit register (device-side counters). */
  addRegister(offset: number, delta: number): void {
    Atomics.add(this.#bar0, registerIndex(offset), delta);
  }

  /**
   * Device side: start a DMA transaction. Returns `false` (and starts nothing) when bus mastering
   * is off. Marking the transaction in flight before reading the command register is what lets
   * {@link functionLevelReset} and IOMMU invalidation wait for it.
   */
  beginDma(): boolean {
    Atomics.store(this.#config, INFLIGHT, 1);
    if (this.busMaster) return true;
    this.endDma();
    return false;
  }

  endDma(): void {
    Atomics.store(this.#config, INFLIGHT, 0);
    Atomics.notify(this.#config, INFLIGHT);
  }

  /** @internal Power-on of the device's logic: no transaction can be in flight yet. */
  powerOn(): void {
    Atomics.store(this.#config, INFLIGHT, 0);
  }

  /**
   * Device side: signal an interrupt. It is delivered (the MSI-X message word is incremented and
   * its waiters woken) only while MSI-X is enabled and not masked; otherwise it is lost, as a
   * message the function is not allowed to send. Returns whether it was delivered. A device calls
   * this inside its DMA transaction, so a function-level reset that returned has no delivery of
   * the old configuration still to come. `beforeSend` runs once the interrupt is known to be
   * delivered and before the message is sent, so whoever the message wakes sees its effects.
   */
  raiseInterrupt(beforeSend?: () => void): boolean {
    if (!this.interruptsEnabled) return false;
    beforeSend?.();
    Atomics.add(this.#config, MSI_MESSAGE, 1);
    Atomics.notify(this.#config, MSI_MESSAGE);
    return true;
  }

  /**
   * The MSI-X message word: the number of interrupts this function delivered since power-on,
   * modulo 2^32 (an unsigned value). It is never reset: the interrupts delivered since a value
   * `seen` are `(interruptMessage - seen) >>> 0`.
   */
  get interruptMessage(): number {
    return Atomics.load(this.#config, MSI_MESSAGE) >>> 0;
  }

  /**
   * Interrupt controller side: resolves once the message word differs from `seen` or
   * {@link wakeInterruptWaiters} is called (`Atomics.waitAsync`, so the caller's thread keeps
   * running). Callers re-read {@link interruptMessage}: a wake-up may carry no new interrupt.
   */
  waitForInterrupt(seen: number): Promise<void> {
    const result = AtomicsWaitAsync.waitAsync(this.#config, MSI_MESSAGE, seen | 0);
    return result.async ? result.value.then(() => undefined) : Promise.resolve();
  }

  /** Wake every {@link waitForInterrupt} of this function without delivering an interrupt. */
  wakeInterruptWaiters(): void {
    Atomics.notify(this.#config, MSI_MESSAGE);
  }

  /** The number of resets so far; a device model resets its state when this moves. */
  get resetGeneration(): number {
    return Atomics.load(this.#config, RESET_GENERATION);
  }

  /** @internal Device side: the IOTLB of this function was flushed at `generation`. */
  acknowledgeInvalidation(generation: number): void {
    Atomics.store(this.#config, IOTLB_ACK, generation);
    Atomics.notify(this.#config, INFLIGHT);
  }

  /** @internal IOMMU side: wait until this function holds no translation older than `generation`. */
  waitForInvalidation(generation: number): void {
    for (;;) {
      if (Atomics.load(this.#config, INFLIGHT) === 0) return;
      if (Atomics.load(this.#config, IOTLB_ACK) - generation >= 0) return;
      Atomics.wait(this.#config, INFLIGHT, 1, 10);
    }
  }

  #update16(offset: number, mask: number, value: number): void {
    const index = offset >> 2;
    const shift = (offset & 2) * 8;
    const wordMask = (mask << shift) | 0;
    for (;;) {
      const old = Atomics.load(this.#config, index);
      const next = (old & ~wordMask) | (((value << shift) | 0) & wordMask);
      if (Atomics.compareExchange(this.#config, index, old, next) === old) return;
    }
  }
}

// `Atomics.waitAsync` is in Node 20 (V8) but in TypeScript's ES2024 lib, above our ES2023 target.
const AtomicsWaitAsync = Atomics as unknown as {
  waitAsync(
    array: Int32Array,
    index: number,
    value: number,
  ): { async: false; value: string } | { async: true; value: Promise<string> };
};

function checkConfigOffset(offset: number, size: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + size > PCI_CONFIG_SPACE_SIZE) {
    throw new RangeError(
      `config offset ${offset} is outside the ${PCI_CONFIG_SPACE_SIZE}-byte space`,
    );
  }
  if (offset % size !== 0) throw new RangeError(`config offset ${offset} is not ${size}-aligned`);
}

function registerIndex(offset: number): number {
  if (!Number.isInteger(offset) || offset < 0 || offset + 4 > PCI_BAR_SIZE || offset % 4 !== 0) {
    throw new RangeError(`register offset ${offset} is not an aligned offset inside BAR0`);
  }
  return offset >> 2;
}
