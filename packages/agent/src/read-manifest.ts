// The next kernel's agent reads the manifest memfd out of its session: the memfd must still be
// sealed as the writer left it before its bytes are decoded (decodeManifest checks those).
import type { LiveUpdateDevice, LiveUpdateSession } from '@liveupdate/core';
import {
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  KernelError,
  type Process,
} from '@liveupdate/machine';
import { asKernelError, messageOf } from './agent-errors.js';
import {
  AGENT_SESSION,
  MANIFEST_MAX_BYTES,
  MANIFEST_TOKEN,
  decodeManifest,
  type Manifest,
} from './agent-manifest.js';

/** The seals of the manifest memfd: nothing may change it, nor its seals. */
export const MANIFEST_SEALS = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

/** What {@link readManifest} read, and the session it read it from, still open. */
export interface ReadManifest {
  readonly manifest: Manifest;
  /**
   * Finish the session `luod` and close it and the manifest's fd. Its caller may do it later,
   * off the path a service waits on: nothing in the session is needed once the manifest is read.
   */
  readonly release: () => Promise<void>;
}

/**
 * Retrieve `luod`, read its manifest and check it; on any failure nothing stays open. On success
 * the session stays open until the caller's `release`.
 */
export async function readManifest(
  process: Process,
  device: LiveUpdateDevice,
): Promise<ReadManifest> {
  let session: LiveUpdateSession;
  try {
    session = await device.retrieveSession(AGENT_SESSION);
  } catch (error) {
    const kernelError = asKernelError(error);
    if (kernelError.code === 'ENOENT')
      throw new KernelError('ENOENT', `no session "${AGENT_SESSION}": no agent preserved anything`);
    throw new KernelError(
      kernelError.code,
      `session "${AGENT_SESSION}": ${messageOf(kernelError)}`,
    );
  }
  let fd = -1;
  try {
    fd = await session.retrieveFd(MANIFEST_TOKEN);
    const manifest = decodeManifest(await readSealed(process, fd));
    const manifestFd = fd;
    return {
      manifest,
      release: async () => {
        try {
          await session.finish();
        } finally {
          await process.close(manifestFd).catch(() => undefined);
          await session.close();
        }
      },
    };
  } catch (error) {
    if (fd >= 0) await process.close(fd).catch(() => undefined);
    await session.close();
    throw error;
  }
}

/** Bytes read at a time: a manifest smaller than this is read in one `pread`. */
const READ_CHUNK = 64 * 1024;

/**
 * The bytes of the manifest memfd `fd`, once its seals say they cannot change. The memfd cannot
 * grow (`F_SEAL_GROW`), so a read shorter than asked is its end, as for any regular file: a
 * manifest under {@link READ_CHUNK} bytes costs one `pread`, sent beside the `F_GET_SEALS` (no
 * byte is used before the seals are checked).
 */
async function readSealed(process: Process, fd: number): Promise<Uint8Array> {
  const [seals, first] = await Promise.allSettled([
    process.fcntl(fd, F_GET_SEALS),
    process.pread(fd, READ_CHUNK, 0),
  ]);
  if (seals.status === 'rejected') throw seals.reason;
  if ((seals.value & MANIFEST_SEALS) !== MANIFEST_SEALS)
    throw new KernelError(
      'EIO',
      `agent manifest: the memfd's seals are 0x${seals.value.toString(16)}, not 0x${MANIFEST_SEALS.toString(16)}: it could have been changed`,
    );
  if (first.status === 'rejected') throw first.reason;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (let chunk = first.value; ; chunk = await process.pread(fd, READ_CHUNK, size)) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > MANIFEST_MAX_BYTES)
      throw new KernelError('EIO', `agent manifest: over ${MANIFEST_MAX_BYTES} bytes`);
    if (chunk.length < READ_CHUNK) break;
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}
