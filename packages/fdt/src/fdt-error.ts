/**
 * Machine-readable reason carried by every {@link FdtError}.
 *
 * | code           | meaning                                                                                   |
 * | -------------- | ----------------------------------------------------------------------------------------- |
 * | `TRUNCATED`    | the input ends before data it must hold: blob shorter than the header or than `totalsize`, memory reservation block without its terminator, property value or token running past the structure block, structure block ending without `FDT_END` |
 * | `BAD_MAGIC`    | the first word is not {@link FDT_MAGIC}                                                    |
 * | `BAD_VERSION`  | `version` < 16, `last_comp_version` > 17, or `last_comp_version` > `version`               |
 * | `BAD_LAYOUT`   | `totalsize` smaller than the header; a block out of range, misaligned, overlapping the header or another block; a reservation entry of size 0 before the terminator; bytes after `FDT_END` inside the structure block |
 * | `BAD_TOKEN`    | unknown token, or a token where the grammar forbids it (no root `FDT_BEGIN_NODE`, `FDT_END_NODE` with no open node, `FDT_END` with nodes open, property outside a node or after child nodes, a second root) |
 * | `BAD_NAME`     | a node or property name that is empty (except the root's), non-empty for the root, or uses characters outside the devicetree specification's sets |
 * | `BAD_STRING`   | a name not NUL-terminated inside its block, or a property name offset outside the strings block |
 * | `TOO_DEEP`     | nodes nested deeper than the decoder's `maxDepth`                                          |
 * | `DUPLICATE`    | two properties, or two child nodes, with the same name in one node                         |
 * | `BAD_PROPERTY` | a reader found a property whose size or format does not fit the requested type            |
 * | `NOT_FOUND`    | a reader was asked for a property the node does not have                                   |
 * | `BAD_VALUE`    | an argument the caller built is unusable: out-of-range number, string with NUL, value that is not a `Uint8Array`, reservation of size 0, a node that contains itself, bad option |
 */
export type FdtErrorCode =
  | 'TRUNCATED'
  | 'BAD_MAGIC'
  | 'BAD_VERSION'
  | 'BAD_LAYOUT'
  | 'BAD_TOKEN'
  | 'BAD_NAME'
  | 'BAD_STRING'
  | 'TOO_DEEP'
  | 'DUPLICATE'
  | 'BAD_PROPERTY'
  | 'NOT_FOUND'
  | 'BAD_VALUE';

/** Where an {@link FdtError} happened, when known. */
export interface FdtErrorLocation {
  /** Byte offset from the start of the blob. */
  offset?: number | undefined;
  /** Path of the node concerned, e.g. `/cpus/cpu@0`. */
  path?: string | undefined;
}

/**
 * The only error the package throws, for malformed blobs and for unusable arguments alike.
 *
 * The message names the problem and ends with where it is, e.g.
 * `property value of 300 bytes runs past the end of the structure block (node /memory, offset 148)`.
 */
export class FdtError extends Error {
  /** What went wrong; see {@link FdtErrorCode}. */
  readonly code: FdtErrorCode;
  /** Byte offset in the blob where the problem was found, if it concerns a blob. */
  readonly offset: number | undefined;
  /** Path of the node concerned, if known (an extra beyond `offset`, handy for logging). */
  readonly path: string | undefined;

  constructor(code: FdtErrorCode, detail: string, location: FdtErrorLocation = {}) {
    const where: string[] = [];
    if (location.path !== undefined) where.push(`node ${location.path}`);
    if (location.offset !== undefined) where.push(`offset ${location.offset}`);
    super(where.length > 0 ? `${detail} (${where.join(', ')})` : detail);
    this.name = 'FdtError';
    this.code = code;
    this.offset = location.offset;
    this.path = location.path;
  }
}

const SHOWN_LENGTH = 40;

/** Quotes a name or string for an error message, cut short so a corrupted huge one cannot flood logs. */
export function quote(text: string): string {
  const shown =
    text.length > SHOWN_LENGTH ? `${text.slice(0, SHOWN_LENGTH)}…(${text.length} chars)` : text;
  return JSON.stringify(shown);
}
