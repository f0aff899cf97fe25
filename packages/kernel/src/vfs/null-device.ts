import type { FileOperations } from './file.js';

/** `/dev/null`: reads see end of file, writes are swallowed whole. */
export const nullDeviceOperations: FileOperations = {
  read: () => new Uint8Array(0),
  write: (_file, data) => data.length,
  llseek: () => 0,
};
