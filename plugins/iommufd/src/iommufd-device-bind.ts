import { KernelError, type File, type PciDevice } from '@liveupdate/kernel';
import { IommufdContext } from './iommufd-context.js';
import type { IommufdBoundDevice } from './iommufd-device-object.js';

/**
 * `iommufd_device_bind()`: make `device` an object of the iommufd behind `iommufdFile`. This is
 * what vfio calls for `VFIO_DEVICE_BIND_IOMMUFD`; it returns the device object, whose `devId` vfio
 * hands back as `out_devid`. The binding takes a reference on the file (`fget`), so closing the
 * iommufd's fds while the device is bound keeps the context and its objects alive; the reference
 * is dropped by {@link IommufdBoundDevice.unbind}, which then releases the context if it was the
 * last one.
 *
 * @throws `EBADFD` when the file is not an iommufd; `EBUSY` when the device is already bound to
 * an iommufd (DMA ownership is exclusive); `EBADF` when the file was already released.
 *
 * @example
 * ```ts
 * const idev = iommufdDeviceBind(sys.process.files.get(iommufdFd), pci.find('00:04.0'));
 * const hwptId = idev.attach(ioasId); // an auto domain on the IOAS
 * await idev.unbind();
 * ```
 */
export function iommufdDeviceBind(iommufdFile: File, device: PciDevice): IommufdBoundDevice {
  const ictx = iommufdFile.privateData;
  if (!(ictx instanceof IommufdContext)) {
    throw new KernelError('EBADFD', `${iommufdFile.path} is not an iommufd`);
  }
  ictx.kernel.vfs.fget(iommufdFile);
  try {
    return ictx.addDevice(iommufdFile, device);
  } catch (error) {
    // The reference just taken is not the last: the caller's fd holds another.
    void ictx.kernel.vfs.fput(iommufdFile);
    throw error;
  }
}
