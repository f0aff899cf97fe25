// The agent's wire format, declared once: a message is a 4-byte little-endian length, then that
// many bytes of UTF-8 JSON (an object). The fds a message carries travel with SCM_RIGHTS on the
// same sendmsg, so they arrive with the message's first byte (docs/unix-sockets.md).
import { KernelError, type Process } from '@liveupdate/machine';

/** Bytes of the length prefix. */
export const AGENT_FRAME_HEADER = 4;
/** The largest JSON body either side accepts; a longer one is `EMSGSIZE` and ends the connection. */
export const AGENT_MAX_MESSAGE = 64 * 1024;
/** The most fds one message carries (the kernel's `SCM_MAX_FD`). */
export const AGENT_MAX_FDS = 253;
/** Bytes asked of each `recvmsg`. */
const RECV_CHUNK = 16 * 1024;

/** A JSON object as it came off the wire: nothing about its fields is trusted yet. */
export type WireMessage = Record<string, unknown>;

/** One message received: its JSON body and the fds of the receiver that came with it. */
export interface ReceivedMessage {
  readonly body: WireMessage;
  readonly fds: readonly number[];
}

/** The frame for `body`: the length prefix, then the JSON. */
export function encodeFrame(body: WireMessage): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(body));
  if (json.length > AGENT_MAX_MESSAGE) {
    throw new KernelError('EMSGSIZE', `agent message of ${json.length} bytes`);
  }
  const frame = new Uint8Array(AGENT_FRAME_HEADER + json.length);
  new DataView(frame.buffer).setUint32(0, json.length, true);
  frame.set(json, AGENT_FRAME_HEADER);
  return frame;
}

/** Send `body` with `fds` (SCM_RIGHTS) on the socket `fd` of `process`. */
export async function sendMessage(
  process: Process,
  fd: number,
  body: WireMessage,
  fds: readonly number[] = [],
): Promise<void> {
  const frame = encodeFrame(body);
  // A blocking sendmsg queues everything or fails; the fds ride on its first byte.
  await process.sendmsg(fd, frame, fds.length > 0 ? { rights: [...fds] } : {});
}

/**
 * Reads whole messages from one connected socket. Bytes are buffered across receives; the fds of
 * a receive belong to the message that starts where that receive's bytes start (a receive stops
 * before a message with fds, so they never land in the middle of a frame sent whole).
 */
export class MessageReader {
  readonly #process: Process;
  readonly #fd: number;
  #buffer = new Uint8Array(0);
  /** Fds received but not yet handed out, by the buffer offset of the frame they came with. */
  #fdsAt = new Map<number, number[]>();

  constructor(process: Process, fd: number) {
    this.#process = process;
    this.#fd = fd;
  }

  /**
   * The next message, or `null` at end of file between messages. Throws `KernelError`:
   * `EINVAL` for end of file inside a frame or a body that is not a JSON object, `EMSGSIZE` for
   * a frame longer than {@link AGENT_MAX_MESSAGE}; fds that came with a refused frame are closed.
   */
  async next(): Promise<ReceivedMessage | null> {
    for (;;) {
      const frame = await this.#takeFrame();
      if (frame) return frame;
      const { data, rights } = await this.#process.recvmsg(this.#fd, RECV_CHUNK, {
        maxRights: AGENT_MAX_FDS,
      });
      if (data.length === 0) {
        if (this.#buffer.length === 0) return null;
        await this.#closeAll();
        throw new KernelError('EINVAL', `end of file inside an agent message`);
      }
      if (rights.length > 0) this.#fdsAt.set(this.#buffer.length, [...rights]);
      const grown = new Uint8Array(this.#buffer.length + data.length);
      grown.set(this.#buffer);
      grown.set(data, this.#buffer.length);
      this.#buffer = grown;
    }
  }

  /** Close every fd received and not handed out (the connection is going away). */
  async close(): Promise<void> {
    await this.#closeAll();
  }

  async #takeFrame(): Promise<ReceivedMessage | null> {
    if (this.#buffer.length < AGENT_FRAME_HEADER) return null;
    const length = new DataView(
      this.#buffer.buffer,
      this.#buffer.byteOffset,
      AGENT_FRAME_HEADER,
    ).getUint32(0, true);
    if (length > AGENT_MAX_MESSAGE) {
      throw new KernelError(
        'EMSGSIZE',
        `agent message length ${length} is over the limit of ${AGENT_MAX_MESSAGE}`,
      );
    }
    const end = AGENT_FRAME_HEADER + length;
    if (this.#buffer.length < end) return null;
    const json = this.#buffer.subarray(AGENT_FRAME_HEADER, end);
    // Fds that arrived with any byte of this frame are its own (a sender sends a frame whole).
    const fds: number[] = [];
    const rest = new Map<number, number[]>();
    for (const [offset, list] of this.#fdsAt) {
      if (offset < end) fds.push(...list);
      else rest.set(offset - end, list);
    }
    this.#fdsAt = rest;
    this.#buffer = this.#buffer.slice(end);
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
    } catch (error) {
      // The fds of a message no one can read are released, not leaked.
      await Promise.all(fds.map((fd) => this.#process.close(fd)));
      throw new KernelError('EINVAL', `agent message is not UTF-8 JSON: ${String(error)}`);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      await Promise.all(fds.map((fd) => this.#process.close(fd)));
      throw new KernelError('EINVAL', `agent message is ${JSON.stringify(body)}, not an object`);
    }
    return { body: body as WireMessage, fds };
  }

  async #closeAll(): Promise<void> {
    const fds = [...this.#fdsAt.values()].flat();
    this.#fdsAt.clear();
    await Promise.all(fds.map((fd) => this.#process.close(fd)));
  }
}
