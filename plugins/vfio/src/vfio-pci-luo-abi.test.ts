import { describe, expect, it } from 'vitest';
import { VFIO_PCI_LUO_COMPATIBLE, vfioPciCoreDeviceSer } from './vfio-pci-luo-abi.js';

describe('the vfio-pci-v1 ABI', () => {
  it('names the layout vfio-pci-v1', () => {
    expect(VFIO_PCI_LUO_COMPATIBLE).toBe('vfio-pci-v1');
  });

  it('lays out struct vfio_pci_core_device_ser in 16 bytes as documented', () => {
    expect(vfioPciCoreDeviceSer.size).toBe(16);
    expect(vfioPciCoreDeviceSer.offsets).toEqual({
      domain: 0,
      bdf: 4,
      reserved: 6,
      iommufdToken: 8,
    });
    const value = { domain: 0x0001_0002, bdf: 0x0018, reserved: 0, iommufdToken: 0x1_0000_0007n };
    const bytes = vfioPciCoreDeviceSer.encode(value);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    expect(view.getUint32(0, true)).toBe(0x0001_0002);
    expect(view.getUint16(4, true)).toBe(0x0018);
    expect(view.getUint16(6, true)).toBe(0);
    expect(view.getBigUint64(8, true)).toBe(0x1_0000_0007n);
    expect(vfioPciCoreDeviceSer.decode(bytes)).toEqual(value);
  });
});
