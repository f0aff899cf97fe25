import { copyStructFromUser, copyStructToUser, type StructCodec } from '@liveupdate/core';
import {
  KernelError,
  PAGE_SIZE,
  argFd,
  type File,
  type FileOperations,
  type SyscallContext,
} from '@liveupdate/kernel';
import { hex } from '@liveupdate/machine';
import type { MemfdFileSystem } from '@liveupdate/plugin-memfd';
import { IommufdContext } from './iommufd-context.js';
import { IOAS_IOVA_LAST, IOAS_IOVA_START, type IoasKernel } from './iommufd-ioas.js';
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
  iommuIovaRange,
  iommuIoasUnmap,
} from './iommufd-uapi.js';

/** What the iommufd file operations need of the kernel. */
export interface IommufdKernel extends IoasKernel {
  /** The memfd module's file system, when it is loaded: only memfds can be mapped. */
  readonly memfds: MemfdFileSystem | undefined;
}

type IoctlHandler = (
  ictx: IommufdContext,
  arg: Uint8Array | null,
  sys: SyscallContext,
) => number | Promise<number>;

const MAP_FLAGS = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/** The iommufd context of a `/dev/iommu` file. */
export function iommufdContextOf(file: File): IommufdContext {
  if (!(file.privateData instanceof IommufdContext)) {
    throw new KernelError('EBADF', `${file.path} is not an iommufd`);
  }
  return file.privateData;
}

/**
 * The `file_operations` of `/dev/iommu`: each open is a new {@link IommufdContext}; the ioctls are
 * iommufd's (`IOMMU_*`, see `iommufd-uapi.ts`), any other command is `ENOTTY`; the last reference
 * (fds and device bindings) destroys every object of the context, HWPTs before IOASes.
 */
export function createIommufdFileOperations(kernel: IommufdKernel): FileOperations {
  const ioctls = new Map<number, IoctlHandler>([
    [IOMMU_DESTROY, destroy],
    [IOMMU_HWPT_ALLOC, hwptAlloc],
    [IOMMU_HWPT_LU_SET_PRESERVE, hwptLuSetPreserve],
    [IOMMU_HWPT_LU_RESTORE, hwptLuRestore],
    [IOMMU_IOAS_ALLOC, ioasAlloc],
    [IOMMU_IOAS_IOVA_RANGES, ioasIovaRanges],
    [IOMMU_IOAS_MAP_FILE, (ictx, arg, sys) => ioasMapFile(kernel, ictx, arg, sys)],
    [IOMMU_IOAS_UNMAP, ioasUnmap],
    [IOMMU_IOAS_MAPPINGS, ioasMappings],
  ]);
  return {
    open(file) {
      file.privateData = new IommufdContext(kernel);
    },
    ioctl(file, cmd, arg, sys) {
      const handler = ioctls.get(cmd);
      if (!handler) throw new KernelError('ENOTTY', `iommufd: unknown ioctl ${hex(cmd)}`);
      return handler(iommufdContextOf(file), arg, sys);
    },
    release(file) {
      return iommufdContextOf(file).release();
    },
  };
}

/** `IOMMU_DESTROY`. */
async function destroy(ictx: IommufdContext, arg: Uint8Array | null): Promise<number> {
  const cmd = copyStructFromUser(iommuDestroy, arg);
  await ictx.destroy(cmd.id);
  return 0;
}

/**
 * `IOMMU_HWPT_ALLOC`: a paging HWPT on the IOAS `pt_id` for the device object `dev_id`, with a
 * new IOMMU domain filled with the IOAS's mappings. Checked in the order of `iommufd_hwpt_alloc()`:
 * non-zero reserved fields `EOPNOTSUPP`; `data_len` without a `data_type` `EINVAL`; `dev_id` not
 * a device object `ENOENT`; `pt_id` unknown `ENOENT`, a paging HWPT (a nested HWPT's parent)
 * `EOPNOTSUPP`, any other non-IOAS `EINVAL`; any `flags`, or a `data_type` other than
 * `IOMMU_HWPT_DATA_NONE`, `EOPNOTSUPP` (the machine's IOMMU has no nesting, dirty tracking,
 * PASIDs or fault queues).
 */
function hwptAlloc(ictx: IommufdContext, arg: Uint8Array | null): number {
  const cmd = copyStructFromUser(iommuHwptAlloc, arg);
  checkReserved(cmd.__reserved);
  checkReserved(cmd.__reserved2);
  if ((cmd.data_type === IOMMU_HWPT_DATA_NONE) !== (cmd.data_len === 0)) {
    throw new KernelError(
      'EINVAL',
      `iommufd: HWPT data type ${cmd.data_type} with ${cmd.data_len} bytes of data`,
    );
  }
  ictx.getDevice(cmd.dev_id);
  const pt = ictx.getObject(cmd.pt_id);
  if (pt.type === 'hwpt_paging') {
    throw new KernelError(
      'EOPNOTSUPP',
      `iommufd: nested HWPTs (parent ${cmd.pt_id}) are not supported`,
    );
  }
  if (pt.type !== 'ioas') {
    throw new KernelError('EINVAL', `iommufd: object ${cmd.pt_id} is not an IOAS`);
  }
  if (cmd.flags !== 0) {
    throw new KernelError('EOPNOTSUPP', `iommufd: HWPT alloc flags ${hex(cmd.flags)}`);
  }
  if (cmd.data_type !== IOMMU_HWPT_DATA_NONE) {
    throw new KernelError('EOPNOTSUPP', `iommufd: HWPT data type ${cmd.data_type}`);
  }
  const hwpt = ictx.allocHwptPaging(pt, false);
  copyStructToUser(iommuHwptAlloc, arg!, { ...cmd, out_hwpt_id: hwpt.id });
  return 0;
}

