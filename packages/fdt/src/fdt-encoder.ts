import type { Fdt, FdtReservation } from './fdt.js';
import { FdtError, quote } from './fdt-error.js';
import {
  FDT_HEADER_SIZE,
  FDT_LAST_COMPATIBLE_VERSION,
  FDT_MAGIC,
  FDT_VERSION,
  FdtHeaderField,
} from './fdt-header.js';
import { nodeNameProblem, propertyNameProblem } from './fdt-name.js';
import type { FdtNode } from './fdt-node.js';
import { FDT_RESERVATION_ENTRY_SIZE, FdtToken, alignTo4 } from './fdt-token.js';

const U64_MAX = (1n << 64n) - 1n;
const U32_MAX = 0xffffffff;

/** One structure block item, collected in a first pass so the blob is allocated once. */
type StructItem =
  | { token: typeof FdtToken.beginNode; name: string }
  | { token: typeof FdtToken.prop; nameOffset: number; value: Uint8Array }
  | { token: typeof FdtToken.endNode };

interface Frame {
  node: FdtNode;
  next: number;
}

/**
 * Encodes a tree as a version 17 flattened device tree blob laid out as dtc lays it out: header,
 * memory reservation block, structure block, strings block, no padding. Property names are
 * deduplicated and, like dtc, a name that is the tail of one already stored (`phandle` after
 * `linux,phandle`) reuses it, so re-encoding a dtc blob gives dtc's bytes.
 *
 * The tree is validated first; nothing is returned unless all of it is valid. Depth is not
 * limited here, but `decodeFdt` refuses trees deeper than its `maxDepth` (64 by default).
 *
 * @param tree - a whole {@link Fdt}, or a bare root node (no reservations, boot CPU 0)
 * @throws FdtError `BAD_NAME` (root name not `''`, other name empty or with invalid characters),
 *   `DUPLICATE` (property or child name repeated in a node), `BAD_VALUE` (value not a
 *   `Uint8Array`, bad reservation or boot CPU id, a node that contains itself, blob over 4 GiB)
 */
export function encodeFdt(tree: Fdt | FdtNode): Uint8Array {
  if (typeof tree !== 'object' || tree === null) {
    throw new FdtError('BAD_VALUE', 'tree is not an object');
  }
  const fdt: Fdt = 'root' in tree ? tree : { root: tree, reservations: [], bootCpuId: 0 };
  checkBootCpuId(fdt.bootCpuId);
  checkReservations(fdt.reservations);
  if (isNode(fdt.root) && fdt.root.name !== '') {
    throw new FdtError('BAD_NAME', `root node name must be empty, not ${quote(fdt.root.name)}`, {
      path: '/',
    });
  }

  const strings = new StringTable();
  const items = collectStructure(fdt.root, strings);

  const reservationsSize = (fdt.reservations.length + 1) * FDT_RESERVATION_ENTRY_SIZE;
  let structSize = 4; // FDT_END
  for (const item of items) {
    if (item.token === FdtToken.beginNode) structSize += 4 + alignTo4(item.name.length + 1);
    else if (item.token === FdtToken.prop) structSize += 12 + alignTo4(item.value.length);
    else structSize += 4;
  }
  // The header is 40 bytes, already a multiple of 8, so the reservation block needs no padding.
  const memReserveOffset = FDT_HEADER_SIZE;
  const structOffset = memReserveOffset + reservationsSize;
  const stringsOffset = structOffset + structSize;
  const totalSize = stringsOffset + strings.size;
  if (totalSize > U32_MAX) {
    throw new FdtError('BAD_VALUE', `tree needs ${totalSize} bytes, more than a 32-bit total size`);
  }

  const blob = new Uint8Array(totalSize);
  const view = new DataView(blob.buffer);
  view.setUint32(FdtHeaderField.magic, FDT_MAGIC);
  view.setUint32(FdtHeaderField.totalSize, totalSize);
  view.setUint32(FdtHeaderField.structOffset, structOffset);
  view.setUint32(FdtHeaderField.stringsOffset, stringsOffset);
  view.setUint32(FdtHeaderField.memReserveOffset, memReserveOffset);
  view.setUint32(FdtHeaderField.version, FDT_VERSION);
  view.setUint32(FdtHeaderField.lastCompatibleVersion, FDT_LAST_COMPATIBLE_VERSION);
  view.setUint32(FdtHeaderField.bootCpuId, fdt.bootCpuId);
  view.setUint32(FdtHeaderField.stringsSize, strings.size);
  view.setUint32(FdtHeaderField.structSize, structSize);

  let at = memReserveOffset;
  for (const { address, size } of fdt.reservations) {
    view.setBigUint64(at, address);
    view.setBigUint64(at + 8, size);
    at += FDT_RESERVATION_ENTRY_SIZE;
  }
  at += FDT_RESERVATION_ENTRY_SIZE; // the all-zero terminator; the buffer starts zeroed

  for (const item of items) {
    view.setUint32(at, item.token);
    at += 4;
    if (item.token === FdtToken.beginNode) {
      writeAscii(blob, at, item.name);
      at += alignTo4(item.name.length + 1);
    } else if (item.token === FdtToken.prop) {
      view.setUint32(at, item.value.length);
      view.setUint32(at + 4, item.nameOffset);
      blob.set(item.value, at + 8);
      at += 8 + alignTo4(item.value.length);
    }
  }
  view.setUint32(at, FdtToken.end);

  writeAscii(blob, stringsOffset, strings.text);
  return blob;
}

