import { describe, expect, it } from 'vitest';
import { until } from '@liveupdate/vitest-config/wait-until';
import {
  EFD_NONBLOCK,
  KernelError,
  NIC_REG_INT_STATUS,
  NIC_REG_STATUS,
  NIC_STATUS_RX_ACTIVE,
  type Machine,
  type Process,
} from '@liveupdate/machine';
import { PROBE, bootedMachine, kexec, testImage } from './helpers.js';

const NIC_IRQ = new URL('./fixtures/nic-irq.js', import.meta.url).href;
const NIC = '00:03.0';
/** `_IOW('N', 1, __s32)`, as `fixtures/nic-irq.js` defines it. */
const NIC_IRQ_SET_EVENTFD = 0x40044e01;

interface Stats {
  handled: number;
  calls: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function nicIrq<T = number>(process: Process, op: string, args: object = {}): Promise<T> {
  return process.syscall('nic_irq', op, args) as Promise<T>;
}

async function booted(): Promise<{ machine: Machine; process: Process }> {
  const machine = await bootedMachine(testImage('6.18.0', { modules: [PROBE, NIC_IRQ] }), {
    devices: [{ kind: 'nic', bdf: NIC, packetsPerSecond: 2000 }],
  });
  return { machine, process: machine.spawn() };
}

/**
 * Stop the NIC and wait until it says it has stopped (STATUS.RX_ACTIVE clear): from then on no
 * packet or interrupt comes, so the interrupt counter is final.
 */
async function quiesce(machine: Machine, process: Process): Promise<number> {
  await nicIrq(process, 'stop');
  const fn = machine.hardware.function(NIC);
  await until(
    () => (fn.readRegister(NIC_REG_STATUS) & NIC_STATUS_RX_ACTIVE) === 0,
    'the NIC to clear STATUS.RX_ACTIVE after its stop',
  );
  return machine.counters(NIC).interrupts;
}

function u32(value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setInt32(0, value, true);
  return bytes;
}

function counterOf(data: Uint8Array): number {
  expect(data.length).toBe(8);
  return Number(new DataView(data.buffer, data.byteOffset, 8).getBigUint64(0, true));
}

describe('device interrupts', () => {
  it('delivers nothing while MSI-X is disabled, though the NIC receives with interrupts on', async () => {
    const { machine, process } = await booted();
    await nicIrq(process, 'request');
    await nicIrq(process, 'start', { msix: false });
    await until(() => machine.counters(NIC).packets >= 40, 'machine.counters(NIC).packets >= 40');
    await quiesce(machine, process);
    const fn = machine.hardware.function(NIC);
    // The cause is latched in the NIC's register, but no message was sent.
    expect(fn.readRegister(NIC_REG_INT_STATUS) & 1).toBe(1);
    expect(machine.counters(NIC).interrupts).toBe(0);
    expect(fn.interruptMessage).toBe(0);
    expect(await nicIrq<Stats>(process, 'stats')).toEqual({ handled: 0, calls: 0 });
  });

  it('hands the handler counts that sum to the interrupts the NIC delivered', async () => {
    const { machine, process } = await booted();
    await nicIrq(process, 'request');
    await nicIrq(process, 'start', { msix: true });
    await until(() => machine.counters(NIC).packets >= 100, 'machine.counters(NIC).packets >= 100');
    const delivered = await quiesce(machine, process);
    expect(delivered).toBeGreaterThanOrEqual(100);
    // The handler runs in the kernel worker; give it the last wake-up.
    await until(
      async () => (await nicIrq<Stats>(process, 'stats')).handled >= delivered,
      'nicIrq stats.handled >= delivered',
    );
    const stats = await nicIrq<Stats>(process, 'stats');
    expect(stats.handled).toBe(delivered);
    expect(stats.calls).toBeGreaterThan(0);
    expect(stats.calls).toBeLessThanOrEqual(delivered);
  });

  it('calls the handler no more once freeIrq returned, while the NIC keeps interrupting', async () => {
    const { machine, process } = await booted();
    await nicIrq(process, 'request');
    await nicIrq(process, 'start', { msix: true });
    await until(
      async () => (await nicIrq<Stats>(process, 'stats')).handled >= 10,
      'nicIrq stats.handled >= 10',
    );
    const atFree = await nicIrq<Stats>(process, 'free');
    const before = machine.counters(NIC).interrupts;
    await until(
      () => machine.counters(NIC).interrupts >= before + 50,
      'machine.counters(NIC).interrupts >= before + 50',
    );
    expect(await nicIrq<Stats>(process, 'stats')).toEqual(atFree);
    // A new handler gets what comes after it, and nothing of what came while none was installed.
    const beforeRequest = machine.counters(NIC).interrupts;
    await nicIrq(process, 'request');
    const afterRequest = machine.counters(NIC).interrupts;
    await until(
      async () => (await nicIrq<Stats>(process, 'stats')).handled > atFree.handled,
      'nicIrq stats.handled > atFree.handled',
    );
    const delivered = await quiesce(machine, process);
    // The handler catches up with every interrupt since it was installed (an event to wait for);
    // then it must not have seen one from before.
    await until(
      async () =>
        (await nicIrq<Stats>(process, 'stats')).handled - atFree.handled >=
        delivered - afterRequest,
      'the handler to see every interrupt raised after it was installed',
    );
    await sleep(50);
    const handled = (await nicIrq<Stats>(process, 'stats')).handled - atFree.handled;
    expect(handled).toBeLessThanOrEqual(delivered - beforeRequest);
  });

  it('survives a handler that throws, logging it', async () => {
    const { machine, process } = await booted();
    await nicIrq(process, 'requestThrowing');
    await nicIrq(process, 'start', { msix: true });
    await until(
      async () => (await nicIrq<Stats>(process, 'stats')).calls >= 3,
      'nicIrq stats.calls >= 3',
    );
    expect(machine.state).toBe('running');
    expect(machine.dmesg()).toContain(
      'irq 0000:00:03.0: handler failed: Error: nic_irq: handler failure on purpose',
    );
    // The kernel still serves syscalls.
    expect(await process.eventfd(1, EFD_NONBLOCK)).toBeGreaterThanOrEqual(0);
  });

  it('passes NIC interrupts through a kernel handler into an eventfd a process reads', async () => {
    const { machine, process } = await booted();
    const efd = await process.eventfd();
    const dev = await process.open('/dev/nic-irq');
    await process.ioctl(dev, NIC_IRQ_SET_EVENTFD, u32(efd));
    // A blocking read waits for the first interrupt.
    const first = process.read(efd, 8);
    await nicIrq(process, 'start', { msix: true });
    let read = counterOf(await first);
    expect(read).toBeGreaterThan(0);
    await until(() => machine.counters(NIC).packets >= 60, 'machine.counters(NIC).packets >= 60');
    read += counterOf(await process.read(efd, 8));
    const delivered = await quiesce(machine, process);
    await until(
      async () => (await nicIrq<Stats>(process, 'stats')).handled >= delivered,
      'nicIrq stats.handled >= delivered',
    );
    // Whatever was signalled since the last read is in the counter, coalesced.
    if (read < delivered) read += counterOf(await process.read(efd, 8));
    expect(read).toBe(delivered);
    expect((await nicIrq<Stats>(process, 'stats')).handled).toBe(delivered);
  });

  it('refuses to bind a file that is not an eventfd, and unbinds on -1', async () => {
    const { process } = await booted();
    const dev = await process.open('/dev/nic-irq');
    const nul = await process.open('/dev/null');
    const error = await process.ioctl(dev, NIC_IRQ_SET_EVENTFD, u32(nul)).catch((e: unknown) => e);
    expect(KernelError.isInstance(error) && error.code).toBe('EINVAL');
    const efd = await process.eventfd(0, EFD_NONBLOCK);
    await process.ioctl(dev, NIC_IRQ_SET_EVENTFD, u32(efd));
    // The handler is installed: a second one is refused.
    const busy = await nicIrq(process, 'request').catch((e: unknown) => e);
    expect(KernelError.isInstance(busy) && busy.code).toBe('EBUSY');
    await process.ioctl(dev, NIC_IRQ_SET_EVENTFD, u32(-1));
    expect(await nicIrq(process, 'request')).toBe(0);
  });

  it('gives the next kernel only the interrupts raised after it asked, none of the old ones', async () => {
    const { machine, process } = await booted();
    await nicIrq(process, 'request');
    await nicIrq(process, 'start', { msix: true });
    await until(
      () => machine.counters(NIC).interrupts >= 50,
      'machine.counters(NIC).interrupts >= 50',
    );
    // At kexec the old kernel frees its handler and resets the NIC; the message word stays.
    const next = await kexec(machine, process, testImage('6.18.1', { modules: [PROBE, NIC_IRQ] }));
    expect(machine.dmesg(0)).toContain('pci 0000:00:03.0: shutdown');
    const before = machine.counters(NIC).interrupts;
    expect(machine.hardware.function(NIC).interruptMessage).toBe(before);
    await nicIrq(next, 'request');
    await nicIrq(next, 'start', { msix: true });
    await until(
      () => machine.counters(NIC).interrupts >= before + 50,
      'machine.counters(NIC).interrupts >= before + 50',
    );
    const delivered = await quiesce(machine, next);
    await until(
      async () => (await nicIrq<Stats>(next, 'stats')).handled >= delivered - before,
      'nicIrq stats.handled >= delivered - before',
    );
    await sleep(20);
    expect((await nicIrq<Stats>(next, 'stats')).handled).toBe(delivered - before);
  });
});
