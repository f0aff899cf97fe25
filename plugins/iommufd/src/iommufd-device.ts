import { O_RDWR, type Process } from '@liveupdate/machine';
import { IOMMUFD_DEVICE_PATH } from './iommufd-module.js';
import {
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_LU_RESTORE,
  IOMMU_HWPT_LU_SET_PRESERVE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAPPINGS,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  U64_MAX,
  iommuDestroy,
  iommuHwptAlloc,
  iommuHwptLuRestore,
  iommuHwptLuSetPreserve,
  iommuIoasAlloc,
  iommuIoasIovaRanges,
  iommuIoasMapFile,
  iommuIoasMapping,
  iommuIoasMappings,
  iommuIoasUnmap,
  iommuIovaRange,
} from './iommufd-uapi.js';

/** What {@link IommufdDevice.mapFile} maps. */
export interface IommufdMapFileOptions {
  /** The memfd's fd in the calling process. */
  readonly fd: number;
  /** Offset in the file, page-aligned; 0 by default. */
  readonly start?: number;
  /** Bytes to map, page-aligned and non-zero. */
  readonly length: number;
  /** Where to map (page-aligned); leave it out to let the kernel choose. */
  readonly iova?: number;
  /** `IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE` by default. */
  readonly prot?: number;
}

/** One mapping of an IOAS, as {@link IommufdDevice.mappings} lists it. */
export interface IommufdMapping {
  readonly iova: number;
  readonly length: number;
  /** Offset in the file. */
  readonly start: number;
  /** `IOMMU_IOAS_MAP_READABLE` / `IOMMU_IOAS_MAP_WRITEABLE` bits. */
  readonly prot: number;
}

/** An inclusive IOVA range. */
export interface IovaRange {
  readonly start: number;
  readonly last: number;
}

/**
 * `/dev/iommu`, opened by a process: a typed client over the iommufd ioctls. Each method is one
 * ioctl; a failure rejects with the kernel's `KernelError`, errno unchanged. Closing the device
 * destroys its objects and their mappings.
 *
 * @example
 * ```ts
 * const iommufd = await IommufdDevice.open(process);
 * const ioas = await iommufd.allocIoas();
 * const memfd = await process.memfdCreate('guest-ram');
 * await process.ftruncate(memfd, 2 * 1024 * 1024);
 * const iova = await iommufd.mapFile(ioas, { fd: memfd, length: 2 * 1024 * 1024 }); // 0
 * await iommufd.unmap(ioas, iova, 2 * 1024 * 1024); // 2097152
 * await iommufd.close();
 * ```
 */
export class IommufdDevice {
  /** The process holding the fd. */
  readonly process: Process;
  /** The fd of `/dev/iommu`. */
  readonly fd: number;

  private constructor(process: Process, fd: number) {
    this.process = process;
    this.fd = fd;
  }

  /** Open `/dev/iommu`: a new iommufd context. `ENOENT` when the iommufd module is not loaded. */
  static async open(process: Process): Promise<IommufdDevice> {
    return new IommufdDevice(process, await process.open(IOMMUFD_DEVICE_PATH, O_RDWR));
  }

  /**
   * Wrap an iommufd fd the process already holds: one retrieved from a LUO session
   * (`LiveUpdateSession.retrieveFd`), or a `dup` of another. No ioctl is issued.
   */
  static fromFd(process: Process, fd: number): IommufdDevice {
    return new IommufdDevice(process, fd);
  }

  /**
   * `IOMMU_HWPT_LU_SET_PRESERVE`: mark the paging HWPT `hwptId` to be preserved under `token`
   * when this iommufd is preserved in a LUO session. `EADDRINUSE` for a token another HWPT of
   * this iommufd has, `ENOENT` for an unknown id, `EINVAL` for an object that is not a paging
   * HWPT, `EBUSY` once the iommufd is preserved.
   */
  async hwptLuSetPreserve(hwptId: number, token: number): Promise<void> {
    const arg = iommuHwptLuSetPreserve.encode({
      size: iommuHwptLuSetPreserve.size,
      hwpt_id: hwptId,
      hwpt_token: token,
    });
    await this.process.ioctl(this.fd, IOMMU_HWPT_LU_SET_PRESERVE, arg);
  }

  /**
   * `IOMMU_HWPT_LU_RESTORE`: on an iommufd retrieved from a LUO session, a HWPT wrapping the
   * restored domain preserved under `token`; returns its id. The HWPT has no IOAS and cannot be
   * changed; destroy it once no device is attached (that frees the restored domain). `ENOENT`
   * for an unknown or already-restored token, `EINVAL` on an iommufd that was not retrieved.
   */
  async hwptLuRestore(token: number): Promise<number> {
    const arg = iommuHwptLuRestore.encode({
      size: iommuHwptLuRestore.size,
      hwpt_token: token,
      hwpt_alloc_flags: 0,
      out_pt_id: 0,
    });
    await this.process.ioctl(this.fd, IOMMU_HWPT_LU_RESTORE, arg);
    return iommuHwptLuRestore.decode(arg).out_pt_id;
  }

  /** `IOMMU_IOAS_ALLOC`: a new, empty IOAS; returns its id. */
  async allocIoas(): Promise<number> {
    const arg = iommuIoasAlloc.encode({ size: iommuIoasAlloc.size, flags: 0, out_ioas_id: 0 });
    await this.process.ioctl(this.fd, IOMMU_IOAS_ALLOC, arg);
    return iommuIoasAlloc.decode(arg).out_ioas_id;
  }

