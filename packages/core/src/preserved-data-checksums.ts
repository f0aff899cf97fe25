import { crc32c, type KexecHandover } from '@liveupdate/kernel';
import { PAGE_SIZE, hex, type PhysicalMemory } from '@liveupdate/machine';

/** `data_size` and `data_crc` of a `data` handle (`luo_file_ser`, `luo_flb_ser` of `luo-v2`). */
export interface DataChecksum {
  /**
   * Bytes `dataCrc` covers from `data` — the whole KHO-preserved folio that `data` is the start
   * of — or 0 when `data` is not the start of a folio the old kernel preserved (nothing is
   * checksummed).
   */
  readonly dataSize: bigint;
  /** crc32c of the `dataSize` bytes at `data`; 0 when `dataSize` is 0. */
  readonly dataCrc: number;
}

/**
 * The checksum LUO keeps of what a handle it hands over points at — a file's `serializedData`, an
 * FLB's `data` — so that its owner gets it with no work: taken by the writer, checked by the
 * reader before the owner sees its state. One rule for files and FLBs alike.
 */
export class PreservedDataChecksums {
  readonly #kho: KexecHandover;
  readonly #memory: PhysicalMemory;

  constructor(kho: KexecHandover, memory: PhysicalMemory) {
    this.#kho = kho;
    this.#memory = memory;
  }

  /**
   * The outgoing side: when `data` is the start of a folio this kernel preserves (what
   * `kho.allocPreserve` or `kho.preserveFolio` gives), the crc32c of that whole folio; otherwise
   * nothing (`dataSize` 0).
   */
  of(data: bigint): DataChecksum {
    const order =
      data <= BigInt(Number.MAX_SAFE_INTEGER) ? this.#kho.preservedOrder(Number(data)) : undefined;
    if (order === undefined) return { dataSize: 0n, dataCrc: 0 };
    const size = PAGE_SIZE * 2 ** order;
    return { dataSize: BigInt(size), dataCrc: crc32c(this.#memory.read(Number(data), size)) };
  }

  /**
   * The incoming side, when the handover is validated: what is wrong with a non-zero `dataSize`
   * that is not the size of a folio the previous kernel preserved starting at `data`, else
   * `undefined`. A `dataSize` of 0 (nothing checksummed) is never wrong here.
   */
  sizeProblem(data: bigint, { dataSize }: DataChecksum): string | undefined {
    if (dataSize === 0n) return undefined;
    const order =
      data <= BigInt(Number.MAX_SAFE_INTEGER) ? this.#kho.incomingOrder(Number(data)) : undefined;
    if (order !== undefined && BigInt(PAGE_SIZE * 2 ** order) === dataSize) return undefined;
    return `data_size ${dataSize} is not the size of a preserved folio starting there`;
  }

  /**
   * The incoming side, before the owner reads its state: what is wrong when the `dataSize`
   * bytes at `data` do not match `dataCrc`, naming `struct` (`luo_file_ser`), else `undefined`.
   * Call it after {@link sizeProblem} found nothing.
   */
  crcProblem(
    data: bigint,
    { dataSize, dataCrc }: DataChecksum,
    struct: string,
  ): string | undefined {
    if (dataSize === 0n) return undefined;
    const actual = crc32c(this.#memory.read(Number(data), Number(dataSize)));
    if (actual === dataCrc) return undefined;
    return `${struct} data_crc ${hex(dataCrc)} does not match the ${dataSize} bytes at data ${hex(data)} (crc32c ${hex(actual)})`;
  }
}
