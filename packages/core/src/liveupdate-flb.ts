/** The arguments of every FLB op (kernel: `struct liveupdate_flb_op_args`). */
export interface FlbOpArgs {
  /** The FLB being called. */
  readonly flb: LiveUpdateFlb;
  /**
   * The FLB's handle to its preserved state, by convention the physical address of its
   * serialized structure in KHO-preserved memory. Output of `preserve`, which must set it; input
   * to the others. It is the only thing of the FLB's that crosses the kexec (as `luo_flb_ser.data`).
   */
  data: bigint;
  /**
   * The live object of this kernel: output of `preserve` (outgoing) and of `retrieve` (incoming),
   * input to `unpreserve` and `finish`. Never handed over. What `flbGetOutgoing` and
   * `flbGetIncoming` return.
   */
  obj: unknown;
}

/**
 * A file-lifecycle-bound object (kernel: `struct liveupdate_flb` with its
 * `liveupdate_flb_ops`): global state that several preserved files share — an IOMMU's or a PCI
 * bus's — preserved while at least one file of a linked handler is, and finished after the last
 * such file finishes in the next kernel. Link it to handlers with `registerFlb(ctx, handler, flb)`.
 *
 * LUO keeps two refcounts. Outgoing: +1 per preserved file of a linked handler; the first calls
 * `preserve`, the last unpreserve calls `unpreserve`; at reboot every FLB with a count is written
 * as `{ compatible, data, count }`. Incoming: starts from that count; each finish of a linked file
 * takes one off; at 0 `finish` runs, after an implicit `retrieve` if nobody retrieved it.
 *
 * All four ops are required and may be async. They go through the same wrapper as handler ops: a
 * `KernelError` keeps its errno, any other throw becomes `EIO` with a kernel log line, and a throw
 * from `unpreserve` or `finish` is logged and LUO carries on. An op runs holding the FLB's lock:
 * calling `flbGetIncoming` for the same FLB from inside its own op never returns (as upstream).
 */
export interface LiveUpdateFlb {
  /**
   * Names the FLB and the layout of its preserved data, versioned (`"iommu-v1"`): 1 to 47 bytes,
   * unique among FLBs. After a kexec the FLB with exactly this compatible gets the data.
   */
  readonly compatible: string;

  /**
   * `preserve`: called when the first file of any linked handler is preserved, before that
   * file's own `preserve`. Save the shared state into KHO-preserved memory, set `args.data`, and
   * `args.obj` if useful. A throw fails that file's `PRESERVE_FD` with its errno.
   */
  preserve(args: FlbOpArgs): void | Promise<void>;

  /**
   * `unpreserve`: called when the last preserved file of the linked handlers is unpreserved
   * (after that file's own `unpreserve`), or when the first file's `preserve` failed. Undo
   * `preserve` completely.
   */
  unpreserve(args: FlbOpArgs): void | Promise<void>;

  /**
   * `retrieve`: in the new kernel, rebuild the object from `args.data` and set `args.obj`. Called
   * once, on the first `flbGetIncoming`, or implicitly before `finish` if nobody asked. A throw
   * is returned to that caller and is sticky: the data was read and refused, so every later
   * `flbGetIncoming` gets the same errno, and `finish` is never called.
   */
  retrieve(args: FlbOpArgs): void | Promise<void>;

  /**
   * `finish`: the last linked file finished; release what is left of the preserved state.
   * `args.obj` is what `retrieve` set.
   */
  finish(args: FlbOpArgs): void | Promise<void>;
}

/** The name of an FLB op, as LUO calls it. */
export type FlbOp = Exclude<keyof LiveUpdateFlb, 'compatible'>;

/**
 * Declare an FLB with full type inference. Returns `flb` unchanged.
 *
 * @example
 * ```ts
 * export const busFlb = defineFlb({
 *   compatible: 'bus-v1',
 *   preserve(args) { args.data = BigInt(kho.allocPreserve(PAGE_SIZE)); ... },
 *   unpreserve(args) { kho.unpreserveFree(Number(args.data)); },
 *   retrieve(args) { args.obj = readBusState(Number(args.data)); },
 *   finish(args) { kho.restoreFree(Number(args.data)); },
 * });
 * ```
 */
export function defineFlb<F extends LiveUpdateFlb>(flb: F): F {
  return flb;
}
