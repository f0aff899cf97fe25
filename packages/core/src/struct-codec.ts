/**
 * Declarative codecs for packed little-endian C structs: the uAPI argument structs and the
 * handover ABI structs are each declared once (field order, types, hence offsets and size) and
 * the same declaration reads and writes them.
 */

/** How one field is stored. */
export interface FieldType<T> {
  readonly size: number;
  read(view: DataView, offset: number): T;
  write(view: DataView, offset: number, value: T): void;
}

/** `__u8`. */
export const u8: FieldType<number> = {
  size: 1,
  read: (view, offset) => view.getUint8(offset),
  write: (view, offset, value) => view.setUint8(offset, checkInt(value, 0, 0xff)),
};

/** `__u16`, little-endian. */
export const u16: FieldType<number> = {
  size: 2,
  read: (view, offset) => view.getUint16(offset, true),
  write: (view, offset, value) => view.setUint16(offset, checkInt(value, 0, 0xffff), true),
};

/** `__u32`, little-endian. */
export const u32: FieldType<number> = {
  size: 4,
  read: (view, offset) => view.getUint32(offset, true),
  write: (view, offset, value) => view.setUint32(offset, checkInt(value, 0, 0xffffffff), true),
};

/** `__s32`, little-endian. */
export const s32: FieldType<number> = {
  size: 4,
  read: (view, offset) => view.getInt32(offset, true),
  write: (view, offset, value) =>
    view.setInt32(offset, checkInt(value, -0x80000000, 0x7fffffff), true),
};

/** `__u64`, little-endian, as a bigint. */
export const u64: FieldType<bigint> = {
  size: 8,
  read: (view, offset) => view.getBigUint64(offset, true),
  write: (view, offset, value) => {
    if (typeof value !== 'bigint' || value < 0n || value > 0xffff_ffff_ffff_ffffn) {
      throw new RangeError(`u64 field: ${String(value)} is out of range`);
    }
    view.setBigUint64(offset, value, true);
  },
};

/** A raw byte array of `length` bytes (a copy on read; shorter input is zero-padded on write). */
export function bytes(length: number): FieldType<Uint8Array> {
  return {
    size: length,
    read: (view, offset) =>
      new Uint8Array(
        view.buffer.slice(view.byteOffset + offset, view.byteOffset + offset + length),
      ),
    write: (view, offset, value) => {
      if (value.length > length)
        throw new RangeError(`${length}-byte field: got ${value.length} bytes`);
      const target = new Uint8Array(view.buffer, view.byteOffset + offset, length);
      target.fill(0);
      target.set(value);
    },
  };
}

/**
 * `char name[length]` holding bytes, not text: 1..`length - 1` bytes of any value but NUL, then
 * NUL padding. Reading stops at the first NUL (or takes all `length` bytes when there is none;
 * callers that must reject an unterminated name check {@link strnlen} on the raw bytes).
 */
