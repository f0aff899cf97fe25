// tsyringe needs the Reflect metadata polyfill before any decorated class is evaluated.
import 'reflect-metadata';
export type { BootParams } from './boot-params.js';
export { CommandLine } from './command-line.js';
export {
  IOMMU_HUGE_PAGE_SIZE,
  IOMMU_MAX_DOMAIN_ID,
  IOMMU_SERVICE,
  IommuDriver,
  type IommuDomain,
  type IommuProt,
} from './drivers/iommu-driver.js';
export {
  IOMMU_LU_COMPATIBLE,
  IOMMU_LU_CONTEXT_SIZE,
  IOMMU_LU_DEVICE_SIZE,
  IOMMU_LU_DOMAIN_SIZE,
  IOMMU_LU_HEADER_SIZE,
  IOMMU_LU_SUBTREE,
  IommuHandoverError,
  decodeIommuHandover,
  encodeIommuHandover,
  type IommuHandoverDomain,
  type IommuHandoverState,
} from './drivers/iommu-handover.js';
export {
  PCI_BUS_SERVICE,
  PciBus,
  PciDevice,
  type IrqHandler,
  type PciDriver,
  type PciLiveUpdate,
} from './drivers/pci-bus.js';
export {
  PCI_DEV_SER_SIZE,
  PCI_LU_COMPATIBLE,
  PCI_LU_SUBTREE,
  PCI_SER_HEADER_SIZE,
  PciHandoverError,
  decodePciSer,
  encodePciSer,
  type PciDevSer,
} from './drivers/pci-handover.js';
export { createKernelImage, type KernelImageOptions } from './kernel-image.js';
export { KernelLog, LOGLEVEL, type KernelOutput, type TraceArgs } from './kernel-log.js';
export {
  defineModule,
  type KernelModule,
  type ModuleContext,
  type ModuleRehearsal,
  type ModuleServices,
  type ServiceKey,
} from './kernel-module.js';
export { crc32c } from './crc32c.js';
export {
  KERNEL_NOTE_OWNER,
  KERNEL_NOTES_MAX_BYTES,
  NT_HANDOVER_READS,
  decodeKernelNotes,
  encodeKernelNotes,
  handoverReadsNote,
  readHandoverReads,
  type KernelNote,
} from './kexec-notes.js';
export {
  kexecTarget,
  type KexecCheck,
  type KexecCheckResult,
  type KexecControl,
  type KexecTarget,
} from './kexec-target.js';
export { KERNEL_SUBTREE_FORMATS, kernelOwnNote } from './kernel-formats.js';
export { KernelPanic } from './kernel-panic.js';
export {
  KEXEC_HISTORY_FAILURES_MAX,
  KEXEC_HISTORY_SERVICE,
  KEXEC_HISTORY_SYSFS,
  KexecHistoryService,
  type KexecHistoryStatus,
} from './history/kexec-history.js';
export {
  KEXEC_HISTORY_COMPATIBLE,
  KEXEC_HISTORY_LOG_MAX,
  KEXEC_HISTORY_PHASES,
  KEXEC_HISTORY_SUBTREE,
  KexecHistoryError,
  decodeKexecHistory,
  encodeKexecHistory,
  type KexecHistory,
  type KexecHistoryPhase,
  type PhaseTimes,
} from './history/kexec-history-abi.js';
export {
  KexecHandover,
  type KhoFdtCompatible,
  type KhoFinalizeTarget,
  type KhoStats,
  type KhoSubtree,
} from './kho/kexec-handover.js';
export { KHO_FDT_COMPATIBLE, KHO_FDT_COMPATIBLE_V1 } from './kho/kho-abi.js';
export { sealKhoHandover } from './kho/seal-kho-handover.js';
export {
  KHO_VMALLOC_ALLOC,
  KHO_VMALLOC_CHUNK_ENTRIES,
  KHO_VMALLOC_HUGE_VMAP,
  khoPreserveVmalloc,
  khoReadVmalloc,
  khoRestoreVmalloc,
  khoUnpreserveVmalloc,
  type KhoVmalloc,
  type KhoVmallocContents,
  type KhoVmallocContext,
} from './kho/kho-vmalloc.js';
export {
  KHO_MAP_ENTRIES_PER_PAGE,
  KHO_MAP_HEADER_SIZE,
  KHO_MAP_MAGIC,
  type PreservedFolio,
} from './kho/kho-memory-map.js';
export {
  MAX_PAGE_ORDER,
  PAGE_POISON,
  PageAllocator,
  getOrder,
  type Folio,
  type FrameState,
  type PageStats,
} from './page-allocator.js';
export { ModuleMemory } from './module-memory.js';
export { KernelProcess, type FileMapping } from './process-table.js';
export { RebootNotifierChain, type RebootNotifier } from './reboot-notifier-chain.js';
export { argBytes, argFd, argInt, argPath, argUint } from './syscalls/syscall-args.js';
export { SyscallTable, type SyscallHandler } from './syscalls/syscall-table.js';
export {
  File,
  FILE_STATUS_FLAGS,
  type FileOperations,
  type PhysicalSegment,
  type SyscallContext,
} from './vfs/file.js';
export { EventFd, eventfdCreateFile, eventfdFromFile } from './vfs/event-fd.js';
export { Vfs, type CharDeviceOptions } from './vfs/vfs.js';
export type { SysfsShow } from './vfs/sysfs-file.js';
// The error type and uAPI constants are the machine's; re-exported for module authors.
export { KernelError, ERRNO, PAGE_SIZE, type ErrnoName } from '@liveupdate/machine';
export type { FdTable } from './vfs/fd-table.js';
export type { MemoryLayout } from './memory-layout.js';
export type { FrameRange, KhoIncoming } from './kho/kho-incoming.js';
