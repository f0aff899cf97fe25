import { injectable } from 'tsyringe';
import { KernelError } from '@liveupdate/machine';
import type { SyscallContext } from '../vfs/file.js';

/**
 * A syscall implementation. Arguments arrive from userspace as they were passed: validate every
 * one (see `syscall-args.ts`). The return value must be structured-cloneable.
 */
export type SyscallHandler = (ctx: SyscallContext, ...args: unknown[]) => unknown;

/** The syscall table: built-in syscalls and those modules add (`memfd_create`, …). */
@injectable()
export class SyscallTable {
  readonly #handlers = new Map<string, SyscallHandler>();

  /** Add a syscall. `EEXIST` when the name is taken. */
  register(name: string, handler: SyscallHandler): void {
    if (this.#handlers.has(name)) throw new KernelError('EEXIST', `syscall ${name} already exists`);
    this.#handlers.set(name, handler);
  }

  unregister(name: string): void {
    this.#handlers.delete(name);
  }

  /** Run syscall `name`. `ENOSYS` when there is none. */
  async dispatch(ctx: SyscallContext, name: string, args: readonly unknown[]): Promise<unknown> {
    const handler = this.#handlers.get(name);
    if (!handler) throw new KernelError('ENOSYS', `no syscall ${name}`);
    return await handler(ctx, ...args);
  }
}