export function cbytes(length: number): FieldType<Uint8Array> {
  return {
    size: length,
    read: (view, offset) => {
      const raw = new Uint8Array(view.buffer, view.byteOffset + offset, length);
      return raw.slice(0, strnlen(raw, length));
    },
    write: (view, offset, value) => {
      if (value.includes(0) || value.length > length - 1) {
        throw new RangeError(
          `${length}-byte name field: a ${value.length}-byte name${value.includes(0) ? ' with a NUL inside' : ''} does not fit with its NUL`,
        );
      }
      const target = new Uint8Array(view.buffer, view.byteOffset + offset, length);
      target.fill(0);
      target.set(value);
    },
  };
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * `char name[length]`: a NUL-terminated UTF-8 string of at most `length - 1` bytes, NUL-padded.
 * Reading stops at the first NUL (or takes all `length` bytes when there is none; callers that
 * must reject an unterminated string check {@link strnlen} on the raw bytes).
 */
export function cstring(length: number): FieldType<string> {
  return {
    size: length,
    read: (view, offset) => {
      const raw = new Uint8Array(view.buffer, view.byteOffset + offset, length);
      return utf8Decoder.decode(raw.subarray(0, strnlen(raw, length)));
    },
    write: (view, offset, value) => {
      const encoded = utf8.encode(value);
      if (encoded.includes(0) || encoded.length > length - 1) {
        throw new RangeError(
          `${length}-byte string field: ${JSON.stringify(value)} does not fit with its NUL`,
        );
      }
      const target = new Uint8Array(view.buffer, view.byteOffset + offset, length);
      target.fill(0);
      target.set(encoded);
    },
  };
}

/** `strnlen(s, max)`: bytes before the first NUL, at most `max`. */
export function strnlen(raw: Uint8Array, max: number): number {
  const end = Math.min(max, raw.length);
  const nul = raw.subarray(0, end).indexOf(0);
  return nul < 0 ? end : nul;
}

/** The fields of a struct, in order: `[name, type]` pairs. */
export type FieldList = readonly (readonly [string, FieldType<unknown>])[];
/** The value type a {@link FieldType} reads and writes. */
export type ValueOf<F> = F extends FieldType<infer T> ? T : never;
/** The object type a field list describes. */
export type StructValue<F extends FieldList> = {
  -readonly [E in F[number] as E[0]]: ValueOf<E[1]>;
};

/** A packed little-endian struct: its size, each field's offset, and how to read and write it. */
export interface StructCodec<T> {
  /** The C name, for messages and docs. */
  readonly name: string;
  /** `sizeof`. */
  readonly size: number;
  /** `offsetof` of each field. */
  readonly offsets: { readonly [K in keyof T]: number };
  /** A new buffer of {@link size} bytes holding `value`. */
  encode(value: T): Uint8Array;
  /** Write `value` into `target` at `offset` (which must leave room for {@link size} bytes). */
  encodeInto(target: Uint8Array, offset: number, value: T): void;
  /** Read the struct at `offset` of `source`; `RangeError` when `source` is too short. */
  decode(source: Uint8Array, offset?: number): T;
}

/**
 * Declare a packed struct from its fields in order.
 *
 * @example
 * ```ts
 * const luoFileSer = defineStruct('luo_file_ser', [
 *   ['compatible', cstring(48)],
 *   ['data', u64],
 *   ['token', u64],
 * ] as const);
 * luoFileSer.size; // 64
 * luoFileSer.offsets.token; // 56
 * ```
 */
export function defineStruct<const F extends FieldList>(
  name: string,
  fields: F,
): StructCodec<StructValue<F>> {
  const offsets: Record<string, number> = {};
  let size = 0;
  for (const [field, type] of fields) {
    offsets[field] = size;
    size += type.size;
  }
  const viewOf = (target: Uint8Array, offset: number): DataView => {
    if (!Number.isInteger(offset) || offset < 0 || offset + size > target.length) {
      throw new RangeError(
        `${name}: ${size} bytes at offset ${offset} do not fit in ${target.length}`,
      );
    }
    return new DataView(target.buffer, target.byteOffset + offset, size);
  };
  const encodeInto = (target: Uint8Array, offset: number, value: StructValue<F>): void => {
    const view = viewOf(target, offset);
    for (const [field, type] of fields) {
      type.write(view, offsets[field]!, (value as Record<string, unknown>)[field]);
    }
  };
  return {
    name,
    size,
    offsets: offsets as StructCodec<StructValue<F>>['offsets'],
    encode(value) {
      const out = new Uint8Array(size);
      encodeInto(out, 0, value);
      return out;
    },
    encodeInto,
    decode(source, offset = 0) {
      const view = viewOf(source, offset);
      const value: Record<string, unknown> = {};
      for (const [field, type] of fields) value[field] = type.read(view, offsets[field]!);
      return value as StructValue<F>;
    },
  };
}

function checkInt(value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`integer field: ${value} is outside ${min}..${max}`);
  }
  return value;
}
