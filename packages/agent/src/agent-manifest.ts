// The manifest: what the agent keeps and where, written as JSON into a sealed memfd that crosses
// the live update in the agent's own session. The next agent reads it as untrusted input: every
// field is checked against what `encodeManifest` can write before anything is retrieved.
import { KernelError } from '@liveupdate/machine';
import { AGENT_MAX_FDS } from './agent-wire.js';

/** The manifest format this agent writes and reads. */
export const MANIFEST_VERSION = 1;
/** The agent's own LUO session, which holds the manifest memfd. */
export const AGENT_SESSION = 'luod';
/** The token of the manifest memfd in {@link AGENT_SESSION}. */
export const MANIFEST_TOKEN = 1n;
/** The largest manifest the agent reads. */
export const MANIFEST_MAX_BYTES = 1024 * 1024;
/** The largest `order` a service may declare. */
export const MAX_ORDER = 0x7fff_ffff;
/** The longest name of a stored entry, in UTF-16 code units. */
export const MAX_ENTRY_NAME = 255;

/** One named entry of a service: its fds, as LUO tokens of the service's session, and its order. */
export interface ManifestEntry {
  readonly order: number;
  readonly tokens: readonly number[];
}

/** The manifest: for each service (its session's name), its entries by name. */
export interface Manifest {
  readonly version: number;
  readonly services: ReadonlyMap<string, ReadonlyMap<string, ManifestEntry>>;
}

/**
 * Why `service` cannot be a service name, or `undefined` when it can: it is a LUO session name
 * (1 to 63 UTF-8 bytes, no NUL) other than the agent's own.
 */
export function serviceNameProblem(service: unknown): string | undefined {
  if (typeof service !== 'string') return `is ${describe(service)}, not a string`;
  const bytes = new TextEncoder().encode(service).length;
  if (bytes < 1 || bytes > 63) return `is ${bytes} bytes long (1 to 63)`;
  if (service.includes('\0')) return 'contains NUL';
  if (service === AGENT_SESSION) return `is the agent's own session "${AGENT_SESSION}"`;
  return undefined;
}

/** Why `name` cannot name an entry, or `undefined` when it can (1 to 255 characters). */
export function entryNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return `is ${describe(name)}, not a string`;
  if (name.length < 1 || name.length > MAX_ENTRY_NAME)
    return `is ${name.length} characters long (1 to ${MAX_ENTRY_NAME})`;
  return undefined;
}

/** Why `order` cannot be an order, or `undefined` when it can (an integer 0 to 2^31 - 1). */
export function orderProblem(order: unknown): string | undefined {
  if (typeof order !== 'number' || !Number.isInteger(order) || order < 0 || order > MAX_ORDER)
    return `is ${describe(order)}, not an integer from 0 to ${MAX_ORDER}`;
  return undefined;
}

/** The manifest's bytes: UTF-8 JSON, services and entries in a stable order. */
export function encodeManifest(manifest: Manifest): Uint8Array {
  const services: Record<string, Record<string, { order: number; tokens: number[] }>> = {};
  for (const service of [...manifest.services.keys()].sort()) {
    const entries = manifest.services.get(service)!;
    services[service] = {};
    for (const name of [...entries.keys()].sort()) {
      const { order, tokens } = entries.get(name)!;
      services[service][name] = { order, tokens: [...tokens] };
    }
  }
  return new TextEncoder().encode(JSON.stringify({ version: manifest.version, services }));
}

/**
 * Read a manifest from untrusted bytes. Throws a `KernelError` `EIO` naming the field and
 * its value at the first thing `encodeManifest` could not have written.
 */
export function decodeManifest(bytes: Uint8Array): Manifest {
  const bad = (what: string): never => {
    throw new KernelError('EIO', `agent manifest: ${what}`);
  };
  if (bytes.length > MANIFEST_MAX_BYTES)
    bad(`is ${bytes.length} bytes, over the limit of ${MANIFEST_MAX_BYTES}`);
  let root: unknown;
  try {
    root = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    bad(`is not UTF-8 JSON (${String(error)})`);
  }
  if (!isObject(root)) return bad(`is ${describe(root)}, not an object`);
  extraKeys(root, ['version', 'services'], 'the root', bad);
  if (root.version !== MANIFEST_VERSION)
    bad(`version is ${describe(root.version)}; this agent reads version ${MANIFEST_VERSION}`);
  if (!isObject(root.services)) return bad(`services is ${describe(root.services)}, not an object`);
  const services = new Map<string, Map<string, ManifestEntry>>();
  for (const [service, entries] of Object.entries(root.services)) {
    const where = `services[${JSON.stringify(service)}]`;
    const serviceProblem = serviceNameProblem(service);
    if (serviceProblem) bad(`the service name ${where} ${serviceProblem}`);
    if (!isObject(entries)) return bad(`${where} is ${describe(entries)}, not an object`);
    const byName = new Map<string, ManifestEntry>();
    const tokensSeen = new Set<number>();
    for (const [name, entry] of Object.entries(entries)) {
      const at = `${where}[${JSON.stringify(name)}]`;
      const nameProblem = entryNameProblem(name);
      if (nameProblem) bad(`the entry name ${at} ${nameProblem}`);
      if (!isObject(entry)) return bad(`${at} is ${describe(entry)}, not an object`);
      extraKeys(entry, ['order', 'tokens'], at, bad);
      const problem = orderProblem(entry.order);
      if (problem) bad(`${at}.order ${problem}`);
      const tokens = entry.tokens;
      if (!Array.isArray(tokens) || tokens.length < 1 || tokens.length > AGENT_MAX_FDS)
        return bad(`${at}.tokens is ${describe(tokens)}, not 1 to ${AGENT_MAX_FDS} tokens`);
      tokens.forEach((token: unknown, index) => {
        if (typeof token !== 'number' || !Number.isSafeInteger(token) || token < 1)
          bad(`${at}.tokens[${index}] is ${describe(token)}, not a token from 1 to 2^53 - 1`);
        if (tokensSeen.has(token as number))
          bad(`${at}.tokens[${index}] is ${token as number}, a token used twice in ${where}`);
        tokensSeen.add(token as number);
      });
      byName.set(name, { order: entry.order as number, tokens: tokens as number[] });
    }
    services.set(service, byName);
  }
  return { version: MANIFEST_VERSION, services };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function extraKeys(
  value: Record<string, unknown>,
  allowed: readonly string[],
  where: string,
  bad: (what: string) => never,
): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) bad(`${where} has the unknown field ${JSON.stringify(key)}`);
  }
}

/** A value for an error message: JSON, cut short. */
function describe(value: unknown): string {
  const text = value === undefined ? 'absent' : JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
