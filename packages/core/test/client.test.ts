import { afterEach, describe, expect, it } from 'vitest';
import { createKernelImage } from '@liveupdate/kernel';
import {
  KernelError,
  LINUX_REBOOT_CMD_KEXEC,
  Machine,
  type KernelImage,
  type Process,
} from '@liveupdate/machine';
import {
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_SESSION_GET_NAME,
  LiveUpdateDevice,
  createSessionArg,
  getNameArg,
} from '../src/index.js';

// The kernel worker imports the built module (dist/), like every module: build before testing.
function luoImage(version: string, cmdline = 'kho=on liveupdate=on'): KernelImage {
  return createKernelImage({ version, cmdline, modules: ['@liveupdate/core/module'] });
}

const machines: Machine[] = [];
afterEach(async () => {
  await Promise.all(machines.splice(0).map((m) => m.shutdown()));
});

async function bootedProcess(image = luoImage('6.18.0')): Promise<[Machine, Process]> {
  const machine = Machine.create({ ramBytes: 32 * 1024 * 1024 });
  machines.push(machine);
  await machine.boot(image);
  return [machine, machine.spawn()];
}

/** `[code, errno]` of the KernelError the promise rejects with, or 'resolved'. */
async function errnoOf(promise: Promise<unknown>): Promise<[string, number] | 'resolved'> {
  try {
    await promise;
    return 'resolved';
  } catch (error) {
    if (!KernelError.isInstance(error)) throw error;
    return [error.code, error.errno];
  }
}