/**
 * `IOMMU_HWPT_LU_SET_PRESERVE`: mark a paging HWPT for preservation under a token unique in this
 * iommufd. `ENOENT` unknown id, `EINVAL` not a paging HWPT, `EADDRINUSE` token in use, `EBUSY`
 * once the iommufd is preserved.
 */
function hwptLuSetPreserve(ictx: IommufdContext, arg: Uint8Array | null): number {
  const cmd = copyStructFromUser(iommuHwptLuSetPreserve, arg);
  ictx.setHwptLuPreserve(cmd.hwpt_id, cmd.hwpt_token);
  return 0;
}

/**
 * `IOMMU_HWPT_LU_RESTORE`: a HWPT object around the restored domain of `hwpt_token`, its id in
 * `out_pt_id`. `EOPNOTSUPP` for any `hwpt_alloc_flags`, `EINVAL` on an iommufd that was not
 * retrieved from a session, `ENOENT` for an unknown or already-restored token.
 */
function hwptLuRestore(ictx: IommufdContext, arg: Uint8Array | null): number {
  const cmd = copyStructFromUser(iommuHwptLuRestore, arg);
  if (cmd.hwpt_alloc_flags !== 0) {
    throw new KernelError('EOPNOTSUPP', `iommufd: HWPT alloc flags ${hex(cmd.hwpt_alloc_flags)}`);
  }
  const hwpt = ictx.restoreHwpt(cmd.hwpt_token);
  copyStructToUser(iommuHwptLuRestore, arg!, { ...cmd, out_pt_id: hwpt.id });
  return 0;
}

/** `IOMMU_IOAS_ALLOC`: `flags` must be 0 (`EOPNOTSUPP`). */
function ioasAlloc(ictx: IommufdContext, arg: Uint8Array | null): number {
  const cmd = copyStructFromUser(iommuIoasAlloc, arg);
  if (cmd.flags !== 0) throw new KernelError('EOPNOTSUPP', `iommufd: IOAS flags ${cmd.flags}`);
  const ioas = ictx.allocIoas();
  copyStructToUser(iommuIoasAlloc, arg!, { ...cmd, out_ioas_id: ioas.id });
  return 0;
}

/**
 * `IOMMU_IOAS_IOVA_RANGES`: one range, every IOVA the machine's IOMMU translates (upstream starts
 * from the whole 64-bit space and narrows it as devices attach; here it is narrowed from the
 * start, so attaching never has to). `EMSGSIZE` when `num_iovas` has no room for it, as upstream;
 * the machine copies an ioctl's argument back only on success, so the needed `num_iovas` is not
 * returned with it (it is always 1).
 */
function ioasIovaRanges(ictx: IommufdContext, arg: Uint8Array | null): number {
  const cmd = copyStructFromUser(iommuIoasIovaRanges, arg);
  checkReserved(cmd.__reserved);
  ictx.getIoas(cmd.ioas_id);
  const ranges = [{ start: BigInt(IOAS_IOVA_START), last: BigInt(IOAS_IOVA_LAST) }];
  if (cmd.num_iovas < ranges.length) {
    throw new KernelError(
      'EMSGSIZE',
      `iommufd: ${ranges.length} ranges do not fit in ${cmd.num_iovas}`,
    );
  }
  writeArray(arg!, cmd.allowed_iovas, iommuIoasIovaRanges, iommuIovaRange, ranges);
  copyStructToUser(iommuIoasIovaRanges, arg!, {
    ...cmd,
    num_iovas: ranges.length,
    out_iova_alignment: BigInt(PAGE_SIZE),
  });
  return 0;
}

/**
 * `IOMMU_IOAS_MAP_FILE`: map `[start, start + length)` of the memfd `fd`. `EOPNOTSUPP` for an
 * unknown flag; `EINVAL` without `READABLE` or `WRITEABLE`, for a file that is not a memfd, a
 * range past the end of the file, or unaligned arguments; `EBADF` for a bad fd; `EEXIST` when a
 * fixed IOVA range overlaps a mapping; `ENOENT` for an unknown IOAS.
 */
