// The host's services cross a live update through one agent: the cache hands it its memfd, the
// VMM its guest RAM, iommufd and vfio NIC, and the next kernel's processes fetch them back. No
// process but the agents opens /dev/liveupdate or issues a LIVEUPDATE ioctl.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AgentClient, LuoAgent } from '@liveupdate/agent';
import { LIVEUPDATE_IOCTL_TYPE, LiveUpdateSession } from '@liveupdate/core';
import { LINUX_REBOOT_CMD_KEXEC, Machine, Process } from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { VfioDevice } from '@liveupdate/plugin-vfio';
import { CacheProcess } from '../src/cache-process.js';
import { hostKernelImage } from '../src/host-kernel-image.js';
import { checkHost } from '../src/host-check.js';
import { planKvCache } from '../src/kv-cache.js';
import { attemptLiveUpdateHost } from '../src/live-update-attempt.js';
import { completeHostLiveUpdate, prepareHostLiveUpdate } from '../src/live-update-host.js';
import { BLACKOUT_PHASES, cacheLiveUpdateOf } from '../src/live-update-cache.js';
import { fillGuestMemory } from '../src/vm-guest-memory.js';
import { GuestRam } from '../src/vm-guest-ram.js';
import { checkGuestRing } from '../src/vm-ring-check.js';
import { NIC_BDF, NIC_CDEV, VM_ENTRIES, VM_SESSION, VmmProcess } from '../src/vm-process.js';

const MiB = 1024 ** 2;
const machines: Machine[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  await Promise.all(machines.splice(0).map((machine) => machine.shutdown()));
});

async function bootHost(): Promise<Machine> {
  const machine = Machine.create({
    ramBytes: 512 * MiB,
    devices: [{ kind: 'nic', bdf: NIC_BDF, packetsPerSecond: 10_000 }],
  });
  machines.push(machine);
  await machine.boot(hostKernelImage('6.18.0'));
  return machine;
}

/** Every process's opens and ioctls, by the pid that made them, from now on. */
function recordSyscalls(): {
  openersOf: (path: string) => Set<number>;
  liveUpdateIoctlers: () => Set<number>;
  ioctlers: () => Set<number>;
} {
  const open = vi.spyOn(Process.prototype, 'open');
  const ioctl = vi.spyOn(Process.prototype, 'ioctl');
  const pids = (spy: typeof open | typeof ioctl, which: (call: unknown[]) => boolean) =>
    new Set(
      spy.mock.contexts
        .filter((_, call) => which(spy.mock.calls[call]!))
        .map((process) => (process as Process).pid),
    );
  return {
    openersOf: (path) => pids(open, (call) => call[0] === path),
    // _IO(0xba, nr): /dev/liveupdate's and its sessions' commands.
    liveUpdateIoctlers: () =>
      pids(ioctl, (call) => ((Number(call[1]) >> 8) & 0xff) === LIVEUPDATE_IOCTL_TYPE),
    ioctlers: () => pids(ioctl, () => true),
  };
}

