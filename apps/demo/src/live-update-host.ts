import { LuoAgent } from '@liveupdate/agent';
import {
  LINUX_REBOOT_CMD_KEXEC,
  type KernelImage,
  type Machine,
  type Process,
} from '@liveupdate/machine';
import { CacheProcess, type CacheRetrieveTimings } from './cache-process.js';
import { kexecTimings, type KexecPhases } from './phase-timings.js';
import type { GuestNicState } from './vm-guest-nic.js';
import { NIC_BDF, VmmProcess, type VmRestoreTimings } from './vm-process.js';

/** The NIC's hardware counters, as `machine.counters()` reads them. */
export type NicCounters = ReturnType<Machine['counters']>;

/**
 * What runs on the host that a live update carries over: the agent, the one process that opens
 * `/dev/liveupdate`, and the services that keep their files with it (either may be absent).
 */
export interface HostServices {
  /** The agent of the running kernel (`LuoAgent.start` on a cold boot, else the last update's). */
  readonly agent: LuoAgent;
  readonly cache?: CacheProcess;
  readonly vmm?: VmmProcess;
}

/** What the NIC did during one live update, from the machine's DMA counters and the guest's ring. */
export interface VmDmaReport {
  /** Packets the NIC's source produced: delivered + dropped (`machine.counters()`). */
  readonly packetsSent: number;
  /** Packets the NIC wrote into the ring in guest RAM (`packets` counter). */
  readonly packetsDelivered: number;
  /** Packets the NIC dropped: ring full, bus mastering off or a fault (`drops` counter). */
  readonly packetsDropped: number;
  /** NIC DMA transactions the IOMMU blocked (`faults` counter). */
  readonly iommuFaults: number;
  /** Most packets the guest found waiting in its ring at one poll (read from the ring). */
  readonly maxRingOccupancy: number;
  /** Packets delivered while the guest was paused: its last poll before the reboot → its first after. */
  readonly deliveredDuringBlackout: number;
}

/** The VM's side of one live update. */
export interface VmLiveUpdate {
  /** The old kernel's `reboot` span begins → the new VMM's guest has polled its ring. */
  readonly blackoutMs: number;
  /** The guest paused (just before the reboot) → the guest polled again: its own downtime. */
  readonly guestPausedMs: number;
  /** The VMM's stores of guest RAM, iommufd and NIC with the agent, and interrupts off. */
  readonly preserveMs: number;
  /** The new VMM's steps, in order. */
  readonly phases: VmRestoreTimings;
  /** Counted from the VMM's first step of the update (its stores) to the new VMM being done. */
  readonly dma: VmDmaReport;
  /** The guest's driver state (cumulative since the VM booted) right after it resumed. */
  readonly ring: GuestNicState;
  /** The VMM of the new kernel. */
  readonly vmm: VmmProcess;
}

/** The cache's side of one live update. */
export interface CacheUpdateSide {
  /** The old kernel's `reboot` span begins → the new cache process answers its first key. */
  readonly blackoutMs: number;
  readonly preserveMs: number;
  readonly phases: CacheRetrieveTimings;
  readonly firstKeyOk: boolean;
  readonly cacheProcess: CacheProcess;
}

/** What {@link liveUpdateHost} measured. */
export interface HostLiveUpdate {
  readonly from: string;
  readonly to: string;
  /** Machine time at which the old kernel's `reboot` span began. */
  readonly rebootStart: number;
  /** The old kernel's `reboot` span begins → the machine sees the new kernel running. */
  readonly untilKernelRunningMs: number;
  readonly kernelPhases: KexecPhases;
  /** `kexec_load` of the next kernel, before the blackout. */
  readonly kexecLoadMs: number;
  /** The agent's `prepare`, after the services' stores: its manifest written and preserved. */
  readonly agentPrepareMs: number;
  /** The agent of the new kernel, which holds the services' files across the next update. */
  readonly agent: LuoAgent;
  readonly cache?: CacheUpdateSide;
  readonly vm?: VmLiveUpdate;
}

/** A live update made ready, before the blackout: see {@link prepareHostLiveUpdate}. */
export interface PreparedHostLiveUpdate {
  /** The process that loaded `next` and will reboot into it: the agent's, its owner's. */
  readonly updater: Process;
  readonly kexecLoadMs: number;
  readonly agentPrepareMs: number;
  readonly cachePreserveMs: number | undefined;
  readonly vmPreserveMs: number | undefined;
  /** The NIC's counters before the VMM's first store with the agent, when there is a VM. */
  readonly nicAtStart: NicCounters | undefined;
}

/**
 * The steps of a live update before the blackout, while everything runs: each service stores its
 * files with the agent (which preserves them in a LUO session named after the service), the agent
 * prepares (its manifest), then the host loads `next` (`kexec_load`) from the agent's process:
 * whoever kexecs owns the agent, so that no other process needs `/dev/liveupdate`. What a kexec
 * now would hand over can be checked from here on (`LIVEUPDATE_IOCTL_CHECK_KEXEC`).
 */