describe('LiveUpdateDevice', () => {
  it('creates a session whose name the kernel reports back', async () => {
    const [, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('vm0');
    expect(session.name).toBe('vm0');
    expect(session.fd).toBeGreaterThanOrEqual(0);
    expect(session.fd).not.toBe(device.fd);
    expect(await session.getName()).toBe('vm0');
    const longest = await device.createSession('ü'.repeat(31) + 'x');
    expect(await longest.getName()).toBe('ü'.repeat(31) + 'x');
  });

  it('fails to open with ENOENT when LUO is off, and with EBUSY when already open', async () => {
    const [, off] = await bootedProcess(luoImage('6.18.0', 'kho=on'));
    expect(await errnoOf(LiveUpdateDevice.open(off))).toEqual(['ENOENT', 2]);

    const [machine, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    expect(await errnoOf(LiveUpdateDevice.open(process))).toEqual(['EBUSY', 16]);
    expect(await errnoOf(LiveUpdateDevice.open(machine.spawn()))).toEqual(['EBUSY', 16]);
    await device.close();
    await (await LiveUpdateDevice.open(process)).close();
  });

  it('passes the kernel’s errno for empty, unterminated and duplicate names', async () => {
    const [, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    await device.createSession('vm0');
    expect(await errnoOf(device.createSession('vm0'))).toEqual(['EEXIST', 17]);
    expect(await errnoOf(device.createSession(''))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(device.createSession('n'.repeat(64)))).toEqual(['EINVAL', 22]);
  });

  it('refuses, without a syscall, a name longer than 64 bytes of UTF-8', async () => {
    const [, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    const error = await device.createSession('é'.repeat(33)).catch((e: unknown) => e);
    expect(KernelError.isInstance(error) && error.code).toBe('EINVAL');
    expect(KernelError.isInstance(error) && error.syscall).toBeUndefined();
    expect(await errnoOf(device.retrieveSession('n'.repeat(65)))).toEqual(['EINVAL', 22]);
  });

  it('finds no session to retrieve after a cold boot', async () => {
    const [, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    expect(await errnoOf(device.retrieveSession('vm0'))).toEqual(['ENOENT', 2]);
  });

  it('keeps sessions open after the device is closed', async () => {
    const [, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('vm0');
    await device.close();
    expect(await session.getName()).toBe('vm0');
  });

  it('frees the name of an outgoing session when it is closed', async () => {
    const [, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('vm0');
    await session.close();
    const again = await device.createSession('vm0');
    expect(await again.getName()).toBe('vm0');
  });
});

describe('LiveUpdateSession', () => {
  it('refuses the incoming-only ioctls on an outgoing session with EINVAL', async () => {
    const [, process] = await bootedProcess();
    const session = await (await LiveUpdateDevice.open(process)).createSession('vm0');
    expect(await errnoOf(session.retrieveFd(1n))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(session.finish())).toEqual(['EINVAL', 22]);
  });

  it('passes the kernel’s errno for a bad fd and a file no handler takes', async () => {
    const [, process] = await bootedProcess();
    const session = await (await LiveUpdateDevice.open(process)).createSession('vm0');
    expect(await errnoOf(session.preserveFd(99, 1))).toEqual(['EBADF', 9]);
    const devNull = await process.open('/dev/null');
    expect(await errnoOf(session.preserveFd(devNull, 1n))).toEqual(['ENOENT', 2]);
  });

  it('rejects a token that is not a u64 before any syscall', async () => {
    const [, process] = await bootedProcess();
    const session = await (await LiveUpdateDevice.open(process)).createSession('vm0');
    await expect(session.preserveFd(0, -1)).rejects.toThrow(RangeError);
    await expect(session.retrieveFd(1.5)).rejects.toThrow(RangeError);
    await expect(session.retrieveFd(1n << 64n)).rejects.toThrow(RangeError);
  });

  it('hands a session over a kexec: retrieved once, finished, then gone', async () => {
    const [machine, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    await device.createSession('vm0');
    await device.createSession('closed-before-reboot').then((s) => s.close());
    await process.kexecLoad(luoImage('6.18.1'));
    await process.reboot(LINUX_REBOOT_CMD_KEXEC);

    const next = machine.spawn();
    const nextDevice = await LiveUpdateDevice.open(next);
    expect(await errnoOf(nextDevice.retrieveSession('closed-before-reboot'))).toEqual([
      'ENOENT',
      2,
    ]);
    const session = await nextDevice.retrieveSession('vm0');
    expect(await session.getName()).toBe('vm0');
    expect(await errnoOf(nextDevice.retrieveSession('vm0'))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(session.retrieveFd(1n))).toEqual(['ENOENT', 2]);
    expect(await errnoOf(session.preserveFd(0, 1n))).toEqual(['EINVAL', 22]);
    // Incoming and outgoing names do not clash.
    expect(await (await nextDevice.createSession('vm0')).getName()).toBe('vm0');
    await session.finish();
    await session.close();
    expect(await errnoOf(nextDevice.retrieveSession('vm0'))).toEqual(['ENOENT', 2]);
  });
});

describe('the raw uAPI through Process.ioctl', () => {
  it('refuses a short size with EINVAL and a non-zero tail with E2BIG', async () => {
    const [, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    const name = new TextEncoder().encode('raw');
    const short = createSessionArg.encode({ size: 71, fd: 0, name });
    expect(await errnoOf(process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, short))).toEqual(
      ['EINVAL', 22],
    );
    const long = new Uint8Array(80);
    long.set(createSessionArg.encode({ size: 80, fd: 0, name }));
    long[79] = 1;
    expect(await errnoOf(process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, long))).toEqual([
      'E2BIG',
      7,
    ]);
    long[79] = 0;
    await process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, long);
    const { fd } = createSessionArg.decode(long);
    const getName = getNameArg.encode({ size: 72, reserved: 1, name: new Uint8Array(64) });
    expect(await errnoOf(process.ioctl(fd, LIVEUPDATE_SESSION_GET_NAME, getName))).toEqual([
      'EINVAL',
      22,
    ]);
  });

  it('refuses an unknown command number with EINVAL and wrong size bits with ENOTTY', async () => {
    const [, process] = await bootedProcess();
    const device = await LiveUpdateDevice.open(process);
    const arg = createSessionArg.encode({ size: 72, fd: 0, name: new Uint8Array([0x61]) });
    expect(await errnoOf(process.ioctl(device.fd, 0xba02, arg))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.ioctl(device.fd, 0xc048ba00, arg))).toEqual(['ENOTTY', 25]);
  });
});
