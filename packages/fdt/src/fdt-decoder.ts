import type { Fdt, FdtReservation } from './fdt.js';
import { FdtError, quote } from './fdt-error.js';
import { FDT_HEADER_SIZE, FdtHeaderField, readFdtHeader } from './fdt-header.js';
import type { FdtHeader } from './fdt-header.js';
import { nodeNameProblem, propertyNameProblem } from './fdt-name.js';
import type { FdtNode } from './fdt-node.js';
import { childPath, rememberNodePath } from './fdt-path.js';
import { rememberValueOffset } from './fdt-value-offset.js';
import { FDT_RESERVATION_ENTRY_SIZE, FdtToken, alignTo4 } from './fdt-token.js';

/** Options for {@link decodeFdt}. */
export interface FdtDecodeOptions {
  /**
   * Deepest node accepted, counting the root as depth 0 and its children as 1; default 64.
   * Bounds the work and memory a hostile blob can ask for.
   */
  maxDepth?: number;
}

/** Default {@link FdtDecodeOptions.maxDepth}. */
export const FDT_DEFAULT_MAX_DEPTH = 64;

interface Block {
  name: string;
  start: number;
  end: number;
  /** Header field holding the block's offset, for error locations. */
  field: number;
}

interface OpenNode {
  node: FdtNode;
  path: string;
  propertyNames: Set<string>;
  childNames: Set<string>;
}

// Not fatal: a bad byte becomes U+FFFD, which the name check then rejects with a clear message.
const nameDecoder = new TextDecoder('utf-8');

/**
 * Decodes and fully validates a flattened device tree blob (version 16 or later).
 *
 * Every malformation throws {@link FdtError} naming the problem, its byte offset and, inside the
 * structure block, the node path; the tree is returned only once the whole blob checked out. No
 * read goes outside the blob. Property values are copies, so changing `blob` afterwards does not
 * change the tree. Bytes past the header's `totalsize` are ignored; `FDT_NOP` tokens are skipped.
 *
 * @throws FdtError see {@link FdtErrorCode} for what each code means
 */
export function decodeFdt(blob: Uint8Array, options: FdtDecodeOptions = {}): Fdt {
  const maxDepth = options.maxDepth ?? FDT_DEFAULT_MAX_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 0) {
    throw new FdtError('BAD_VALUE', `maxDepth ${String(maxDepth)} is not a non-negative integer`);
  }
  if (!(blob instanceof Uint8Array)) throw new FdtError('BAD_VALUE', 'blob is not a Uint8Array');
  const header = readFdtHeader(blob);
  if (header.totalSize > blob.length) {
    throw new FdtError(
      'TRUNCATED',
      `total size ${header.totalSize} is larger than the ${blob.length}-byte blob`,
      { offset: FdtHeaderField.totalSize },
    );
  }
  // A view limited to totalsize: every later read is checked against a block end inside it.
  const bytes = blob.subarray(0, header.totalSize);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

  const { structBlock, stringsBlock } = checkBlocks(header);
  const reservations = readReservations(view, header, [structBlock, stringsBlock]);
  const root = readStructure(bytes, view, header, structBlock, stringsBlock, maxDepth);
  return { root, reservations, bootCpuId: header.bootCpuId };
}

/** Checks the struct and strings blocks sit inside the blob, after the header, aligned, apart. */
function checkBlocks(header: FdtHeader): { structBlock: Block; stringsBlock: Block } {
  const { totalSize } = header;
  const within = (block: Block, sizeField: number | undefined): void => {
    if (block.start < FDT_HEADER_SIZE) {
      throw new FdtError(
        'BAD_LAYOUT',
        `${block.name} offset ${block.start} overlaps the ${FDT_HEADER_SIZE}-byte header`,
        { offset: block.field },
      );
    }
    if (block.start > totalSize || block.end > totalSize) {
      throw new FdtError(
        'BAD_LAYOUT',
        `${block.name} [${block.start}, ${block.end}) runs past the total size ${totalSize}`,
        { offset: block.start > totalSize ? block.field : (sizeField ?? block.field) },
      );
    }
  };

  if (header.memReserveOffset % 8 !== 0) {
    throw new FdtError(
      'BAD_LAYOUT',
      `memory reservation block offset ${header.memReserveOffset} is not 8-byte aligned`,
      { offset: FdtHeaderField.memReserveOffset },
    );
  }
  if (header.memReserveOffset < FDT_HEADER_SIZE || header.memReserveOffset >= totalSize) {
    throw new FdtError(
      'BAD_LAYOUT',
      `memory reservation block offset ${header.memReserveOffset} is outside [${FDT_HEADER_SIZE}, ${totalSize})`,
      { offset: FdtHeaderField.memReserveOffset },
    );
  }
  if (header.structOffset % 4 !== 0) {
    throw new FdtError(
      'BAD_LAYOUT',
      `structure block offset ${header.structOffset} is not 4-byte aligned`,
      { offset: FdtHeaderField.structOffset },
    );
  }
  const stringsBlock: Block = {
    name: 'strings block',
    start: header.stringsOffset,
    end: header.stringsOffset + header.stringsSize,
    field: FdtHeaderField.stringsOffset,
  };
  within(stringsBlock, FdtHeaderField.stringsSize);

  // Version 16 has no size_dt_struct; the block then ends where the next block (or the blob) does.
  let structEnd = header.structOffset + header.structSize;
  if (header.version < 17) {
    structEnd = totalSize;
    for (const start of [header.memReserveOffset, stringsBlock.start]) {
      if (start > header.structOffset && start < structEnd) structEnd = start;
    }
  }
  const structBlock: Block = {
    name: 'structure block',
    start: header.structOffset,
    end: structEnd,
    field: FdtHeaderField.structOffset,
  };
  within(structBlock, header.version < 17 ? undefined : FdtHeaderField.structSize);
  overlapCheck(structBlock, stringsBlock);
  return { structBlock, stringsBlock };
}

