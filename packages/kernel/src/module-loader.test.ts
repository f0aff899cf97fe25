import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { KernelError } from '@liveupdate/machine';
import { KernelLog, LOGLEVEL } from './kernel-log.js';
import {
  defineModule,
  isKernelModule,
  type KernelModule,
  type ModuleContext,
} from './kernel-module.js';
import { KernelPanic } from './kernel-panic.js';
import { ModuleLoader, resolveModuleSpecifier } from './module-loader.js';

// The loader imports files, as it does a kernel image's modules. Each file default-exports a value
// the test put in a global registry, so modules are written here with the real error classes.
const dir = mkdtempSync(join(tmpdir(), 'kernel-module-loader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const registry = ((
  globalThis as { __kernelTestModules?: Record<string, unknown> }
).__kernelTestModules ??= {});
let files = 0;

/** A module file whose default export is `value`; every call makes a new file (imports are cached). */
function moduleFile(value: unknown): string {
  const key = `m${files++}`;
  registry[key] = value;
  const path = join(dir, `${key}.mjs`);
  writeFileSync(path, `export default globalThis.__kernelTestModules[${JSON.stringify(key)}];\n`);
  return path;
}

/** A module that records its init and exit calls in `journal`. */
function recordingModule(
  journal: string[],
  name: string,
  options: { initError?: unknown; exitError?: unknown; exit?: false } = {},
): string {
  const module: KernelModule = {
    name,
    init() {
      journal.push(`init:${name}`);
      if (options.initError) throw options.initError;
    },
    ...(options.exit === false
      ? {}
      : {
          exit() {
            journal.push(`exit:${name}`);
            if (options.exitError) throw options.exitError;
          },
        }),
  };
  return moduleFile(defineModule(module));
}

function setup(): {
  loader: ModuleLoader;
  log: KernelLog;
  lines: { level: number; text: string }[];
} {
  const lines: { level: number; text: string }[] = [];
  const log = new KernelLog((message) => {
    if (message.type === 'log') lines.push({ level: message.level, text: message.text });
  }, KernelLog.now());
  return { loader: new ModuleLoader(), log, lines };
}

const contextFor = (module: KernelModule): ModuleContext =>
  ({ name: module.name }) as unknown as ModuleContext;
const base = pathToFileURL(`${dir}/`).href;

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('ModuleLoader', () => {
  it('imports modules, initializes them in image order and leaves out one whose init fails', async () => {
    const { loader, log, lines } = setup();
    const journal: string[] = [];
    await loader.load(
      [
        recordingModule(journal, 'alpha'),
        recordingModule(journal, 'broken', { initError: new Error('no device') }),
        recordingModule(journal, 'gamma'),
      ],
      base,
    );
    expect(journal).toEqual([]);
    expect(loader.loaded).toEqual([]);
    await loader.initAll(contextFor, log);
    expect(journal).toEqual(['init:alpha', 'init:broken', 'init:gamma']);
    expect(loader.loaded).toEqual(['alpha', 'gamma']);
    const errors = lines.filter((line) => line.level === LOGLEVEL.err);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.text).toContain('broken');
    expect(errors[0]!.text).toContain('no device');
  });

  it('gives each module its own context', async () => {
    const { loader, log } = setup();
    const seen: string[] = [];
    const module = (name: string): KernelModule => ({
      name,
      init: (ctx) => void seen.push(ctx.name),
    });
    await loader.load([moduleFile(module('one')), moduleFile(module('two'))], base);
    await loader.initAll(contextFor, log);
    expect(seen).toEqual(['one', 'two']);
  });

  it('lets a kernel panic in init unwind the boot, leaving later modules uninitialized', async () => {
    const { loader, log } = setup();
    const journal: string[] = [];
    const panic = new KernelPanic('module went wrong');
    await loader.load(
      [
        recordingModule(journal, 'panicky', { initError: panic }),
        recordingModule(journal, 'after'),
      ],
      base,
    );
    expect(await failure(loader.initAll(contextFor, log))).toBe(panic);
    expect(journal).toEqual(['init:panicky']);
  });

  it('names the module whose import fails', async () => {
    const { loader } = setup();
    await expect(loader.load([join(dir, 'missing.mjs')], base)).rejects.toThrow(
      /module .*missing\.mjs/,
    );
  });

  it('refuses a default export that is not a defineModule() result', async () => {
    const { loader } = setup();
    const path = moduleFile({ name: 'plain' });
    await expect(loader.load([path], base)).rejects.toThrow(
      /its default export is not a defineModule\(\) result/,
    );
  });

  it('refuses two modules of the same name in one image', async () => {
    const { loader } = setup();
    const journal: string[] = [];
    const paths = [recordingModule(journal, 'dup'), recordingModule(journal, 'dup')];
    await expect(loader.load(paths, base)).rejects.toThrow(
      /a module named dup is already in the image/,
    );
  });

  describe('unload (delete_module)', () => {
    async function loaded(...paths: string[]): Promise<ModuleLoader> {
      const { loader, log } = setup();
      await loader.load(paths, base);
      await loader.initAll(contextFor, log);
      return loader;
    }

    it('runs exit and forgets the module; a second unload gives ENOENT', async () => {
      const journal: string[] = [];
      const loader = await loaded(
        recordingModule(journal, 'removable'),
        recordingModule(journal, 'stays'),
      );
      await loader.unload('removable');
      expect(journal.filter((line) => line.startsWith('exit'))).toEqual(['exit:removable']);
      expect(loader.loaded).toEqual(['stays']);
      await expect(loader.unload('removable')).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(loader.unload('never')).rejects.toMatchObject({ code: 'ENOENT' });
    });

    it('refuses a module without exit with EBUSY', async () => {
      const loader = await loaded(recordingModule([], 'permanent', { exit: false }));
      await expect(loader.unload('permanent')).rejects.toMatchObject({ code: 'EBUSY' });
      expect(loader.loaded).toEqual(['permanent']);
    });

    it('keeps the KernelError thrown by exit, and the module stays loaded', async () => {
      const busy = new KernelError('EBUSY', 'in use');
      const loader = await loaded(recordingModule([], 'busy', { exitError: busy }));
      expect(await failure(loader.unload('busy'))).toBe(busy);
      expect(loader.loaded).toEqual(['busy']);
    });

    it('turns a plain Error from exit into EIO with the original as cause', async () => {
      const stuck = new Error('stuck');
      const loader = await loaded(recordingModule([], 'flaky', { exitError: stuck }));
      const error = await failure(loader.unload('flaky'));
      expect(KernelError.isInstance(error)).toBe(true);
      expect(error).toMatchObject({ code: 'EIO', errno: 5 });
      expect((error as KernelError).message).toContain('stuck');
      expect((error as KernelError).cause).toBe(stuck);
      expect(loader.loaded).toEqual(['flaky']);
    });
  });
});

