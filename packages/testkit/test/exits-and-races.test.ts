// How a process's end and racing calls leave LUO: nothing a failed or late call started may hold
// a reference, install an fd or reach the next kernel.
import { describe, expect, it } from 'vitest';
import { F_DUPFD, LINUX_REBOOT_CMD_KEXEC } from '@liveupdate/machine';
import { liveUpdateImage, testkitStats } from '@liveupdate/testkit';
import {
  NOTE_MODULE,
  boot,
  fillFdTable,
  noteControl,
  noteGateArrived,
  openDevice,
  openNoteGate,
  preserveNote,
  within,
} from './helpers.js';

describe('a dup that fails with EMFILE', () => {
  it('takes no reference: the device opens again and a closed session frees its name and is not handed over', async () => {
    const harness = await boot();
    const { process } = harness;
    const device = await openDevice(process);
    const session = await device.createSession('vm0');
    await preserveNote(session, 1, 'dropped');
    await fillFdTable(process);
    for (const fd of [device.fd, session.fd]) {
      await expect(process.dup(fd)).rejects.toMatchObject({ code: 'EMFILE' });
      await expect(process.fcntl(fd, F_DUPFD, 0)).rejects.toMatchObject({ code: 'EMFILE' });
    }
    await session.close();
    await device.close();
    const again = await openDevice(process);
    const reused = await again.createSession('vm0');
    await reused.close();
    const next = await harness.liveUpdate();
    await expect((await openDevice(next)).retrieveSession('vm0')).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });
});

describe('exit', () => {
  it('refuses the syscalls the process issues while it waits on an unpreserve (ESRCH), so no session outlives it', async () => {
    const harness = await boot();
    const dying = harness.machine.spawn();
    const { process: observer } = harness;
    const dyingDevice = await openDevice(dying);
    const session = await dyingDevice.createSession('s');
    await preserveNote(session, 1, 'slow');
    await noteControl(observer, { gate: 'unpreserve' });
    const exited = dying.exit();
    await noteGateArrived(observer);
    await expect(dying.open('/dev/liveupdate')).rejects.toMatchObject({ code: 'ESRCH' });
    await expect(dyingDevice.createSession('ghost')).rejects.toMatchObject({ code: 'ESRCH' });
    await expect(dying.syscall('note_create', 'late')).rejects.toMatchObject({ code: 'ESRCH' });
    await openNoteGate(observer);
    await within(exited, 'the exit to return');
    expect(dying.alive).toBe(false);
    // Nothing of the dying process holds the device, and no session of it is handed over.
    await (await openDevice(observer)).close();
    await expect(testkitStats(observer)).resolves.toMatchObject({ openFiles: 0 });
    const device = await openDevice(await harness.liveUpdate());
    for (const name of ['ghost', 's']) {
      await expect(device.retrieveSession(name)).rejects.toMatchObject({ code: 'ENOENT' });
    }
  });

  it('releases the file of a RETRIEVE_FD still running when it began', async () => {
    const harness = await boot();
    const session = await (await openDevice(harness.process)).createSession('s');
    await preserveNote(session, 1, 'in flight');
    const observer = await harness.liveUpdate();
    const dying = harness.machine.spawn();
    const incoming = await (await openDevice(dying)).retrieveSession('s');
    const before = await testkitStats(observer);
    await noteControl(observer, { gate: 'retrieve' });
    const retrieving = incoming.retrieveFd(1n);
    await noteGateArrived(observer);
    const exited = dying.exit();
    // Messages reach the kernel in order: this one is refused only once the exit has begun.
    await expect(dying.open('/dev/liveupdate')).rejects.toMatchObject({ code: 'ESRCH' });
    await openNoteGate(observer);
    await Promise.allSettled([within(retrieving, 'the RETRIEVE_FD to return')]);
    await within(exited, 'the exit to return');
    const after = await testkitStats(observer);
    // The retrieved note, its fd and LUO's reference are gone; its page went back to the
    // allocator with it (before, it was a preserved frame nobody had restored).
    expect(after.openFiles).toBe(0);
    expect(after.framesAllocated).toBe(before.framesAllocated);
    expect(after.khoUnrestoredFrames).toBeLessThan(before.khoUnrestoredFrames);
  });
});

describe('racing reboot(LINUX_REBOOT_CMD_KEXEC)', () => {
  const image = liveUpdateImage({ version: '6.18.1', modules: [NOTE_MODULE] });

  it('gives EBUSY to a reboot issued while another one freezes, and to a kexec_load then', async () => {
    const harness = await boot();
    const { process } = harness;
    const other = harness.machine.spawn();
    const session = await (await openDevice(process)).createSession('s');
    await preserveNote(session, 1, 'frozen once');
    await process.kexecLoad(image);
    await noteControl(other, { gate: 'freeze' });
    const winner = process.reboot(LINUX_REBOOT_CMD_KEXEC);
    await noteGateArrived(other);
    await expect(other.reboot(LINUX_REBOOT_CMD_KEXEC)).rejects.toMatchObject({ code: 'EBUSY' });
    await expect(other.kexecLoad(image)).rejects.toMatchObject({ code: 'EBUSY' });
    await openNoteGate(other);
    await within(winner, 'the winning reboot to return');
    expect(harness.machine.bootCount).toBe(2);
    const incoming = await (await openDevice(harness.machine.spawn())).retrieveSession('s');
    await expect(incoming.getName()).resolves.toBe('s');
  });

  it('resolves one of two reboots issued at once and gives the other EBUSY', async () => {
    const harness = await boot();
    const { process } = harness;
    const other = harness.machine.spawn();
    const session = await (await openDevice(process)).createSession('s');
    await preserveNote(session, 1, 'kexec once');
    await process.kexecLoad(image);
    const results = await Promise.allSettled([
      process.reboot(LINUX_REBOOT_CMD_KEXEC),
      other.reboot(LINUX_REBOOT_CMD_KEXEC),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const loser = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(loser.reason).toMatchObject({ code: 'EBUSY' });
    expect(harness.machine.bootCount).toBe(2);
    await expect(
      (await openDevice(harness.machine.spawn())).retrieveSession('s'),
    ).resolves.toBeDefined();
  });
});