function ioasMapFile(
  kernel: IommufdKernel,
  ictx: IommufdContext,
  arg: Uint8Array | null,
  sys: SyscallContext,
): number {
  const cmd = copyStructFromUser(iommuIoasMapFile, arg);
  if (cmd.flags & ~MAP_FLAGS) {
    throw new KernelError('EOPNOTSUPP', `iommufd: unknown map flags ${hex(cmd.flags)}`);
  }
  const prot = cmd.flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE);
  if (prot === 0) throw new KernelError('EINVAL', 'iommufd: map neither readable nor writeable');
  const ioas = ictx.getIoas(cmd.ioas_id);
  const file = sys.process.files.get(argFd(cmd.fd));
  const inode = kernel.memfds?.inodeOf(file);
  if (!inode) throw new KernelError('EINVAL', `iommufd: ${file.path} is not a memfd`);
  const start = safeNumber(cmd.start, 'start');
  const length = safeNumber(cmd.length, 'length');
  if (start + length > inode.size) {
    throw new KernelError(
      'EINVAL',
      `iommufd: ${hex(start)}+${hex(length)} runs past the end of ${file.path} (${hex(inode.size)} bytes)`,
    );
  }
  const fixed = (cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA) !== 0;
  const iova = ioas.mapFile({
    file,
    inode,
    start,
    length,
    iova: fixed ? safeNumber(cmd.iova, 'iova') : undefined,
    prot,
  });
  copyStructToUser(iommuIoasMapFile, arg!, { ...cmd, iova: BigInt(iova) });
  return 0;
}

/**
 * `IOMMU_IOAS_UNMAP`: unmap the mappings inside `[iova, iova + length)`, or all of them with
 * `iova = 0, length = U64_MAX` (which succeeds on an empty IOAS). `length` returns the bytes
 * unmapped. `EINVAL` for a zero length, `EOVERFLOW` when the range wraps, `ENOENT` when a mapping
 * would be split or none is there.
 */
async function ioasUnmap(ictx: IommufdContext, arg: Uint8Array | null): Promise<number> {
  const cmd = copyStructFromUser(iommuIoasUnmap, arg);
  const ioas = ictx.getIoas(cmd.ioas_id);
  let unmapped: number;
  if (cmd.iova === 0n && cmd.length === U64_MAX) {
    unmapped = await ioas.unmapAll();
  } else {
    if (cmd.length === 0n) throw new KernelError('EINVAL', 'iommufd: unmap of 0 bytes');
    const last = cmd.iova + cmd.length - 1n;
    if (last > U64_MAX) {
      throw new KernelError('EOVERFLOW', `iommufd: ${hex(cmd.iova)}+${hex(cmd.length)} wraps`);
    }
    const cap = (value: bigint): number =>
      Number(value > BigInt(IOAS_IOVA_LAST) ? BigInt(IOAS_IOVA_LAST) + 1n : value);
    unmapped = await ioas.unmapRange(cap(cmd.iova), cap(last));
  }
  copyStructToUser(iommuIoasUnmap, arg!, { ...cmd, length: BigInt(unmapped) });
  return 0;
}

/**
 * `IOMMU_IOAS_MAPPINGS` (not upstream): the IOAS's mappings in IOVA order, so tests and tools can
 * see what is mapped. Fills as many entries as `num_mappings` has room for and returns the total
 * in `num_mappings`, so a caller with too little room learns how much it needs.
 */
function ioasMappings(ictx: IommufdContext, arg: Uint8Array | null): number {
  const cmd = copyStructFromUser(iommuIoasMappings, arg);
  checkReserved(cmd.__reserved);
  const { areas } = ictx.getIoas(cmd.ioas_id);
  const entries = areas.slice(0, cmd.num_mappings).map((area) => ({
    iova: BigInt(area.iova),
    length: BigInt(area.length),
    start: BigInt(area.start),
    flags: area.prot,
    __reserved: 0,
  }));
  writeArray(arg!, cmd.mappings, iommuIoasMappings, iommuIoasMapping, entries);
  copyStructToUser(iommuIoasMappings, arg!, { ...cmd, num_mappings: areas.length });
  return 0;
}

/** A `__reserved` field must be 0 (`EOPNOTSUPP`). */
function checkReserved(value: number): void {
  if (value !== 0) throw new KernelError('EOPNOTSUPP', `iommufd: reserved field is ${value}`);
}

/** A u64 argument as a number; beyond what any file or IOVA can reach, `EOVERFLOW`. */
function safeNumber(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new KernelError('EOVERFLOW', `iommufd: ${what} ${hex(value)} is too large`);
  }
  return Number(value);
}

/**
 * `copy_to_user()` of an array to the "user pointer" `offset`: a byte offset into the argument
 * buffer (see `iommufd-uapi.ts`), past the struct `after`. `EFAULT` when it does not fit there.
 */
function writeArray<T>(
  arg: Uint8Array,
  offset: bigint,
  after: StructCodec<unknown>,
  codec: StructCodec<T>,
  values: readonly T[],
): void {
  const bytes = values.length * codec.size;
  if (values.length === 0) return;
  if (offset < BigInt(after.size) || offset + BigInt(bytes) > BigInt(arg.length)) {
    throw new KernelError(
      'EFAULT',
      `iommufd: ${bytes} bytes at user offset ${hex(offset)} do not fit the ${arg.length}-byte argument`,
    );
  }
  values.forEach((value, i) => codec.encodeInto(arg, Number(offset) + i * codec.size, value));
}
