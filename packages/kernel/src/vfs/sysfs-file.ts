import { KernelError, SEEK_CUR, SEEK_END, SEEK_SET } from '@liveupdate/machine';
import type { File, FileOperations } from './file.js';

/**
 * What a sysfs attribute file shows (`show()` of a `kobj_attribute`): its whole text, made when
 * the file is opened, so one open file reads a consistent snapshot however it is read in pieces.
 */
export type SysfsShow = () => string;

const encoder = new TextEncoder();

/** The operations of a read-only attribute file showing `show()`. */
export function sysfsFileOperations(show: SysfsShow): FileOperations {
  const text = (file: File): Uint8Array => file.privateData as Uint8Array;
  return {
    open(file) {
      file.privateData = encoder.encode(show());
    },
    read(file, count, offset) {
      return text(file).slice(offset, offset + count);
    },
    llseek(file, offset, whence) {
      if (whence !== SEEK_SET && whence !== SEEK_CUR && whence !== SEEK_END) {
        throw new KernelError('EINVAL', `${file.path}: bad whence ${whence}`);
      }
      const base = whence === SEEK_SET ? 0 : whence === SEEK_CUR ? file.pos : text(file).length;
      const pos = base + offset;
      if (pos < 0) throw new KernelError('EINVAL', `${file.path}: cannot seek to ${pos}`);
      return pos;
    },
  };
}
