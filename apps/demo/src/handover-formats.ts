import { luoAbiCompatible, readLuoFileTable, readLuoSessionTable } from '@liveupdate/core';
import type { HandoverEvent, PhysicalMemory } from '@liveupdate/machine';
import { readLuoFdt } from '@liveupdate/testkit';

/** The compatible string of each preserved file as written, keyed `session/token`. */
export type HandoverFormats = Readonly<Record<string, string>>;

/** What one handover carried: the LUO ABI version written and each file's format. */
interface HandoverRecord {
  /** `luo-v2` or `luo-v1`: the root compatible of the LUO FDT. */
  readonly luo: string;
  readonly formats: HandoverFormats;
}

const sessionName = new TextDecoder('utf-8', { fatal: true });

/**
 * What each handover carried, read from its bytes the way the next kernel finds them: the KHO
 * root FDT, its `LUO` subtree, the session table and each session's file table, checked by
 * LUO's own readers (`readLuoSessionTable`, `readLuoFileTable`). The machine calls
 * {@link onHandover} between the kernels, so what is read is what was written, before the next
 * kernel takes (and frees) any of it. A handover holding more sessions or files than the demo
 * preserves is not what its kernels wrote: the reader refuses it.
 */
export class HandoverFormatsRecorder {
  readonly #byBoot = new Map<number, HandoverRecord | Error>();
  readonly #maxSessions: number;
  readonly #maxFiles: number;

  /** `maxSessions` and `maxFilesPerSession`: what the demo's services preserve at most. */
  constructor(maxSessions: number, maxFilesPerSession: number) {
    this.#maxSessions = maxSessions;
    this.#maxFiles = maxFilesPerSession;
  }

  /**
   * For `Machine.create({ onHandover })`. A handover it cannot read is recorded as such, not
   * thrown: a throw here would halt the machine, and the next kernel's own reader decides.
   */
  readonly onHandover = ({ memory, khoFdtPhys, nextBoot }: HandoverEvent): void => {
    try {
      if (khoFdtPhys === null) throw new Error('the old kernel handed over no KHO root FDT');
      this.#byBoot.set(nextBoot, this.#read(memory, khoFdtPhys));
    } catch (error) {
      this.#byBoot.set(
        nextBoot,
        new Error(`the handover to boot ${nextBoot}: ${(error as Error).message}`, {
          cause: error,
        }),
      );
    }
  };

  /**
   * The formats of the handover boot `boot` received; throws when none was recorded or it
   * could not be read.
   */
  formatsOf(boot: number): HandoverFormats {
    return this.#recordOf(boot).formats;
  }

  /** The LUO ABI (`luo-v2` or `luo-v1`) of the handover boot `boot` received; throws as {@link formatsOf}. */
  luoAbiOf(boot: number): string {
    return this.#recordOf(boot).luo;
  }

  #recordOf(boot: number): HandoverRecord {
    const record = this.#byBoot.get(boot);
    if (!record) throw new Error(`no handover was recorded for boot ${boot}`);
    if (record instanceof Error) throw record;
    return record;
  }

  #read(memory: PhysicalMemory, khoFdtPhys: number): HandoverRecord {
    const fdt = readLuoFdt(memory, khoFdtPhys);
    const formats: Record<string, string> = {};
    const sessions = readLuoSessionTable(
      memory,
      Number(fdt.sessionHeaderPhys),
      this.#maxSessions,
      fdt.version,
    );
    for (const session of sessions) {
      const name = sessionName.decode(session.name);
      const files = readLuoFileTable(
        memory,
        Number(session.files),
        Number(session.count),
        this.#maxFiles,
        fdt.version,
      );
      for (const file of files) formats[`${name}/${file.token}`] = file.compatible;
    }
    return { luo: luoAbiCompatible(fdt.version), formats };
  }
}
