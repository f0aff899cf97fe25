import type { File, FileOperations, ModuleContext } from '@liveupdate/kernel';
import { SEEK_CUR, SEEK_SET } from '@liveupdate/machine';
import { ValuePage } from './value-page.js';

/** The char device: every open of it is a new file with an empty value of its own. */
export const VALUE_DEVICE_PATH = '/dev/__NAME__';

/** The file's value, for the file operations, which only get files of this device. */
const valueOf = (file: File): ValuePage => file.privateData as ValuePage;

/**
 * The file operations of `/dev/__NAME__`, for this boot's `ctx`. `open` gives the file a page;
 * `read` and `write` work at the file position (and `pread`/`pwrite` at any offset, which the VFS
 * allows only for a file with `llseek`); `release` frees the page once the last reference is gone.
 */
export function createValueFileOperations(ctx: ModuleContext): FileOperations {
  return {
    open(file) {
      file.privateData = ValuePage.allocate(ctx.memory, ctx.pages);
    },
    read: (file, count, offset) => valueOf(file).read(count, offset),
    write: (file, data, offset) => valueOf(file).write(data, offset),
    // The VFS has checked whence, and refuses a negative result with EINVAL.
    llseek(file, offset, whence) {
      if (whence === SEEK_SET) return offset;
      if (whence === SEEK_CUR) return file.pos + offset;
      return valueOf(file).length + offset; // SEEK_END
    },
    release(file) {
      valueOf(file).free();
    },
  };
}
