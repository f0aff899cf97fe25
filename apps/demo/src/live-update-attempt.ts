import { LiveUpdateDevice, type KexecCheckReport } from '@liveupdate/core';
import {
  KernelError,
  LINUX_REBOOT_CMD_KEXEC,
  type KernelImage,
  type Machine,
} from '@liveupdate/machine';
import {
  completeHostLiveUpdate,
  prepareHostLiveUpdate,
  type HostLiveUpdate,
  type HostServices,
  type NicCounters,
} from './live-update-host.js';
import type { GuestNicState } from './vm-guest-nic.js';
import { NIC_BDF } from './vm-process.js';

/** A `reboot(LINUX_REBOOT_CMD_KEXEC)` the running kernel refused before freezing anything. */
export interface RefusedLiveUpdate {
  /** The running kernel, which stays. */
  readonly from: string;
  /** The loaded kernel it refused to kexec into. */
  readonly to: string;
  /** The errno name `reboot` failed with. */
  readonly code: string;
  /** What the running kernel logged about it: its `kexec: <version> cannot read …` lines. */
  readonly logLines: readonly string[];
  /** The NIC's counters right after `reboot` failed. */
  readonly nicAtRefusal: NicCounters | undefined;
  /** The guest's driver state right after `reboot` failed. */
  readonly guestAtRefusal: GuestNicState | undefined;
}

/** What {@link attemptLiveUpdateHost} did: an update, or a refusal. */
export type HostLiveUpdateAttempt =
  | {
      readonly outcome: 'updated';
      readonly check: KexecCheckReport;
      readonly update: HostLiveUpdate;
    }
  | {
      readonly outcome: 'refused';
      readonly check: KexecCheckReport;
      readonly refusal: RefusedLiveUpdate;
    };

/**
 * A live update that asks first: the services preserve their files and the updater loads `next`,
 * as {@link prepareHostLiveUpdate} does, then asks `LIVEUPDATE_IOCTL_CHECK_KEXEC` whether `next`
 * can read everything a kexec would hand over. If it can, the live update goes on
 * ({@link completeHostLiveUpdate}). If not, the updater reboots anyway, with the guest still
 * running, to show that the kernel refuses by itself (`ENOEXEC`, before its reboot notifiers):
 * the services keep running in the same kernel, and the agent drops its manifest. Throws if `reboot` fails otherwise, or goes on
 * although the check said no.
 */
export async function attemptLiveUpdateHost(
  machine: Machine,
  services: HostServices,
  next: KernelImage,
): Promise<HostLiveUpdateAttempt> {
  const prepared = await prepareHostLiveUpdate(machine, services, next);
  const device = await LiveUpdateDevice.open(prepared.updater);
  let check: KexecCheckReport;
  try {
    check = await device.checkKexec();
  } finally {
    // `/dev/liveupdate` opens exclusively: the new kernel's services need it.
    await device.close();
  }
  if (check.ok) {
    return {
      outcome: 'updated',
      check,
      update: await completeHostLiveUpdate(machine, services, prepared),
    };
  }
  const boot = machine.bootCount - 1;
  const from = machine.kernelVersion ?? 'the running kernel';
  const logBefore = machine.dmesg(boot).split('\n').length;
  try {
    await prepared.updater.reboot(LINUX_REBOOT_CMD_KEXEC);
  } catch (error) {
    if (!KernelError.isInstance(error)) throw error;
    // The kexec did not happen: the agent drops its manifest and takes stores again.
    await services.agent.abortUpdate();
    const { vmm } = services;
    return {
      outcome: 'refused',
      check,
      refusal: {
        from,
        to: check.version,
        code: error.code,
        logLines: machine
          .dmesg(boot)
          .split('\n')
          .slice(logBefore - 1)
          .filter((line) => line.includes(`kexec: ${check.version} cannot read`)),
        nicAtRefusal: vmm ? machine.counters(NIC_BDF) : undefined,
        guestAtRefusal: vmm?.guest.state,
      },
    };
  }
  throw new Error(
    `reboot into ${check.version} went on although CHECK_KEXEC said it cannot read: ${check.problems.join('; ')}`,
  );
}
