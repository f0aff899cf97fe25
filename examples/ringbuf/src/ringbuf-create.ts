import { KernelError, argUint, type ModuleContext } from '@liveupdate/kernel';
import { hex } from '@liveupdate/machine';
import { RingBuffer } from './ring-buffer.js';
import { openRingBuffer } from './ringbuf-file-operations.js';
import {
  RINGBUF_ALL_FLAGS,
  RINGBUF_CLOEXEC,
  RINGBUF_MAX_SIZE,
  RINGBUF_MIN_SIZE,
  RINGBUF_OVERWRITE,
} from './ringbuf-uapi.js';

/**
 * Register `ringbuf_create(size, flags)`: a new, empty ring buffer of `size` bytes; returns its
 * fd. `EINVAL` for an unknown flag or a size that is not a power of two of at least 4 KiB,
 * `E2BIG` above {@link RINGBUF_MAX_SIZE}, `ENOMEM` when memory runs out.
 */
export function registerRingbufCreate(ctx: ModuleContext): void {
  ctx.syscalls.register('ringbuf_create', async (sys, size, flags) => {
    const bytes = argUint(size, 'size');
    const bits = argUint(flags ?? 0, 'flags');
    if (bits > 0xffff_ffff || bits & ~RINGBUF_ALL_FLAGS) {
      throw new KernelError('EINVAL', `ringbuf_create: unknown flags ${hex(bits)}`);
    }
    if (bytes < RINGBUF_MIN_SIZE || !Number.isInteger(Math.log2(bytes))) {
      throw new KernelError(
        'EINVAL',
        `ringbuf_create: size ${bytes} is not a power of two of at least ${RINGBUF_MIN_SIZE}`,
      );
    }
    if (bytes > RINGBUF_MAX_SIZE) {
      throw new KernelError('E2BIG', `ringbuf_create: ${bytes} bytes is above ${RINGBUF_MAX_SIZE}`);
    }
    const ring = RingBuffer.allocate(ctx.memory, ctx.pages, bytes, bits & RINGBUF_OVERWRITE);
    const file = openRingBuffer(ctx.vfs, ring);
    try {
      return ctx.vfs.installFd(sys.process, file, { cloexec: (bits & RINGBUF_CLOEXEC) !== 0 });
    } catch (error) {
      await ctx.vfs.fput(file);
      throw error;
    }
  });
}