function overlapCheck(a: Block, b: Block): void {
  // Empty blocks hold nothing, so they cannot collide.
  if (a.start === a.end || b.start === b.end) return;
  if (a.start < b.end && b.start < a.end) {
    throw new FdtError(
      'BAD_LAYOUT',
      `${a.name} [${a.start}, ${a.end}) overlaps ${b.name} [${b.start}, ${b.end})`,
      { offset: Math.max(a.start, b.start) },
    );
  }
}

/** Reads reservation entries up to the all-zero terminator, which must lie inside the blob. */
function readReservations(view: DataView, header: FdtHeader, others: Block[]): FdtReservation[] {
  const reservations: FdtReservation[] = [];
  let at = header.memReserveOffset;
  for (;;) {
    if (at + FDT_RESERVATION_ENTRY_SIZE > view.byteLength) {
      throw new FdtError(
        'TRUNCATED',
        `memory reservation block has no terminating zero entry before the end of the blob`,
        { offset: at },
      );
    }
    const address = view.getBigUint64(at);
    const size = view.getBigUint64(at + 8);
    at += FDT_RESERVATION_ENTRY_SIZE;
    if (address === 0n && size === 0n) break;
    // libfdt stops at the first entry of size 0, so past here it and we would disagree.
    if (size === 0n) {
      throw new FdtError(
        'BAD_LAYOUT',
        `memory reservation entry ${reservations.length} has size 0 but address 0x${address.toString(16)}`,
        { offset: at - FDT_RESERVATION_ENTRY_SIZE },
      );
    }
    reservations.push({ address, size });
  }
  const block: Block = {
    name: 'memory reservation block',
    start: header.memReserveOffset,
    end: at,
    field: FdtHeaderField.memReserveOffset,
  };
  for (const other of others) overlapCheck(block, other);
  return reservations;
}

