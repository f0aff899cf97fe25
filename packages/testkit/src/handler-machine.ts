import { inspect } from 'node:util';
import { KernelError, type MachineOptions } from '@liveupdate/machine';
import { bootForLiveUpdate, type LiveUpdateHarness } from './live-update-harness.js';
import { describeHandler, type HandlerDescription } from './testkit-probes.js';

/** RAM of the machines the conformance suite and the table tester boot, unless told otherwise. */
export const HANDLER_MACHINE_RAM_BYTES = 32 * 1024 * 1024;

/** The machine a handler is checked on: the options the conformance suite and table tester share. */
export interface HandlerMachineOptions {
  /** The `compatible` of the handler under test, e.g. `"memfd-v2"`. */
  readonly handlerCompatible: string;
  /** Modules loaded after LUO in every kernel: the one registering the handler, and its needs. */
  readonly modules: readonly string[];
  /** Where relative and bare module specifiers resolve from; usually `import.meta.url`. */
  readonly moduleBase?: string;
  /** Extra command-line words for every kernel, e.g. your module's parameters. */
  readonly cmdline?: string;
  /** Default {@link HANDLER_MACHINE_RAM_BYTES}. */
  readonly ramBytes?: number;
  /**
   * PCI devices of every machine (see `Machine.create`), for handlers of device files, e.g.
   * `[{ kind: 'nic', bdf: '00:03.0' }]`. Default none.
   */
  readonly devices?: MachineOptions['devices'];
}

export const HANDLER_MACHINE_KEYS = [
  'handlerCompatible',
  'modules',
  'moduleBase',
  'cmdline',
  'ramBytes',
  'devices',
] as const;

/**
 * Check an options object from an author: an object, no keys but `allowed`, and the machine
 * options well-formed. Throws a `TypeError` that says what was expected and what was found.
 */
export function checkOptions(
  caller: string,
  options: unknown,
  allowed: readonly string[],
  functions: { required: readonly string[]; optional?: readonly string[] },
): asserts options is HandlerMachineOptions {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`${caller}: expected an options object, got ${inspect(options)}`);
  }
  const record = options as Record<string, unknown>;
  const unknown = Object.keys(record).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) {
    throw new TypeError(
      `${caller}: unknown option ${unknown.map((k) => JSON.stringify(k)).join(', ')}; the options are ${allowed.join(', ')}`,
    );
  }
  if (typeof record.handlerCompatible !== 'string' || record.handlerCompatible === '') {
    throw new TypeError(
      `${caller}: handlerCompatible must be the compatible string of the handler under test (e.g. "memfd-v2"), got ${inspect(record.handlerCompatible)}`,
    );
  }
  const modules = record.modules;
  if (
    !Array.isArray(modules) ||
    modules.length === 0 ||
    !modules.every((m) => typeof m === 'string')
  ) {
    throw new TypeError(
      `${caller}: modules must list the module specifiers that register the handler (e.g. ['@acme/my-handler']), got ${inspect(modules)}`,
    );
  }
  checkMachineOptions(caller, record);
  for (const key of functions.required) {
    if (typeof record[key] !== 'function') {
      throw new TypeError(`${caller}: ${key} must be a function, got ${inspect(record[key])}`);
    }
  }
  for (const key of functions.optional ?? []) {
    if (record[key] !== undefined && typeof record[key] !== 'function') {
      throw new TypeError(
        `${caller}: ${key} must be a function when given, got ${inspect(record[key])}`,
      );
    }
  }
}

/**
 * The machine options every checker takes: `moduleBase` and `cmdline` strings, `ramBytes`,
 * `devices`.
 */
export function checkMachineOptions(caller: string, record: Record<string, unknown>): void {
  for (const key of ['moduleBase', 'cmdline'] as const) {
    if (record[key] !== undefined && typeof record[key] !== 'string') {
      throw new TypeError(`${caller}: ${key} must be a string, got ${inspect(record[key])}`);
    }
  }
  if (
    record.ramBytes !== undefined &&
    (!Number.isSafeInteger(record.ramBytes) || (record.ramBytes as number) <= 0)
  ) {
    throw new TypeError(
      `${caller}: ramBytes must be a positive integer, got ${inspect(record.ramBytes)}`,
    );
  }
  const devices = record.devices;
  if (
    devices !== undefined &&
    (!Array.isArray(devices) ||
      !devices.every(
        (d) =>
          typeof d === 'object' &&
          d !== null &&
          typeof (d as Record<string, unknown>).kind === 'string' &&
          typeof (d as Record<string, unknown>).bdf === 'string',
      ))
  ) {
    throw new TypeError(
      `${caller}: devices must list PCI devices as { kind, bdf, … } (e.g. [{ kind: 'nic', bdf: '00:03.0' }]), got ${inspect(devices)}`,
    );
  }
}

/**
 * Boot a machine for checking the handler: LUO with fault injection allowed, page poisoning, the
 * testkit module and the author's modules. Fails with a clear message when the handler did not
 * register.
 */
export async function bootHandlerMachine(
  options: HandlerMachineOptions,
): Promise<{ harness: LiveUpdateHarness; handler: HandlerDescription }> {
  const harness = await bootForLiveUpdate({
    modules: options.modules,
    ramBytes: options.ramBytes ?? HANDLER_MACHINE_RAM_BYTES,
    cmdline: `liveupdate.fault_injection=on${options.cmdline ? ` ${options.cmdline}` : ''}`,
    ...(options.moduleBase === undefined ? {} : { moduleBase: options.moduleBase }),
    ...(options.devices === undefined ? {} : { devices: options.devices }),
  });
  try {
    return {
      harness,
      handler: await describeHandler(harness.process, options.handlerCompatible),
    };
  } catch (error) {
    await harness.shutdown();
    if (KernelError.isInstance(error) && error.code === 'ENOENT') {
      throw new Error(
        `${error.message}; check modules and their kernel log:\n${harness.machine.dmesg()}`,
        { cause: error },
      );
    }
    throw error;
  }
}
