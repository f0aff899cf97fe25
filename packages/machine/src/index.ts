export * from './boot-protocol.js';
export { ERRNO, isErrnoName, type ErrnoName } from './errno.js';
export * from './fcntl.js';
export { KernelError } from './kernel-error.js';
export { validateKernelImage, type KernelImage } from './kernel-image.js';
export { Machine, type HandoverEvent, type MachineOptions, type MachineState } from './machine.js';
export { MachineHaltedError } from './machine-halted-error.js';
export {
  PAGE_SHIFT,
  PAGE_SIZE,
  PhysicalMemory,
  hex,
  pfnToPhys,
  physToPfn,
  type PhysAddr,
} from './physical-memory.js';
export { Process, type MappedSegment, type MemoryMapping, type SyscallChannel } from './process.js';
export * from './reboot.js';
export { pairSpans, type TimelineEvent, type TimelineSpan } from './timeline.js';
