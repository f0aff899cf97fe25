import { KernelError } from '@liveupdate/machine';
import {
  LIVEUPDATE_HNDL_COMPAT_LENGTH,
  handlerReads,
  handlerWrites,
  type FileHandler,
} from './file-handler.js';

const REQUIRED_OPS = ['canPreserve', 'preserve', 'unpreserve', 'retrieve', 'finish'] as const;
const OPTIONAL_OPS = ['freeze', 'unfreeze', 'canFinish', 'getId'] as const;
const utf8 = new TextEncoder();

/**
 * The registered file handlers of this kernel, in registration order (`canPreserve` is asked in
 * that order; the first `true` wins) and by `compatible` (how a preserved file finds its handler
 * after a kexec: exact match only).
 */
export class FileHandlerRegistry {
  readonly #handlers: FileHandler[] = [];

  /** Every handler, in registration order. */
  get handlers(): readonly FileHandler[] {
    return this.#handlers;
  }

  /**
   * `liveupdate_register_file_handler`: `EINVAL` for a bad `compatible` or a missing required op
   * (the message says which), `EEXIST` for a `compatible` already registered.
   */
  register(handler: FileHandler): void {
    checkHandler(handler);
    if (
      this.#handlers.includes(handler) ||
      this.#handlers.some((h) => h.compatible === handler.compatible)
    ) {
      throw new KernelError('EEXIST', `file handler "${handler.compatible}" is already registered`);
    }
    for (const format of handlerReads(handler)) {
      const other = this.byCompatible(format);
      if (other) {
        throw new KernelError(
          'EEXIST',
          `file handler "${handler.compatible}" reads "${format}", which "${other.compatible}" already reads`,
        );
      }
    }
    this.#handlers.push(handler);
  }

  /** Remove `handler`. `ENOENT` when it is not registered. */
  unregister(handler: FileHandler): void {
    const index = this.#handlers.indexOf(handler);
    if (index < 0)
      throw new KernelError(
        'ENOENT',
        `file handler "${String(handler?.compatible)}" is not registered`,
      );
    this.#handlers.splice(index, 1);
  }

  /** The handler that reads exactly this format (its `compatible` or one of its `reads`). */
  byCompatible(compatible: string): FileHandler | undefined {
    return this.#handlers.find((h) => handlerReads(h).includes(compatible));
  }

  /** Every format the registered handlers read. */
  reads(): string[] {
    return this.#handlers.flatMap((h) => handlerReads(h));
  }
}

/** `reads` or `writes`, when given: a non-empty list of distinct valid compatible strings. */
function checkFormats(handler: FileHandler, key: 'reads' | 'writes'): void {
  const list: unknown = handler[key];
  if (list === undefined) return;
  const bad = (why: string): never => {
    throw new KernelError('EINVAL', `file handler "${handler.compatible}": ${key} ${why}`);
  };
  if (!Array.isArray(list) || list.length === 0)
    bad(`must be a non-empty array, found ${JSON.stringify(list)}`);
  const seen = new Set<string>();
  for (const format of list as unknown[]) {
    const length = typeof format === 'string' ? utf8.encode(format).length : -1;
    if (
      length < 1 ||
      length > LIVEUPDATE_HNDL_COMPAT_LENGTH - 1 ||
      (format as string).includes('\0')
    ) {
      bad(
        `holds ${JSON.stringify(format)}, not 1-${LIVEUPDATE_HNDL_COMPAT_LENGTH - 1} bytes without NUL`,
      );
    }
    if (seen.has(format as string)) bad(`lists ${JSON.stringify(format)} twice`);
    seen.add(format as string);
  }
}

/** Validate a handler object from a third party, saying what was expected and what was found. */
function checkHandler(handler: FileHandler): void {
  if (typeof handler !== 'object' || handler === null) {
    throw new KernelError('EINVAL', `a file handler must be an object, got ${String(handler)}`);
  }
  const { compatible } = handler;
  const length = typeof compatible === 'string' ? utf8.encode(compatible).length : -1;
  if (length < 1 || length > LIVEUPDATE_HNDL_COMPAT_LENGTH - 1 || compatible.includes('\0')) {
    throw new KernelError(
      'EINVAL',
      `file handler compatible must be 1-${LIVEUPDATE_HNDL_COMPAT_LENGTH - 1} bytes without NUL, got ${JSON.stringify(compatible)}`,
    );
  }
  checkFormats(handler, 'reads');
  checkFormats(handler, 'writes');
  if (handlerWrites(handler)[0] !== compatible) {
    throw new KernelError(
      'EINVAL',
      `file handler "${compatible}": writes[0] must be its compatible, found ${JSON.stringify(handlerWrites(handler)[0])}`,
    );
  }
  if (!handlerReads(handler).includes(compatible)) {
    throw new KernelError(
      'EINVAL',
      `file handler "${compatible}": reads must include its compatible`,
    );
  }
  if (handlerWrites(handler).length > 1 && typeof handler.freeze !== 'function') {
    throw new KernelError(
      'EINVAL',
      `file handler "${compatible}" writes ${handlerWrites(handler).length} formats, so it must implement freeze() to write the one the next kernel reads`,
    );
  }
  for (const op of REQUIRED_OPS) {
    if (typeof handler[op] !== 'function') {
      throw new KernelError(
        'EINVAL',
        `file handler "${compatible}" must implement ${op}(), found ${typeof handler[op]}`,
      );
    }
  }
  for (const op of OPTIONAL_OPS) {
    if (handler[op] !== undefined && typeof handler[op] !== 'function') {
      throw new KernelError(
        'EINVAL',
        `file handler "${compatible}": ${op} must be a function when given, found ${typeof handler[op]}`,
      );
    }
  }
}