describe('the host through one agent', () => {
  it('carries the cache and the VM; only the agents open /dev/liveupdate or issue its ioctls', async () => {
    const machine = await bootHost();
    const syscalls = recordSyscalls();
    const agent = await LuoAgent.start(machine.spawn());
    const layout = planKvCache(4 * MiB, 1000);
    const { cacheProcess } = await CacheProcess.create(machine, layout);
    const vmm = await VmmProcess.create(machine, { guestBytes: 8 * MiB, ringSize: 1024 });
    fillGuestMemory(vmm.guest);
    const retrieveFd = vi.spyOn(LiveUpdateSession.prototype, 'retrieveFd');
    // The host starts the new services when the new agent listens: the cache's process is spawned
    // in its onListening, before the restore resolves (the VMM follows the cache's first key).
    const spawn = vi.spyOn(machine, 'spawn');
    const restore = LuoAgent.restore.bind(LuoAgent);
    const restoring: string[] = [];
    vi.spyOn(LuoAgent, 'restore').mockImplementation(async (process, options) => {
      const restored = await restore(process, {
        ...options,
        onListening: () => {
          const before = spawn.mock.calls.length;
          options?.onListening?.();
          restoring.push(`listening: ${spawn.mock.calls.length - before} spawned`);
        },
      });
      restoring.push('restored');
      return restored;
    });

    const attempt = await attemptLiveUpdateHost(
      machine,
      { agent, cache: cacheProcess, vmm },
      hostKernelImage('6.18.1'),
    );
    if (attempt.outcome !== 'updated') throw new Error(`refused: ${attempt.check.problems}`);
    const { update } = attempt;
    const cache = cacheLiveUpdateOf(update);
    const vm = update.vm!;

    // Everything the VM does after its fetch still works: the guest took up its ring where it
    // left it, the NIC kept DMAing through the blackout without a fault, guest RAM is intact.
    const host = await checkHost(machine, cache.cacheProcess, vm.vmm, vm.ring);
    expect(host.cache).toMatchObject({ verified: 1000, mismatches: 0 });
    expect(host.ring.ok).toBe(true);
    expect(host.guestMemory.mismatches).toBe(0);
    expect(vm.dma.iommuFaults).toBe(0);
    expect(vm.dma.deliveredDuringBlackout).toBeGreaterThan(0);
    expect(cache.firstKeyOk).toBe(true);
    expect(restoring).toEqual(['listening: 1 spawned', 'restored']);

    // The agent retrieved vm0's files in their order (tokens are given in store order: guest
    // RAM 1, iommufd 2, NIC 3), whatever the VMM fetched first.
    const vmTokens = retrieveFd.mock.calls
      .filter(
        (_, call) => (retrieveFd.mock.contexts[call] as LiveUpdateSession).name === VM_SESSION,
      )
      .map(([token]) => Number(token));
    expect(vmTokens).toEqual([1, 2, 3]);

    // The agents opened the device (the first also kexec'd from its process) ...
    const agents = new Set([agent.process.pid, update.agent.process.pid]);
    expect(syscalls.openersOf('/dev/liveupdate')).toEqual(agents);
    expect(syscalls.liveUpdateIoctlers()).toEqual(agents);
    // ... and no service did: the caches issued no ioctl at all, the VMMs only iommufd's and vfio's.
    for (const pid of [cacheProcess.process.pid, cache.cacheProcess.process.pid])
      expect(syscalls.ioctlers()).not.toContain(pid);
    expect(syscalls.ioctlers()).toContain(vm.vmm.process.pid);

    // The new VMM's session is finished (the agent did it on its word): the NIC's cdev is free.
    expect(update.agent.services.get(VM_SESSION)).toEqual([]);
    expect(Object.keys(cache.phases)).toEqual(expect.arrayContaining([...BLACKOUT_PHASES]));
    expect(cache.phases['agent-restore']).toBeGreaterThan(0);

    // And the next update goes the same way, from the new agent.
    const again = await attemptLiveUpdateHost(
      machine,
      { agent: update.agent, cache: cache.cacheProcess, vmm: vm.vmm },
      hostKernelImage('6.18.2'),
    );
    if (again.outcome !== 'updated') throw new Error(`refused: ${again.check.problems}`);
    const vmAgain = again.update.vm!;
    const hostAgain = await checkHost(
      machine,
      again.update.cache!.cacheProcess,
      vmAgain.vmm,
      vmAgain.ring,
    );
    expect(hostAgain.ring.ok).toBe(true);
    expect(vmAgain.ring.resets).toBe(0);
    expect(vmAgain.dma.iommuFaults).toBe(0);
  });

  it('ends the service processes it started when the new agent then fails to restore', async () => {
    const machine = await bootHost();
    const agent = await LuoAgent.start(machine.spawn());
    const { cacheProcess } = await CacheProcess.create(machine, planKvCache(4 * MiB, 100));
    // The old agent never prepared: nothing is preserved, so the new agent listens, tells the
    // host (which starts the cache), then fails with ENOENT and resets the cache's connection.
    const updater = agent.process;
    await updater.kexecLoad(hostKernelImage('6.18.1'));
    const spawn = vi.spyOn(machine, 'spawn');
    const restore = LuoAgent.restore.bind(LuoAgent);
    const started: Process[] = [];
    vi.spyOn(LuoAgent, 'restore').mockImplementation((process, options) =>
      restore(process, {
        ...options,
        onListening: () => {
          const before = spawn.mock.results.length;
          options?.onListening?.();
          for (const result of spawn.mock.results.slice(before))
            started.push(result.value as Process);
        },
      }),
    );
    const update = completeHostLiveUpdate(
      machine,
      { agent, cache: cacheProcess },
      {
        updater,
        kexecLoadMs: 0,
        agentPrepareMs: 0,
        cachePreserveMs: 0,
        vmPreserveMs: undefined,
        nicAtStart: undefined,
      },
    );
    await expect(update).rejects.toMatchObject({ code: 'ENOENT' });
    // The cache was started, and its process had ended by the time the failure was told.
    expect(started).toHaveLength(1);
    expect(started[0]!.alive).toBe(false);
  });

  it('needs the iommufd stored before the NIC: LUO preserves a device only after its iommufd', async () => {
    const machine = await bootHost();
    await LuoAgent.start(machine.spawn());
    const process = machine.spawn();
    const ram = await GuestRam.create(process, 4 * MiB);
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: ram.fd, length: ram.size, iova: 0 });
    const nic = await VfioDevice.open(process, NIC_CDEV);
    const hwpt = await iommufd.hwptAlloc(await nic.bindIommufd(iommufd.fd), ioas);
    await nic.attach(hwpt);
    await iommufd.hwptLuSetPreserve(hwpt, 1);
    const client = await AgentClient.connect(process);
    await client.hello(VM_SESSION);
    await client.store(VM_ENTRIES.guestRam.name, [ram.fd], { order: 0 });
    // The NIC before its iommufd: vfio-pci-v1 finds no preserved iommufd in the session.
    await expect(client.store(VM_ENTRIES.nic.name, [nic.fd], { order: 2 })).rejects.toMatchObject({
      code: 'ENOENT',
    });
    await client.store(VM_ENTRIES.iommufd.name, [iommufd.fd], { order: 1 });
    await expect(client.store('nic-2', [nic.fd], { order: 2 })).resolves.toBeUndefined();
    await client.bye();
  });

  it('cannot have vm0 finished before the NIC is bound and off the restored HWPT: EBUSY, kept', async () => {
    const machine = await bootHost();
    const agent = await LuoAgent.start(machine.spawn());
    const vmm = await VmmProcess.create(machine, { guestBytes: 4 * MiB, ringSize: 1024 });
    const { updater } = await prepareHostLiveUpdate(
      machine,
      { agent, vmm },
      hostKernelImage('6.18.1'),
    );
    await vmm.guest.pause();
    await updater.reboot(LINUX_REBOOT_CMD_KEXEC);
    const newAgent = await LuoAgent.restore(machine.spawn());

    // A VMM that asks too early: LUO refuses, and the agent keeps the session and its files.
    const hasty = machine.spawn();
    const client = await AgentClient.connect(hasty);
    expect(await client.hello(VM_SESSION)).toEqual({ restored: true });
    for (const entry of Object.values(VM_ENTRIES))
      for (const fd of await client.fetch(entry.name, { finish: false })) await hasty.close(fd);
    await expect(client.finish()).rejects.toMatchObject({ code: 'EBUSY' });
    expect(newAgent.services.get(VM_SESSION)).toEqual(['guest-ram', 'iommufd', 'nic']);
    await client.bye();

    // The VMM that does it right gets the same files, and its finish is taken.
    const { vmm: next } = await VmmProcess.retrieve(machine);
    expect(newAgent.services.get(VM_SESSION)).toEqual([]);
    const ring = await checkGuestRing(
      next.guest,
      next.guest.state,
      () => machine.counters(NIC_BDF).drops,
    );
    expect(ring.ok).toBe(true);
  });
});
