import { afterEach, describe, expect, it } from 'vitest';
import { KernelError, Machine, MachineHaltedError, type KernelImage } from '../src/index.js';

const image = (fixture: string, version = '1.0'): KernelImage => ({
  entry: new URL(`./fixtures/${fixture}`, import.meta.url).href,
  version,
  cmdline: '',
  modules: [],
  moduleBase: import.meta.url,
});

const machines: Machine[] = [];
const create = (options = {}) => {
  const machine = Machine.create({ ramBytes: 1024 * 1024, ...options });
  machines.push(machine);
  return machine;
};
afterEach(async () => {
  await Promise.all(machines.splice(0).map((m) => m.shutdown()));
});

describe('Machine', () => {
  it('has no kernel to spawn processes on before it boots', () => {
    const machine = create();
    expect(machine.state).toBe('off');
    expect(() => machine.spawn()).toThrow(/no kernel is running/);
  });

  it('routes a process’s syscalls to the running kernel and back', async () => {
    const machine = create();
    await machine.boot(image('echo-kernel.mjs'));
    const process = machine.spawn();
    expect(await process.syscall('hello', 1, 'two')).toEqual({
      pid: process.pid,
      name: 'hello',
      args: [1, 'two'],
    });
    const error = await process.syscall('fail').catch((e: unknown) => e);
    expect(KernelError.isInstance(error) && [error.code, error.errno, error.syscall]).toEqual([
      'ENOTTY',
      25,
      'fail',
    ]);
  });

  it('rejects arguments that cannot reach the kernel with EFAULT', async () => {
    const machine = create();
    await machine.boot(image('echo-kernel.mjs'));
    await expect(machine.spawn().syscall('x', () => 1)).rejects.toMatchObject({ code: 'EFAULT' });
  });

  it('boots the loaded image at kexec, handing it only the handover address, and ends old processes', async () => {
    const handovers: (number | null)[] = [];
    const machine = create({
      onHandover: ({ khoFdtPhys }: { khoFdtPhys: number | null }) =>
        void handovers.push(khoFdtPhys),
    });
    await machine.boot(image('echo-kernel.mjs', '1.0'));
    const old = machine.spawn();
    await old.kexecLoad(image('echo-kernel.mjs', '2.0'));
    await old.reboot(0x45584543);
    expect(machine.kernelVersion).toBe('2.0');
    expect(machine.bootCount).toBe(2);
    expect(handovers).toEqual([0x5000]);
    expect(machine.dmesg(1)).toMatch(/echo 2\.0 khoFdtPhys=20480/);
    expect(machine.dmesg(0)).toMatch(/echo 1\.0 khoFdtPhys=null/);
    expect(old.alive).toBe(false);
    await expect(old.syscall('hello')).rejects.toMatchObject({ code: 'ESRCH' });
    expect(await machine.spawn().syscall('hello')).toMatchObject({ name: 'hello' });
  });

  it('halts with the reason when the kernel crashes, never as an unhandled exception', async () => {
    const machine = create();
    const error = await machine.boot(image('crashing-kernel.mjs')).catch((e: unknown) => e);
    expect(MachineHaltedError.isInstance(error)).toBe(true);
    expect(machine.state).toBe('halted');
    expect(machine.panicReason).toMatch(/Oops: null pointer dereference at boot/);
  });

  it('refuses a second boot while running, and boots again after a halt', async () => {
    const machine = create();
    await machine.boot(image('crashing-kernel.mjs')).catch(() => undefined);
    await machine.boot(image('echo-kernel.mjs'));
    expect(machine.state).toBe('running');
    await expect(machine.boot(image('echo-kernel.mjs'))).rejects.toThrow(
      /already running|is running/,
    );
  });

  it('halts with the reason when an image cannot be loaded', async () => {
    const machine = create();
    await expect(machine.boot(image('does-not-exist.mjs'))).rejects.toSatisfy(
      MachineHaltedError.isInstance,
    );
    expect(machine.panicReason).toMatch(/Oops|failed to load|exited/);
  });
});
