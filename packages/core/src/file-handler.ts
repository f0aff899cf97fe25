import type { File, FrameRange } from '@liveupdate/kernel';

/**
 * Size of `compatible` in `luo_file_ser`, including the NUL (`LIVEUPDATE_HNDL_COMPAT_LENGTH`): a
 * handler's compatible string is 1 to 47 bytes of UTF-8.
 */
export const LIVEUPDATE_HNDL_COMPAT_LENGTH = 48;

/**
 * What an identity returned by {@link FileHandler.getId} may be: any value usable as a `Map` key.
 * Two files with the same id are the same file for LUO (memfd: the inode).
 */
export type FileId = unknown;

/**
 * The session a handler op runs in (kernel: `args->session`), for files that depend on other files
 * of the same session — a vfio device on its iommufd, an iommufd on the memfds it maps. Valid only
 * during the op it was given to.
 */
export interface LiveUpdateFileSession {
  /**
   * The session's name for messages: its text when it is UTF-8, else its bytes with `\xNN`
   * escapes (a name is 1..63 bytes of any value; see `LiveUpdateSession.nameBytes`).
   */
  readonly name: string;
  /** Whether the session came from the previous kernel (incoming) or is being preserved. */
  readonly incoming: boolean;
  /**
   * `liveupdate_get_token_outgoing()`: the token under which `file` is preserved in this
   * (outgoing) session. A file counts as preserved when a handler that takes it (`canPreserve`)
   * gives it the same identity (`getId`) as a preserved file, as for the double-preservation check:
   * a `dup`ed fd or a reopened memfd is the same file. `ENOENT` when it is not preserved in this
   * session (in another session, not at all, or this session is incoming).
   *
   * Use it in `preserve` (a dependency preserved earlier) or in `freeze` (order-independent).
   */
  getTokenOutgoing(file: File): bigint;
  /**
   * `liveupdate_get_file_incoming()`: in the new kernel, the file of `token` in this (incoming)
   * session, retrieving it now (its handler's `retrieve`) if nobody has. `ENOENT` for a token the
   * session does not have (or an outgoing session), the sticky errno of a failed retrieve, and
   * `EDEADLK` when files ask for each other in a cycle from their `retrieve`.
   *
   * Safe from inside another file's `retrieve`, `canFinish` or `finish`: it takes only that
   * file's lock, not the session's. The file is LUO's reference, valid until the session finishes;
   * take your own (`vfs.fget`) to keep it longer.
   */
  getFileIncoming(token: bigint): Promise<File>;
}

/**
 * The arguments of every handler op (kernel: `struct liveupdate_file_op_args`). One object per
 * call; ops read their inputs from it and write their outputs into it.
 */
export interface FileOpArgs {
  /** The handler being called. */
  readonly handler: FileHandler;
  /**
   * The format of the file's serialized state (its `luo_file_ser.compatible`). In `preserve` and
   * `freeze`: the one to write, which LUO picks as the first of the handler's
   * {@link FileHandler.writes} that the kernel loaded with `kexec_load` reads (the handler's own
   * `compatible` when no kernel is loaded yet). It can differ between `preserve` and `freeze`
   * when another kernel was loaded in between: `freeze` then rewrites the state in the new
   * format. In `unpreserve` and `unfreeze`: the one last asked for. In the next kernel
   * (`preservedFrames`, `retrieve`, `canFinish`, `finish`): the one it was written in, one of
   * the handler's {@link FileHandler.reads}.
   */
  readonly compatible: string;
  /**
   * The session of the file (kernel: `args->session`); see {@link LiveUpdateFileSession}. Given
   * to every op but `canPreserve` and `getId`.
   */
  readonly session: LiveUpdateFileSession;
  /**
   * The file. Input to `preserve`, `unpreserve`, `freeze`, `unfreeze`, `canFinish` and `finish`
   * (`null` in the last two when the file was never retrieved). Output of `retrieve`, which sets
   * it to a new file holding one reference that LUO takes over.
   */
  file: File | null;
  /**
   * The handler's handle to its preserved state: by convention the physical address of its
   * serialized structure in KHO-preserved memory (kernel: `serialized_data`, a `u64`). Output of
   * `preserve`, which must set it; `freeze` may rewrite it; input to every other op. It is the
   * only thing of the handler's that crosses the kexec (as `luo_file_ser.data`).
   */
  serializedData: bigint;
  /**
   * Runtime state of this kernel only (kernel: `private_data`): set by `preserve`, given to
   * `unpreserve`, `freeze` and `unfreeze`, and never handed over. `unpreserve` must release it.
   */
  privateData: unknown;
  /**
   * For `canFinish` and `finish`: 0 when the file was never retrieved, 1 when it was, and the
   * negative errno of a failed `retrieve`.
   */
  readonly retrieveStatus: number;
}

