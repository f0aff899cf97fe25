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

/** Retrieve `luod`, read its manifest and check it; on any failure nothing stays open. */
export async function readManifest(process: Process, device: LiveUpdateDevice): Promise<Manifest> {
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
  try {
    const fd = await session.retrieveFd(MANIFEST_TOKEN);
    try {
      const seals = await process.fcntl(fd, F_GET_SEALS);
      if ((seals & MANIFEST_SEALS) !== MANIFEST_SEALS)
        throw new KernelError(
          'EIO',
          `agent manifest: the memfd's seals are 0x${seals.toString(16)}, not 0x${MANIFEST_SEALS.toString(16)}: it could have been changed`,
        );
      const chunks: Uint8Array[] = [];
      let size = 0;
      for (;;) {
        const chunk = await process.pread(fd, 64 * 1024, size);
        if (chunk.length === 0) break;
        chunks.push(chunk);
        size += chunk.length;
        if (size > MANIFEST_MAX_BYTES)
          throw new KernelError('EIO', `agent manifest: over ${MANIFEST_MAX_BYTES} bytes`);
      }
      const bytes = new Uint8Array(size);
      let at = 0;
      for (const chunk of chunks) {
        bytes.set(chunk, at);
        at += chunk.length;
      }
      const manifest = decodeManifest(bytes);
      await session.finish();
      return manifest;
    } finally {
      await process.close(fd);
    }
  } finally {
    await session.close();
  }
}
