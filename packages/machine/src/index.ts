export * from './boot-protocol.js';
export {
  chromeTraceProblems,
  toChromeTrace,
  type ChromeTrace,
  type ChromeTraceEvent,
  type ChromeTraceOptions,
  type TraceCounterSample,
  type TraceTrackSpan,
} from './chrome-trace.js';
export { ERRNO, isErrnoName, type ErrnoName } from './errno.js';
export * from './fcntl.js';
export { KernelError, syscallError } from './kernel-error.js';
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
export {
  Process,
  mappingSlices,
  readMapping,
  writeMapping,
  type MappedSegment,
  type MemoryMapping,
  type RecvmsgOptions,
  type RecvmsgResult,
  type SendmsgOptions,
  type SyscallChannel,
} from './process.js';
export * from './socket.js';
export * from './reboot.js';
export {
  pairSpans,
  spansOf,
  type SpanFilter,
  type TimelineEvent,
  type TimelineSpan,
} from './timeline.js';
export {
  DMA_COPY_COMPLETION_SIZE,
  DMA_COPY_CTRL_ENABLE,
  DMA_COPY_DESC_INTERRUPT,
  DMA_COPY_DESC_SIZE,
  DMA_COPY_DEVICE_ID,
  DMA_COPY_MAX_LENGTH,
  DMA_COPY_REG_BASE_HI,
  DMA_COPY_REG_BASE_LO,
  DMA_COPY_REG_COMPLETED,
  DMA_COPY_REG_CTRL,
  DMA_COPY_REG_HEAD,
  DMA_COPY_REG_SIZE,
  DMA_COPY_REG_TAIL,
  DMA_COPY_STATUS,
  DMA_COPY_VENDOR_ID,
} from './devices/dma-copy-device.js';
export { DMA_COUNTER, type DmaCounterName, type DmaCounters } from './devices/dma-counters.js';
export {
  MachineHardware,
  type DeviceKind,
  type DeviceSpec,
  type MachineMmio,
  type MmioFunction,
} from './devices/machine-hardware.js';
export {
  IOMMU_CONTEXT_DID_SHIFT,
  IOMMU_ENTRY_SIZE,
  IOMMU_FAULT_LOG_ENTRIES,
  IOMMU_FAULT_REASON,
  IOMMU_GCTL_IOTLB_DISABLE,
  IOMMU_IOVA_BITS,
  IOMMU_PT_LEVELS,
  IOMMU_PTE_PAGE_SIZE,
  IOMMU_PTE_READ,
  IOMMU_PTE_WRITE,
  IOMMU_PTES_PER_TABLE,
  IommuRegisters,
  IommuTranslation,
  type IommuFault,
  type IommuFaultReason,
  type TranslationResult,
} from './devices/iommu.js';
export {
  NIC_CTRL_RX_ENABLE,
  NIC_CTRL_RX_IRQ,
  NIC_DESC_DONE,
  NIC_DESC_SIZE,
  NIC_DEVICE_ID,
  NIC_PACKET_SIZE,
  NIC_REG_CTRL,
  NIC_REG_INT_STATUS,
  NIC_REG_STATUS,
  NIC_STATUS_RX_ACTIVE,
  NIC_REG_RX_BASE_HI,
  NIC_REG_RX_BASE_LO,
  NIC_REG_RX_DROPS,
  NIC_REG_RX_HEAD,
  NIC_REG_RX_PACKETS,
  NIC_REG_RX_SIZE,
  NIC_REG_RX_TAIL,
  NIC_VENDOR_ID,
  nicPacket,
  nicPacketChecksum,
} from './devices/nic-device.js';
export * from './devices/pci-function.js';
