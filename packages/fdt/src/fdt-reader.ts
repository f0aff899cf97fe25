import { FdtError, quote } from './fdt-error.js';
import type { FdtNode } from './fdt-node.js';
import { nodePathOf } from './fdt-path.js';
import type { FdtU64Options } from './fdt-value.js';

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The value of property `name` of `node`, or `undefined` if there is none. Returns the tree's own
 * array, not a copy.
 */
export function getProperty(node: FdtNode, name: string): Uint8Array | undefined {
  return node.properties.find((p) => p.name === name)?.value;
}

function requireProperty(node: FdtNode, name: string): Uint8Array {
  const value = getProperty(node, name);
  if (value === undefined) {
    const path = nodePathOf(node);
    throw new FdtError('NOT_FOUND', `node ${path} has no property ${quote(name)}`, { path });
  }
  return value;
}

function badProperty(node: FdtNode, name: string, problem: string): FdtError {
  const path = nodePathOf(node);
  return new FdtError('BAD_PROPERTY', `property ${quote(name)} of node ${path} ${problem}`, {
    path,
  });
}

function requireSize(
  node: FdtNode,
  name: string,
  value: Uint8Array,
  size: number,
  type: string,
): DataView {
  if (value.length !== size) {
    throw badProperty(node, name, `is ${value.length} bytes; a ${type} needs ${size}`);
  }
  return new DataView(value.buffer, value.byteOffset, value.byteLength);
}

/**
 * Reads a property holding one big-endian u32 cell.
 * @throws FdtError `NOT_FOUND` if missing, `BAD_PROPERTY` unless exactly 4 bytes
 */
export function readU32(node: FdtNode, name: string): number {
  const value = requireProperty(node, name);
  return requireSize(node, name, value, 4, 'u32').getUint32(0);
}

/**
 * Reads a property holding one u64: big-endian (two cells) by default, little-endian with
 * `{ littleEndian: true }` (Kexec HandOver's native-endian values on x86).
 * @throws FdtError `NOT_FOUND` if missing, `BAD_PROPERTY` unless exactly 8 bytes
 */
export function readU64(node: FdtNode, name: string, opts: FdtU64Options = {}): bigint {
  const value = requireProperty(node, name);
  return requireSize(node, name, value, 8, 'u64').getBigUint64(0, opts.littleEndian === true);
}

function decodeStrings(node: FdtNode, name: string, value: Uint8Array): string[] {
  if (value[value.length - 1] !== 0) throw badProperty(node, name, 'is not NUL-terminated');
  const strings: string[] = [];
  let start = 0;
  while (start < value.length) {
    const end = value.indexOf(0, start);
    try {
      strings.push(strictUtf8.decode(value.subarray(start, end)));
    } catch {
      throw badProperty(node, name, `has invalid UTF-8 in the string at byte ${start}`);
    }
    start = end + 1;
  }
  return strings;
}

/**
 * Reads a property holding one NUL-terminated UTF-8 string.
 * @throws FdtError `NOT_FOUND` if missing, `BAD_PROPERTY` if empty, not NUL-terminated, holding
 *   more than one string, or not valid UTF-8
 */
export function readString(node: FdtNode, name: string): string {
  const value = requireProperty(node, name);
  if (value.length === 0) throw badProperty(node, name, 'is empty, not a string');
  const strings = decodeStrings(node, name, value);
  if (strings.length !== 1)
    throw badProperty(node, name, `holds ${strings.length} strings, not one`);
  return strings[0] as string;
}

/**
 * Reads a property holding NUL-terminated UTF-8 strings back to back (`compatible`). An empty
 * value reads as `[]`, matching `fdtValue.stringList([])`.
 * @throws FdtError `NOT_FOUND` if missing, `BAD_PROPERTY` if not NUL-terminated or not valid UTF-8
 */
export function readStringList(node: FdtNode, name: string): string[] {
  const value = requireProperty(node, name);
  return value.length === 0 ? [] : decodeStrings(node, name, value);
}
