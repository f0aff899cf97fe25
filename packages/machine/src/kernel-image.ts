import { KernelError } from './kernel-error.js';

/**
 * What `machine.boot()` and `kexec_load` take: the kernel to run and the boot parameters it gets.
 *
 * The machine knows nothing about kernels beyond this: it starts `entry` in a fresh worker and
 * hands it the RAM, `version`, `cmdline` and `modules`. `@liveupdate/kernel`'s
 * `createKernelImage()` builds one for its own kernel.
 */
export interface KernelImage {
  /** `file:` URL of the kernel's worker entry point. */
  readonly entry: string;
  /** The kernel version string (`uname -r`). */
  readonly version: string;
  /** The kernel command line, e.g. `"kho=on page_poison=on"`. */
  readonly cmdline: string;
  /**
   * Module specifiers the kernel imports and initializes in this order. Bare specifiers
   * (`"@acme/handler"`) are resolved from {@link moduleBase}; `file:` URLs and absolute paths are
   * used as they are.
   */
  readonly modules: readonly string[];
  /** `file:` URL that bare module specifiers are resolved from (like `import.meta.url`). */
  readonly moduleBase: string;
  /**
   * Whether the kernel's worker rehearses a live update when the image is loaded, before it boots:
   * see `createKernelImage({ rehearse })` of `@liveupdate/kernel`. Default `false`.
   */
  readonly rehearse?: boolean;
}

/**
 * Validates a kernel image received from untrusted code (a process's `kexec_load`) and returns a
 * plain copy. Throws `EINVAL` naming the bad field.
 */
export function validateKernelImage(image: unknown): KernelImage {
  if (typeof image !== 'object' || image === null) {
    throw new KernelError('EINVAL', 'kernel image must be an object');
  }
  const record = image as Record<string, unknown>;
  const str = (key: string, nonEmpty: boolean): string => {
    const value = record[key];
    if (typeof value !== 'string' || (nonEmpty && value.length === 0)) {
      throw new KernelError(
        'EINVAL',
        `kernel image: ${key} must be a ${nonEmpty ? 'non-empty ' : ''}string`,
      );
    }
    return value;
  };
  const modules = record.modules;
  if (!Array.isArray(modules) || !modules.every((m) => typeof m === 'string' && m.length > 0)) {
    throw new KernelError('EINVAL', 'kernel image: modules must be an array of module specifiers');
  }
  if (record.rehearse !== undefined && typeof record.rehearse !== 'boolean') {
    throw new KernelError('EINVAL', 'kernel image: rehearse must be a boolean when given');
  }
  const entry = str('entry', true);
  if (!entry.startsWith('file:')) {
    throw new KernelError('EINVAL', `kernel image: entry must be a file: URL, got ${entry}`);
  }
  return {
    entry,
    version: str('version', true),
    cmdline: str('cmdline', false),
    modules: [...(modules as string[])],
    moduleBase: str('moduleBase', true),
    ...(record.rehearse === true ? { rehearse: true } : {}),
  };
}
