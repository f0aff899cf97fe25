import { formatBdf } from '@liveupdate/machine';
import { IommuHandoverError } from './iommu-handover.js';
import type { IommuDriver } from './iommu-driver.js';
import type { PciBus } from './pci-bus.js';

/**
 * Cross-check the two device handovers once both are read: a device crosses a live update only
 * through vfio-pci-v1, which preserves it in the IOMMU (`preserveDevice`) and on the PCI bus
 * (`pci.preserve`) together, so the devices `pci_ser` lists are exactly those the IOMMU blob
 * lists. A device in one and not the other means a damaged blob, and a device doing DMA through
 * tables the kernel cannot vouch for: throws {@link IommuHandoverError} (the kernel panics).
 */
export function checkDeviceHandoverAgreement(pci: PciBus, iommu: IommuDriver): void {
  const inPci = new Set(pci.incomingDevices);
  const inIommu = new Set(iommu.restoredDevices);
  const onlyPci = [...inPci].filter((bdf) => !inIommu.has(bdf)).map(formatBdf);
  const onlyIommu = [...inIommu].filter((bdf) => !inPci.has(bdf)).map(formatBdf);
  if (onlyPci.length === 0 && onlyIommu.length === 0) return;
  const parts = [
    ...(onlyPci.length > 0
      ? [`pci_ser lists ${onlyPci.join(', ')}, the iommu handover does not`]
      : []),
    ...(onlyIommu.length > 0
      ? [`the iommu handover lists ${onlyIommu.join(', ')}, pci_ser does not`]
      : []),
  ];
  throw new IommuHandoverError(`preserved devices disagree: ${parts.join('; ')}`);
}
