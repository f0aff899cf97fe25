import {
  defineHandler,
  restoreSerializedFolio,
  serializedDataAddress,
  type FileHandler,
  type FileOpArgs,
} from '@liveupdate/core';
import {
  File,
  KernelError,
  PAGE_SIZE,
  type FileOperations,
  type Folio,
  type ModuleContext,
} from '@liveupdate/kernel';
import { O_ACCMODE, hex } from '@liveupdate/machine';
import { VALUE_DEVICE_PATH } from './value-file-operations.js';
import { VALUE_LUO_COMPATIBLE, valueLuoSer } from './value-luo-abi.js';
import { VALUE_MAX, ValuePage } from './value-page.js';

/** What `preserve` leaves in `privateData` for `freeze` and `unpreserve`; this kernel only. */
interface ValuePreservation {
  readonly value: ValuePage;
  readonly serPhys: number;
  /** The file's open flags: `freeze` rewrites the whole `value_luo_ser`. */
  readonly flags: number;
}

type ValueLuoSer = ReturnType<typeof valueLuoSer.decode>;

/** A preserved value as `value_luo_ser` describes it, checked. */
interface PreservedValue {
  readonly dataPhys: number;
  readonly length: number;
  readonly accessMode: number;
}

/**
 * The handler of `/dev/__NAME__` files, `"__NAME__-v1"`: a file's value crosses a live update in
 * its own page, preserved in place, and the retrieved file is `/dev/__NAME__` again, with the
 * access mode it was opened with.
 *
 * - `preserve` preserves the value's page and a `value_luo_ser` page describing it; the file
 *   stays writable. `freeze` writes the length as it is at reboot; `unpreserve` undoes both.
 * - `retrieve` checks `value_luo_ser` as untrusted input before it restores anything: `EINVAL`
 *   for what no `__NAME__-v1` writer writes (then the page it names is left alone),
 *   `EOPNOTSUPP` for flags this kernel does not know (the page is freed), `EIO` when the page
 *   cannot be restored.
 * - `finish` frees the pages of a file that was never retrieved.
 */
export function createValueLuoHandler(ctx: ModuleContext, fops: FileOperations): FileHandler {
  const { kho, memory, pages, log } = ctx;

  const valueOf = (file: File | null): ValuePage | undefined =>
    file?.fops === fops && file.privateData instanceof ValuePage ? file.privateData : undefined;

  const readSer = (phys: number): ValueLuoSer =>
    valueLuoSer.decode(memory.view(phys, valueLuoSer.size));

  const writeSer = (phys: number, value: ValuePage, flags: number): void =>
    valueLuoSer.encodeInto(memory.view(phys, valueLuoSer.size), 0, {
      data: BigInt(value.phys),
      length: BigInt(value.length),
      flags: flags & O_ACCMODE,
      reserved: 0,
    });

  const preservationOf = (args: FileOpArgs): ValuePreservation => {
    const preservation = args.privateData as ValuePreservation | undefined;
    if (!preservation) throw new KernelError('EINVAL', '__NAME__: not preserved by this kernel');
    return preservation;
  };

  const serAddress = (data: bigint): number => serializedDataAddress(data, memory, '__NAME__');
  const restoreSer = (phys: number): Folio => restoreSerializedFolio(kho, phys, 0, 'value_luo_ser');

  /**
   * Check what a `__NAME__-v1` writer guarantees, naming the field and its value: `EINVAL`
   * otherwise. Flags and `reserved` are checked apart: they are the room left for later versions.
   */
  const preservedValue = (ser: ValueLuoSer): PreservedValue => {
    const bad = (why: string): never => {
      throw new KernelError('EINVAL', `__NAME__: damaged value_luo_ser: ${why}`);
    };
    if (ser.data % BigInt(PAGE_SIZE) !== 0n || ser.data + BigInt(PAGE_SIZE) > BigInt(memory.size))
      bad(`data ${hex(ser.data)} is not a page of RAM`);
    if (ser.length > BigInt(VALUE_MAX)) bad(`length ${ser.length} is above ${VALUE_MAX}`);
    if ((ser.flags & O_ACCMODE) === O_ACCMODE) bad(`flags ${hex(ser.flags)}: no such access mode`);
    return {
      dataPhys: Number(ser.data),
      length: Number(ser.length),
      accessMode: ser.flags & O_ACCMODE,
    };
  };

  /** Restore a preserved value's page only to free it. */
  const discard = ({ dataPhys }: PreservedValue): void => {
    try {
      pages.freePages(kho.restoreFolio(dataPhys, 0));
    } catch (error) {
      log.warn(`__NAME__: ${hex(dataPhys)} could not be restored to be freed: ${String(error)}`);
    }
  };

  return defineHandler({
    compatible: VALUE_LUO_COMPATIBLE,

    /** `can_preserve`: a `/dev/__NAME__` file of this kernel. */
    canPreserve: (_handler, file) => valueOf(file) !== undefined,

    /** `preserve`: preserve the value's page in place and describe it in a preserved page. */
    preserve(args) {
      const value = valueOf(args.file);
      if (!value || !args.file) throw new KernelError('EINVAL', '__NAME__: not a value file');
      const serPhys = kho.allocPreserve(valueLuoSer.size);
      try {
        kho.preserveFolio(value.folio);
      } catch (error) {
        kho.unpreserveFree(serPhys);
        throw error;
      }
      writeSer(serPhys, value, args.file.flags);
      const preservation: ValuePreservation = { value, serPhys, flags: args.file.flags };
      args.serializedData = BigInt(serPhys);
      args.privateData = preservation;
    },

    /** `freeze`: the value may have grown since `preserve`; record its length. O(1). */
    freeze(args) {
      const { value, serPhys, flags } = preservationOf(args);
      writeSer(serPhys, value, flags);
    },

    /** `unpreserve`: undo `preserve`; the file never stopped working. */
    unpreserve(args) {
      const { value, serPhys } = preservationOf(args);
      kho.unpreserveFolio(value.folio);
      kho.unpreserveFree(serPhys);
      args.privateData = undefined;
    },

    /** `retrieve`: `/dev/__NAME__` again, on the preserved page, with its access mode. */
    retrieve(args) {
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        const ser = readSer(serPhys);
        const preserved = preservedValue(ser);
        if (ser.flags & ~O_ACCMODE || ser.reserved !== 0) {
          discard(preserved); // well-formed, but not ours to read: free the page
          throw new KernelError(
            'EOPNOTSUPP',
            `__NAME__: value_luo_ser flags ${hex(ser.flags)} or reserved ${hex(ser.reserved)} unknown`,
          );
        }
        let folio: Folio;
        try {
          folio = kho.restoreFolio(preserved.dataPhys, 0);
        } catch (error) {
          throw new KernelError('EIO', `__NAME__: ${hex(preserved.dataPhys)} cannot be restored`, {
            cause: error,
          });
        }
        const value = new ValuePage(memory, pages, folio, preserved.length);
        args.file = new File(VALUE_DEVICE_PATH, fops, preserved.accessMode, value);
      } finally {
        pages.freePages(serFolio); // the description has done its job
      }
    },

    /** `finish`: for a file never retrieved, free its value's page and its `value_luo_ser`. */
    finish(args) {
      if (args.retrieveStatus !== 0) return; // retrieve kept or freed everything
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        discard(preservedValue(readSer(serPhys)));
      } finally {
        pages.freePages(serFolio);
      }
    },
  });
}