/** Parses the structure block into a tree, checking the token grammar as it goes. */
function readStructure(
  bytes: Uint8Array,
  view: DataView,
  header: FdtHeader,
  structBlock: Block,
  stringsBlock: Block,
  maxDepth: number,
): FdtNode {
  const end = structBlock.end;
  const stack: OpenNode[] = [];
  let root: FdtNode | undefined;
  const propertyName = new PropertyNameReader(bytes, stringsBlock);
  const currentPath = (): string | undefined => stack[stack.length - 1]?.path;

  let at = structBlock.start;
  for (;;) {
    if (at + 4 > end) {
      throw new FdtError('TRUNCATED', 'structure block ends without FDT_END', {
        offset: at,
        path: currentPath(),
      });
    }
    const token = view.getUint32(at);
    const tokenAt = at;
    at += 4;
    switch (token) {
      case FdtToken.nop:
        break;

      case FdtToken.beginNode: {
        const parent = stack[stack.length - 1];
        if (parent === undefined && root !== undefined) {
          throw new FdtError('BAD_TOKEN', 'FDT_BEGIN_NODE after the root node was closed', {
            offset: tokenAt,
          });
        }
        const nameEnd = bytes.subarray(at, end).indexOf(0);
        if (nameEnd < 0) {
          const problem = 'node name is not NUL-terminated inside the structure block';
          throw new FdtError('BAD_STRING', problem, { offset: at, path: currentPath() });
        }
        const name = nameDecoder.decode(bytes.subarray(at, at + nameEnd));
        const node: FdtNode = { name, properties: [], children: [] };
        let path: string;
        if (parent === undefined) {
          if (name !== '') {
            throw new FdtError('BAD_NAME', `root node name must be empty, not ${quote(name)}`, {
              offset: at,
              path: '/',
            });
          }
          path = '/';
          root = node;
        } else {
          const problem = nodeNameProblem(name);
          if (problem !== undefined) {
            throw new FdtError('BAD_NAME', problem, { offset: at, path: parent.path });
          }
          path = childPath(parent.path, name);
          if (stack.length > maxDepth) {
            throw new FdtError('TOO_DEEP', `node is nested deeper than maxDepth ${maxDepth}`, {
              offset: tokenAt,
              path,
            });
          }
          if (parent.childNames.has(name)) {
            throw new FdtError('DUPLICATE', `two child nodes named ${quote(name)}`, {
              offset: tokenAt,
              path: parent.path,
            });
          }
          parent.childNames.add(name);
          parent.node.children.push(node);
        }
        rememberNodePath(node, path);
        stack.push({ node, path, propertyNames: new Set(), childNames: new Set() });
        at = alignTo4(at + nameEnd + 1);
        break;
      }

      case FdtToken.endNode:
        if (stack.pop() === undefined) {
          throw new FdtError('BAD_TOKEN', 'FDT_END_NODE without an open node', { offset: tokenAt });
        }
        break;

      case FdtToken.prop: {
        const current = stack[stack.length - 1];
        if (current === undefined) {
          throw new FdtError('BAD_TOKEN', 'FDT_PROP outside any node', { offset: tokenAt });
        }
        if (at + 8 > end) {
          const problem = 'property header runs past the end of the structure block';
          throw new FdtError('TRUNCATED', problem, { offset: tokenAt, path: current.path });
        }
        const length = view.getUint32(at);
        const nameOffset = view.getUint32(at + 4);
        const valueAt = at + 8;
        if (valueAt + length > end) {
          throw new FdtError(
            'TRUNCATED',
            `property value of ${length} bytes runs past the end of the structure block`,
            { offset: at, path: current.path },
          );
        }
        const name = propertyName.read(nameOffset, at + 4, current.path);
        if (current.node.children.length > 0) {
          throw new FdtError('BAD_TOKEN', `property ${quote(name)} follows child nodes`, {
            offset: tokenAt,
            path: current.path,
          });
        }
        if (current.propertyNames.has(name)) {
          throw new FdtError('DUPLICATE', `two properties named ${quote(name)}`, {
            offset: tokenAt,
            path: current.path,
          });
        }
        current.propertyNames.add(name);
        // A copy, so the tree does not alias the caller's buffer (Buffer#slice would not copy).
        const value = new Uint8Array(bytes.subarray(valueAt, valueAt + length));
        const property = { name, value };
        rememberValueOffset(property, valueAt);
        current.node.properties.push(property);
        at = alignTo4(valueAt + length);
        break;
      }

      case FdtToken.end: {
        const open = stack[stack.length - 1];
        if (open !== undefined) {
          throw new FdtError('BAD_TOKEN', 'FDT_END while a node is still open', {
            offset: tokenAt,
            path: open.path,
          });
        }
        if (root === undefined) {
          throw new FdtError('BAD_TOKEN', 'FDT_END before the root node', { offset: tokenAt });
        }
        // Version 16 gives no structure size, so trailing bytes cannot be told from free space.
        if (header.version >= 17 && at !== end) {
          throw new FdtError('BAD_LAYOUT', `structure block has ${end - at} bytes after FDT_END`, {
            offset: at,
          });
        }
        return root;
      }

      default:
        if (root === undefined) {
          throw new FdtError(
            'BAD_TOKEN',
            `structure block starts with token 0x${token.toString(16)}, not FDT_BEGIN_NODE`,
            { offset: tokenAt },
          );
        }
        throw new FdtError('BAD_TOKEN', `unknown token 0x${token.toString(16)}`, {
          offset: tokenAt,
          path: currentPath(),
        });
    }
  }
}

/**
 * Looks up property names in the strings block. A name may start mid-string (dtc shares name
 * tails), so any offset inside the block is allowed; each offset is resolved once.
 */
class PropertyNameReader {
  private readonly cache = new Map<number, string>();

  constructor(
    private readonly bytes: Uint8Array,
    private readonly block: Block,
  ) {}

  read(nameOffset: number, fieldAt: number, path: string): string {
    const cached = this.cache.get(nameOffset);
    if (cached !== undefined) return cached;
    const size = this.block.end - this.block.start;
    if (nameOffset >= size) {
      throw new FdtError(
        'BAD_STRING',
        `property name offset ${nameOffset} is outside the ${size}-byte strings block`,
        { offset: fieldAt, path },
      );
    }
    const start = this.block.start + nameOffset;
    const length = this.bytes.subarray(start, this.block.end).indexOf(0);
    if (length < 0) {
      throw new FdtError(
        'BAD_STRING',
        'property name is not NUL-terminated inside the strings block',
        { offset: start, path },
      );
    }
    const name = nameDecoder.decode(this.bytes.subarray(start, start + length));
    const problem = propertyNameProblem(name);
    if (problem !== undefined) {
      throw new FdtError('BAD_NAME', problem, { offset: start, path });
    }
    this.cache.set(nameOffset, name);
    return name;
  }
}