function isNode(value: unknown): value is FdtNode {
  if (typeof value !== 'object' || value === null) return false;
  const node = value as Partial<FdtNode>;
  return (
    typeof node.name === 'string' && Array.isArray(node.properties) && Array.isArray(node.children)
  );
}

function checkBootCpuId(id: unknown): void {
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > U32_MAX) {
    throw new FdtError('BAD_VALUE', `boot CPU id ${String(id)} is not an integer in 0..0xffffffff`);
  }
}

function checkReservations(reservations: unknown): void {
  if (!Array.isArray(reservations)) throw new FdtError('BAD_VALUE', 'reservations is not an array');
  reservations.forEach((entry: Partial<FdtReservation> | null, i) => {
    const { address, size } = entry ?? {};
    for (const [field, v] of [
      ['address', address],
      ['size', size],
    ] as const) {
      if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) {
        throw new FdtError(
          'BAD_VALUE',
          `reservation ${i} ${field} ${String(v)} is not a u64 bigint`,
        );
      }
    }
    // The spec ends the block with an all-zero entry, and libfdt (so Linux and dtc) already stops
    // at any entry of size 0: writing one would silently cut the list short for those readers.
    if (size === 0n) {
      throw new FdtError(
        'BAD_VALUE',
        `reservation ${i} has size 0, which readers take as the end of the list`,
      );
    }
  });
}

/**
 * Validates the tree and lists its structure block items, depth first, properties before
 * children. Iterative so a very deep tree cannot overflow the call stack.
 */
function collectStructure(root: FdtNode, strings: StringTable): StructItem[] {
  const items: StructItem[] = [];
  const stack: Frame[] = [];
  const open = new Set<FdtNode>();
  const pathOf = (extra?: string): string => {
    const names = stack.slice(1).map((f) => f.node.name);
    if (extra !== undefined) names.push(extra);
    return `/${names.join('/')}`;
  };

  const enter = (node: unknown): void => {
    if (!isNode(node)) {
      throw new FdtError('BAD_VALUE', 'node is not an object with name, properties and children', {
        path: stack.length === 0 ? '/' : pathOf('?'),
      });
    }
    if (stack.length > 0) {
      const problem = nodeNameProblem(node.name);
      if (problem !== undefined) throw new FdtError('BAD_NAME', problem, { path: pathOf() });
    }
    if (open.has(node)) {
      throw new FdtError('BAD_VALUE', 'node contains itself', { path: pathOf(node.name) });
    }
    stack.push({ node, next: 0 });
    open.add(node);
    items.push({ token: FdtToken.beginNode, name: node.name });

    const seen = new Set<string>();
    for (const property of node.properties) {
      const name: unknown = property?.name;
      if (typeof name !== 'string') {
        throw new FdtError('BAD_VALUE', 'property has no string name', { path: pathOf() });
      }
      const problem = propertyNameProblem(name);
      if (problem !== undefined) throw new FdtError('BAD_NAME', problem, { path: pathOf() });
      if (seen.has(name)) {
        throw new FdtError('DUPLICATE', `two properties named ${quote(name)}`, { path: pathOf() });
      }
      seen.add(name);
      if (!(property.value instanceof Uint8Array)) {
        throw new FdtError('BAD_VALUE', `property ${quote(name)} value is not a Uint8Array`, {
          path: pathOf(),
        });
      }
      items.push({
        token: FdtToken.prop,
        nameOffset: strings.offsetOf(name),
        value: property.value,
      });
    }
    const childNames = new Set<string>();
    for (const child of node.children) {
      const childName: unknown = (child as Partial<FdtNode> | null)?.name;
      if (typeof childName === 'string' && childNames.has(childName)) {
        throw new FdtError('DUPLICATE', `two child nodes named ${quote(childName)}`, {
          path: pathOf(),
        });
      }
      if (typeof childName === 'string') childNames.add(childName);
    }
  };

  enter(root);
  while (stack.length > 0) {
    const frame = stack[stack.length - 1] as Frame;
    const child = frame.node.children[frame.next];
    if (frame.next < frame.node.children.length) {
      frame.next++;
      enter(child);
    } else {
      items.push({ token: FdtToken.endNode });
      open.delete(frame.node);
      stack.pop();
    }
  }
  return items;
}

/** The strings block: NUL-terminated names; a name reuses any stored string it is the tail of. */
class StringTable {
  text = '';
  private readonly offsets = new Map<string, number>();

  get size(): number {
    return this.text.length;
  }

  offsetOf(name: string): number {
    let offset = this.offsets.get(name);
    if (offset === undefined) {
      // Names are ASCII (checked), so string indices are byte offsets.
      offset = this.text.indexOf(`${name}\0`);
      if (offset < 0) {
        offset = this.text.length;
        this.text += `${name}\0`;
      }
      this.offsets.set(name, offset);
    }
    return offset;
  }
}

function writeAscii(target: Uint8Array, at: number, text: string): void {
  for (let i = 0; i < text.length; i++) target[at + i] = text.charCodeAt(i);
}