  /**
   * `IOMMU_HWPT_ALLOC`: a paging HWPT on the IOAS `ioasId` for the device object `devId` (as
   * vfio's bind returned it), owning a new IOMMU domain that maps what the IOAS maps. Returns
   * the HWPT's id; the IOAS cannot be destroyed while the HWPT exists.
   */
  async hwptAlloc(devId: number, ioasId: number): Promise<number> {
    const arg = iommuHwptAlloc.encode({
      size: iommuHwptAlloc.size,
      flags: 0,
      dev_id: devId,
      pt_id: ioasId,
      out_hwpt_id: 0,
      __reserved: 0,
      data_type: IOMMU_HWPT_DATA_NONE,
      data_len: 0,
      data_uptr: 0n,
      fault_id: 0,
      __reserved2: 0,
    });
    await this.process.ioctl(this.fd, IOMMU_HWPT_ALLOC, arg);
    return iommuHwptAlloc.decode(arg).out_hwpt_id;
  }

  /**
   * `IOMMU_DESTROY`: destroy the object `id` (an IOAS is unmapped first, a HWPT's domain freed).
   * `EBUSY` for a device object, a HWPT with attached devices or an IOAS with HWPTs.
   */
  async destroy(id: number): Promise<void> {
    await this.process.ioctl(this.fd, IOMMU_DESTROY, iommuDestroy.encode({ size: 8, id }));
  }

  /** `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges the IOAS may map. */
  async iovaRanges(ioasId: number): Promise<IovaRange[]> {
    const room = 4;
    const arg = new Uint8Array(iommuIoasIovaRanges.size + room * iommuIovaRange.size);
    iommuIoasIovaRanges.encodeInto(arg, 0, {
      size: iommuIoasIovaRanges.size,
      ioas_id: ioasId,
      num_iovas: room,
      __reserved: 0,
      allowed_iovas: BigInt(iommuIoasIovaRanges.size),
      out_iova_alignment: 0n,
    });
    await this.process.ioctl(this.fd, IOMMU_IOAS_IOVA_RANGES, arg);
    const { num_iovas } = iommuIoasIovaRanges.decode(arg);
    return Array.from({ length: num_iovas }, (_, i) => {
      const range = iommuIovaRange.decode(arg, iommuIoasIovaRanges.size + i * iommuIovaRange.size);
      return { start: Number(range.start), last: Number(range.last) };
    });
  }

  /**
   * `IOMMU_IOAS_MAP_FILE`: map part of a memfd into the IOAS, pinning its folios until the
   * mapping is unmapped. Returns the IOVA (the given one, or the one the kernel chose).
   */
  async mapFile(ioasId: number, options: IommufdMapFileOptions): Promise<number> {
    const fixed = options.iova !== undefined;
    const arg = iommuIoasMapFile.encode({
      size: iommuIoasMapFile.size,
      flags:
        (options.prot ?? IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE) |
        (fixed ? IOMMU_IOAS_MAP_FIXED_IOVA : 0),
      ioas_id: ioasId,
      fd: options.fd,
      start: BigInt(options.start ?? 0),
      length: BigInt(options.length),
      iova: BigInt(options.iova ?? 0),
    });
    await this.process.ioctl(this.fd, IOMMU_IOAS_MAP_FILE, arg);
    return Number(iommuIoasMapFile.decode(arg).iova);
  }

  /**
   * `IOMMU_IOAS_UNMAP`: unmap the mappings inside `[iova, iova + length)`; without a range, all
   * of them. Returns the bytes unmapped.
   */
  async unmap(ioasId: number, iova?: number, length?: number): Promise<number> {
    const all = iova === undefined || length === undefined;
    const arg = iommuIoasUnmap.encode({
      size: iommuIoasUnmap.size,
      ioas_id: ioasId,
      iova: all ? 0n : BigInt(iova),
      length: all ? U64_MAX : BigInt(length),
    });
    await this.process.ioctl(this.fd, IOMMU_IOAS_UNMAP, arg);
    return Number(iommuIoasUnmap.decode(arg).length);
  }

  /** `IOMMU_IOAS_MAPPINGS` (not upstream): the IOAS's mappings, in IOVA order. */
  async mappings(ioasId: number): Promise<IommufdMapping[]> {
    for (let room = 16; ; room *= 4) {
      const arg = new Uint8Array(iommuIoasMappings.size + room * iommuIoasMapping.size);
      iommuIoasMappings.encodeInto(arg, 0, {
        size: iommuIoasMappings.size,
        ioas_id: ioasId,
        num_mappings: room,
        __reserved: 0,
        mappings: BigInt(iommuIoasMappings.size),
      });
      await this.process.ioctl(this.fd, IOMMU_IOAS_MAPPINGS, arg);
      const count = iommuIoasMappings.decode(arg).num_mappings;
      if (count > room) continue;
      return Array.from({ length: count }, (_, i) => {
        const m = iommuIoasMapping.decode(arg, iommuIoasMappings.size + i * iommuIoasMapping.size);
        return {
          iova: Number(m.iova),
          length: Number(m.length),
          start: Number(m.start),
          prot: m.flags,
        };
      });
    }
  }

  /** Close the fd; the last reference destroys every object and mapping of the context. */
  async close(): Promise<void> {
    await this.process.close(this.fd);
  }
}