/**
 * A file handler: how LUO preserves one kind of file across a live update (kernel:
 * `struct liveupdate_file_handler` with its `liveupdate_file_ops`). Register it from a kernel
 * module with `registerFileHandler(ctx, handler)`.
 *
 * Ops may be async. An op signals failure by throwing a `KernelError`; its errno reaches
 * userspace unchanged. Any other throw becomes `EIO` with the cause in the kernel log. A throw
 * from an op that returns nothing in the kernel (`unpreserve`, `unfreeze`, `finish`) is logged and
 * LUO carries on. LUO serializes the ops of one file: a session's lock is held around `preserve`
 * and `unpreserve`, the file's own lock around the others.
 *
 * The handler owns everything behind `serializedData`. Keep state that must cross the kexec
 * there, in KHO-preserved memory, never in module variables or closures: the next kernel imports
 * the handler's module afresh in a new worker.
 */
export interface FileHandler {
  /**
   * Names the handler and the layout of its preserved data, versioned (`"memfd-v2"`): 1 to 47
   * bytes, unique among registered handlers. After a kexec, a preserved file goes to the handler
   * whose `compatible` matches exactly, so change it whenever the serialized layout changes.
   */
  readonly compatible: string;

  /**
   * The formats `retrieve` (and `finish`, `preservedFrames`) accepts, newest first; a preserved
   * file goes to the handler whose `reads` lists its compatible exactly. Default
   * `[compatible]`. Must include `compatible`, and no two registered handlers may read the same
   * format. List them in the module's `reads` too (see `handoverReads`): that is how a kernel
   * about to kexec into this one learns what it can read.
   */
  readonly reads?: readonly string[];

  /**
   * The formats `preserve` and `freeze` can write, newest first; `writes[0]` must be
   * `compatible`. Default `[compatible]`. LUO writes the first one the next kernel reads
   * (`args.compatible`), so listing an older format here is what makes an update to an older
   * kernel (a rollback) possible; when the next kernel reads none of them, the kexec is refused
   * before the blackout. A handler with more than one must implement `freeze`.
   */
  readonly writes?: readonly string[];

  /**
   * `can_preserve`: whether this handler takes `file`. Called at `PRESERVE_FD` for each handler
   * in registration order; the first `true` wins. Must be cheap and have no side effects, and it
   * answers at once (the kernel's is a plain `bool` function): compare the file's operations or
   * a type tag, do not wait on anything.
   */
  canPreserve(handler: FileHandler, file: File): boolean;

  /**
   * `preserve`: save the file's state into KHO-preserved memory and set `args.serializedData`
   * (and `args.privateData` if needed). Called once at `PRESERVE_FD`, while the workload still
   * runs: do the heavy work here, not in `freeze`. On failure it must undo all it did.
   */
  preserve(args: FileOpArgs): void | Promise<void>;

  /**
   * `unpreserve`: undo `preserve` completely — unpreserve and free what it preserved, release
   * `privateData`. Called when the outgoing session closes before a reboot, files in reverse
   * preservation order.
   */
  unpreserve(args: FileOpArgs): void | Promise<void>;

  /**
   * `freeze` (optional): last update before the kexec, inside `reboot()`, files in preservation
   * order (sessions in creation order); may rewrite `args.serializedData`. Userspace can no longer
   * change the file. Keep it O(1): it runs in the blackout. A throw aborts the reboot, and every
   * file frozen before this one gets `unfreeze`.
   */
  freeze?(args: FileOpArgs): void | Promise<void>;

  /**
   * `unfreeze` (optional): undo `freeze` when a later file's `freeze` failed and the reboot is
   * aborted. Only files whose `freeze` succeeded get it.
   */
  unfreeze?(args: FileOpArgs): void | Promise<void>;

