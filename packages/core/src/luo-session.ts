import type { File } from '@liveupdate/kernel';
import { Mutex } from './async-lock.js';
import { printableSessionName, sessionNameKey } from './session-name.js';
import type { FileHandler, FileId, FileOpArgs, LiveUpdateFileSession } from './file-handler.js';

/**
 * One preserved file (kernel: `struct luo_file`): outgoing, from `PRESERVE_FD` to the reboot; or
 * incoming, from deserialization to `FINISH`.
 */
export class LuoFile {
  readonly handler: FileHandler;
  readonly token: bigint;
  /**
   * The format of its serialized state: outgoing, the one last asked of `preserve` or `freeze`
   * (what `luo_file_ser.compatible` will say); incoming, the one it was written in.
   */
  compatible: string;
  /** LUO's own reference: taken at preserve, or the one `retrieve` returned. */
  file: File | null;
  serializedData: bigint;
  privateData: unknown;
  /** 0: never retrieved; 1: retrieved; negative: the errno of the failed retrieve (sticky). */
  retrieveStatus = 0;
  /** The identity registered against double preservation, while registered. */
  id: FileId | undefined;
  /** The per-file lock around freeze, unfreeze, retrieve, canFinish and finish. */
  readonly lock = new Mutex();
  /** Its `retrieve` is running: asking for this file again from inside it is a cycle. */
  retrieving = false;
  /** Incoming, `luo-v2`: bytes at `serializedData` that {@link dataCrc} covers (0: none). */
  dataSize = 0n;
  /** Incoming, `luo-v2`: crc32c of the serialized state, checked before `retrieve` or `finish`. */
  dataCrc = 0;
  /** Incoming: its serialized state checked out (crc32c) and may be handed to its handler. */
  verified = false;
  /**
   * Incoming: why this file's serialized state cannot be trusted (a mismatched checksum, a
   * `data` shared with another file). Its handler is never called; it fails with `EIO`.
   */
  damage: string | undefined;
  /** The session's handle given to every op of this file. */
  readonly session: LiveUpdateFileSession;

  constructor(
    session: LiveUpdateFileSession,
    handler: FileHandler,
    token: bigint,
    file: File | null,
    serializedData: bigint,
    compatible: string = handler.compatible,
  ) {
    this.session = session;
    this.handler = handler;
    this.token = token;
    this.compatible = compatible;
    this.file = file;
    this.serializedData = serializedData;
  }

  /** The arguments of a handler call on this file. */
  args(): FileOpArgs {
    return {
      handler: this.handler,
      compatible: this.compatible,
      session: this.session,
      file: this.file,
      serializedData: this.serializedData,
      privateData: this.privateData,
      retrieveStatus: this.retrieveStatus,
    };
  }
}

/**
 * A session (kernel: `struct luo_session`): a named set of files. Outgoing sessions are created
 * in this kernel and handed over at reboot; incoming ones came from the previous kernel.
 */
export class LuoSession {
  /** The name's bytes, 1..63 of any value. */
  readonly name: Uint8Array;
  /** {@link name} as a map key: equal keys are equal names. */
  readonly key: string;
  /** {@link name} for messages (see {@link printableSessionName}). */
  readonly label: string;
  readonly incoming: boolean;
  /** In preservation order (outgoing) or serialized order (incoming). */
  files: LuoFile[] = [];
  /** Incoming only: an fd was handed out by `RETRIEVE_SESSION`. */
  retrieved = false;
  /** The session mutex, around preserve, unpreserve, retrieve and finish. */
  readonly mutex = new Mutex();
  /** What handler ops get as `args.session`. */
  readonly handle: LiveUpdateFileSession;

  constructor(
    name: Uint8Array,
    incoming: boolean,
    handle: (session: LuoSession) => LiveUpdateFileSession,
  ) {
    this.name = name;
    this.key = sessionNameKey(name);
    this.label = printableSessionName(name);
    this.incoming = incoming;
    this.handle = handle(this);
  }

  fileByToken(token: bigint): LuoFile | undefined {
    return this.files.find((f) => f.token === token);
  }
}