describe('resolveModuleSpecifier', () => {
  it('keeps file: URLs, turns absolute paths into file: URLs and resolves relative ones against the base', () => {
    expect(resolveModuleSpecifier('file:///opt/m.js', base)).toBe('file:///opt/m.js');
    expect(resolveModuleSpecifier('/opt/mods/m.js', base)).toBe('file:///opt/mods/m.js');
    expect(resolveModuleSpecifier('./m.js', 'file:///opt/image/main.js')).toBe(
      'file:///opt/image/m.js',
    );
    expect(resolveModuleSpecifier('../m.js', 'file:///opt/image/main.js')).toBe('file:///opt/m.js');
  });

  it('resolves a bare package name from the base, as Node would', () => {
    const url = resolveModuleSpecifier('tsyringe', import.meta.url);
    expect(url.startsWith('file:///')).toBe(true);
    expect(url).toContain('/tsyringe/');
  });
});

describe('defineModule', () => {
  it('returns a valid module as it is', () => {
    const module = { name: 'memfd_v1-2', init() {} };
    expect(defineModule(module)).toBe(module);
    expect(isKernelModule(module)).toBe(true);
  });

  it.each([
    ['an empty name', { name: '', init() {} }],
    ['a name with a slash', { name: 'a/b', init() {} }],
    ['a name of 56 characters', { name: 'm'.repeat(56), init() {} }],
    ['no init', { name: 'm' }],
    ['an exit that is not a function', { name: 'm', init() {}, exit: 1 }],
    ['a rehearse without after', { name: 'm', init() {}, rehearse: { before() {} } }],
    ['a rehearse that is not an object', { name: 'm', init() {}, rehearse: () => undefined }],
  ])('refuses %s with a TypeError', (_what, module) => {
    expect(() => defineModule(module as unknown as KernelModule)).toThrow(TypeError);
  });

  it('takes a rehearse of two functions', () => {
    const module = {
      name: 'm',
      init() {},
      rehearse: { before: async () => undefined, after: async () => undefined },
    };
    expect(defineModule(module)).toBe(module);
  });

  it('refuses a value that is not an object', () => {
    expect(() => defineModule(null as unknown as KernelModule)).toThrow(TypeError);
    expect(isKernelModule(null)).toBe(false);
  });
});