  /**
   * `retrieve`: in the new kernel, rebuild the file from `args.serializedData` and set
   * `args.file`. Called at the first `RETRIEVE_FD` of the token; later calls reuse the file. A
   * failure is sticky: the token keeps returning that errno.
   */
  retrieve(args: FileOpArgs): void | Promise<void>;

  /**
   * `can_finish` (optional): whether the session may finish. Called at `FINISH` (or close of a
   * retrieved session) for every file before any `finish`; one `false` refuses with `EBUSY` and
   * nothing changes.
   */
  canFinish?(args: FileOpArgs): boolean | Promise<boolean>;

  /**
   * `finish`: LUO is done with the file. Release the preserved state still held — for a file never
   * retrieved (`args.file === null`) that means freeing all its preserved memory. Files in
   * reverse order. After it, the retrieved file is an ordinary file.
   */
  finish(args: FileOpArgs): void | Promise<void>;

  /**
   * `preserved_frames` (optional; an extension of this project, upstream has no such op): every
   * physical frame the file's serialized state claims — what its `retrieve`, or its `finish` if
   * never retrieved, would take from KHO: its own serialized structures and the memory they list.
   *
   * Called once for every incoming file when LUO deserializes, at the first open of
   * `/dev/liveupdate` after a live update: sessions and their files in serialized order, all of
   * them before any `retrieve`, `args.file` `null`. It must only read the handover: restore,
   * allocate or change nothing, and check what it reads as `retrieve` would.
   *
   * LUO then checks that no frame is claimed by two files, in one session or in two (memfd's
   * writer, for one, never lists a frame twice): every file that shares a frame with another
   * fails with a sticky `EIO` — its `retrieve` is never called, and `finish` sees the negative
   * errno in `retrieveStatus` and must leave the frames alone — and the kernel log names both
   * sessions and tokens and the range. Other files are unaffected. A throw fails this file alone
   * the same way with the thrown errno (any other throw: `EIO`); so does a result that is not an
   * array of ranges of whole frames in RAM. A handler without the op is left out of the check.
   */
  preservedFrames?(args: FileOpArgs): readonly FrameRange[] | Promise<readonly FrameRange[]>;

  /**
   * `get_id` (optional): the file's identity for the check against preserving the same file
   * twice (`EBUSY`). Default: the file object itself. memfd returns the inode, so `dup`ed fds and
   * reopened files count as the same file.
   */
  getId?(file: File): FileId;
}

/**
 * Declare a handler with full type inference. Returns `handler` unchanged.
 *
 * @example
 * ```ts
 * export const counterHandler = defineHandler({
 *   compatible: 'counter-v1',
 *   canPreserve: (_handler, file) => file.fops === counterOperations,
 *   preserve(args) { ... args.serializedData = BigInt(phys); },
 *   unpreserve(args) { ... },
 *   retrieve(args) { ... args.file = newFile; },
 *   finish(args) { ... },
 * });
 * ```
 */
export function defineHandler<H extends FileHandler>(handler: H): H {
  return handler;
}

/** `handler.reads`, or its default `[handler.compatible]`. */
export function handlerReads(handler: FileHandler): readonly string[] {
  return handler.reads ?? [handler.compatible];
}

/** `handler.writes`, or its default `[handler.compatible]`. */
export function handlerWrites(handler: FileHandler): readonly string[] {
  return handler.writes ?? [handler.compatible];
}

/**
 * The handover formats a module's handlers and FLBs read, for its `defineModule({ reads })`: the
 * note of the kernel image that tells a kernel about to kexec into it what it can take.
 *
 * @example
 * ```ts
 * export default defineModule({
 *   name: 'counter',
 *   reads: handoverReads(counterHandler),
 *   init(ctx) { registerFileHandler(ctx, counterHandler); },
 * });
 * ```
 */
export function handoverReads(
  ...items: readonly (FileHandler | { readonly compatible: string; readonly reads?: undefined })[]
): string[] {
  const out: string[] = [];
  for (const item of items) {
    for (const c of 'canPreserve' in item ? handlerReads(item) : [item.compatible]) {
      if (!out.includes(c)) out.push(c);
    }
  }
  return out;
}
