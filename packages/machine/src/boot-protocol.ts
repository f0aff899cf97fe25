import type { MachineMmio } from './devices/machine-hardware.js';
import type { KernelImage } from './kernel-image.js';

/**
 * The messages between the machine and a kernel worker. This is the whole interface: a kernel
 * receives RAM, its image (version, command line, modules), the machine's MMIO (device registers,
 * which are hardware) and, at boot, the KHO root FDT's physical address. Nothing else from a
 * previous kernel can reach it.
 *
 * @packageDocumentation
 */

/** `workerData` of a kernel worker. */
export interface KernelWorkerData {
  readonly ram: SharedArrayBuffer;
  readonly image: KernelImage;
  readonly mmio: MachineMmio;
}

/** An error crossing the worker boundary. */
export interface WireError {
  readonly code?: string;
  readonly message: string;
}

/** Machine → kernel. */
export type MachineToKernel =
  | { readonly type: 'boot'; readonly khoFdtPhys: number | null }
  | { readonly type: 'spawn'; readonly pid: number }
  | {
      readonly type: 'syscall';
      readonly id: number;
      readonly pid: number;
      readonly name: string;
      readonly args: readonly unknown[];
    }
  | {
      readonly type: 'kexec-load-result';
      readonly id: number;
      readonly error?: WireError;
      /** The loaded image's notes (what it reads), as the image's worker reported them. */
      readonly notes?: Uint8Array;
    };

/** Kernel → machine. */
export type KernelToMachine =
  /**
   * The modules are imported. `notes` is the image's note blob (ELF notes: what the kernel and
   * its modules can read), handed to the kernel that `kexec_load`ed it as bytes.
   */
  | { readonly type: 'loaded'; readonly notes: Uint8Array }
  /** The image could not be loaded (a module failed to import); the worker does nothing more. */
  | { readonly type: 'load-failed'; readonly reason: string }
  | { readonly type: 'running' }
  | {
      readonly type: 'log';
      /** Host wall-clock milliseconds (`performance.timeOrigin + performance.now()`). */
      readonly time: number;
      /** Seconds since this kernel booted, as dmesg prints. */
      readonly uptime: number;
      readonly level: number;
      readonly text: string;
    }
  | {
      readonly type: 'trace';
      readonly time: number;
      readonly name: string;
      /** `B`egin / `E`nd of a span, or an `i`nstant, as in the Chrome trace format. */
      readonly phase: 'B' | 'E' | 'i';
      readonly args?: Readonly<Record<string, string | number | boolean>>;
    }
  | {
      readonly type: 'syscall-result';
      readonly id: number;
      readonly value?: unknown;
      readonly error?: WireError;
    }
  | { readonly type: 'kexec-load'; readonly id: number; readonly image: KernelImage }
  | {
      readonly type: 'kexec';
      readonly khoFdtPhys: number | null;
      /** The `syscall` id of the reboot that kexecs: it alone returns 0, in the new kernel. */
      readonly rebootId: number;
    }
  | { readonly type: 'panic'; readonly reason: string };

/**
 * What a kernel worker posts: one message, or several in order as one array. A worker batches its
 * log lines and trace events (which the machine only records) and sends them ahead of its next
 * message the machine must act on, or at the end of its current turn: one `postMessage` instead
 * of one per line.
 */
export type KernelWorkerPost = KernelToMachine | readonly KernelToMachine[];