export async function prepareHostLiveUpdate(
  machine: Machine,
  services: HostServices,
  next: KernelImage,
): Promise<PreparedHostLiveUpdate> {
  const { vmm } = services;
  const nicAtStart = vmm ? machine.counters(NIC_BDF) : undefined;
  vmm?.guest.clearMaxOccupancy();
  const cachePreserveMs = await services.cache?.preserve();
  const vmPreserveMs = await vmm?.preserve();
  let start = performance.now();
  await services.agent.prepare();
  const agentPrepareMs = performance.now() - start;
  const updater = services.agent.process;
  start = performance.now();
  await updater.kexecLoad(next);
  const kexecLoadMs = performance.now() - start;
  return { updater, kexecLoadMs, agentPrepareMs, cachePreserveMs, vmPreserveMs, nicAtStart };
}

/**
 * Live-update the kernel under the host's services to `next` (DESIGN §4): each service stores its
 * files with the agent while it runs, the agent prepares, the host loads the next kernel, the
 * guest pauses, the host reboots; in the new kernel a new agent restores, then the cache fetches
 * its memfd back first, then the VMM its VM.
 */
export async function liveUpdateHost(
  machine: Machine,
  services: HostServices,
  next: KernelImage,
): Promise<HostLiveUpdate> {
  return completeHostLiveUpdate(
    machine,
    services,
    await prepareHostLiveUpdate(machine, services, next),
  );
}

/**
 * The blackout of a prepared live update: the guest pauses, the updater reboots into the loaded
 * kernel, a new agent restores what the old one preserved, and new processes fetch the cache
 * and the VM back from it.
 */
export async function completeHostLiveUpdate(
  machine: Machine,
  services: HostServices,
  prepared: PreparedHostLiveUpdate,
): Promise<HostLiveUpdate> {
  const { vmm } = services;
  const { updater, kexecLoadMs, agentPrepareMs, cachePreserveMs, vmPreserveMs } = prepared;
  const nicCounters = () => (vmm ? machine.counters(NIC_BDF) : undefined);
  const atStart = prepared.nicAtStart;
  await vmm?.guest.pause();
  const pausedAt = machine.now();
  const atPause = nicCounters();
  // Resolves once the new kernel runs; the updater and the old service processes have ended.
  await updater.reboot(LINUX_REBOOT_CMD_KEXEC);
  const start = performance.now();
  let agentRestoreMs = 0;
  const memcachedPort = services.cache?.memcached?.server.port;
  // The cache first, then the VMM; each connects, says hello and fetches (their hello waits in
  // the agent until their files are retrieved).
  const startServices = async () => {
    const cache = services.cache
      ? await CacheProcess.retrieve(
          machine,
          memcachedPort === undefined ? {} : { memcached: { port: memcachedPort } },
        )
      : undefined;
    return { cache, vm: vmm ? await VmmProcess.retrieve(machine) : undefined };
  };
  // They start as soon as the new agent listens, so that their connect and hello overlap the
  // rest of its restore (manifest, sessions); if the restore fails, its error is the one told.
  let started: ReturnType<typeof startServices> | undefined;
  let agent: LuoAgent;
  try {
    agent = await LuoAgent.restore(machine.spawn(), {
      onListening: () => {
        agentRestoreMs = performance.now() - start;
        started = startServices();
        started.catch(() => undefined);
      },
    });
  } catch (error) {
    // The failed restore reset their connections; they end their processes, then it is told.
    await started?.catch(() => undefined);
    throw error;
  }
  const { cache: cacheRetrieved, vm: vmRetrieved } = await (started ?? startServices());
  const atResume = nicCounters();
  const kexec = kexecTimings(machine, machine.bootCount - 1);

  const cache: CacheUpdateSide | undefined = cacheRetrieved && {
    blackoutMs: cacheRetrieved.firstKeyAt - kexec.rebootStart,
    preserveMs: cachePreserveMs!,
    phases: { 'agent-restore': agentRestoreMs, ...cacheRetrieved.timings },
    firstKeyOk: cacheRetrieved.firstKeyOk,
    cacheProcess: cacheRetrieved.cacheProcess,
  };
  const vm: VmLiveUpdate | undefined = vmRetrieved &&
    atStart &&
    atPause &&
    atResume && {
      blackoutMs: vmRetrieved.resumedAt - kexec.rebootStart,
      guestPausedMs: vmRetrieved.resumedAt - pausedAt,
      preserveMs: vmPreserveMs!,
      phases: vmRetrieved.timings,
      dma: {
        packetsSent: atResume.packets + atResume.drops - (atStart.packets + atStart.drops),
        packetsDelivered: atResume.packets - atStart.packets,
        packetsDropped: atResume.drops - atStart.drops,
        iommuFaults: atResume.faults - atStart.faults,
        maxRingOccupancy: vmRetrieved.vmm.guest.state.maxOccupancy,
        deliveredDuringBlackout: atResume.packets - atPause.packets,
      },
      ring: vmRetrieved.vmm.guest.state,
      vmm: vmRetrieved.vmm,
    };
  return {
    from: kexec.from,
    to: kexec.to,
    rebootStart: kexec.rebootStart,
    untilKernelRunningMs: kexec.running - kexec.rebootStart,
    kernelPhases: kexec.phases,
    kexecLoadMs,
    agentPrepareMs,
    agent,
    ...(cache && { cache }),
    ...(vm && { vm }),
  };
}
