// The benchmark's kernel module: a `kho_bench` syscall that preserves and restores sets of folios
// through KHO and times that work inside the kernel, where it runs, with performance.now(). Beside
// each figure it times the baseline a copying handover would pay: a memory.view().set() copy of the
// same bytes, folio by folio, into folios of the same order. Plain JS because the kernel worker
// imports it directly from this folder.
import { KernelError, PAGE_SIZE, defineModule } from '@liveupdate/kernel';

const SUBTREE = 'kho-bench';
// Blob layout (little-endian): u32 count, u32 stamp, then count × { u64 phys, u32 order, u32 pad }.
const HEADER = 8;
const ENTRY = 16;

/** Bytes of a folio of `order`. */
const folioBytes = (order) => PAGE_SIZE * 2 ** order;

export default defineModule({
  name: 'kho_bench',
  init(ctx) {
    const { kho, pages, memory } = ctx;

    const allocSet = (order, count) => Array.from({ length: count }, () => pages.allocPages(order));
    const freeSet = (folios) => folios.forEach((folio) => pages.freePages(folio));

    /** Milliseconds to copy every folio of `folios` into fresh folios of the same order. */
    const timeCopy = (folios, order) => {
      const bytes = folioBytes(order);
      const targets = allocSet(order, folios.length);
      const start = performance.now();
      for (let i = 0; i < folios.length; i++) {
        memory
          .view(targets[i].pfn * PAGE_SIZE, bytes)
          .set(memory.view(folios[i].pfn * PAGE_SIZE, bytes));
      }
      const ms = performance.now() - start;
      freeSet(targets);
      return ms;
    };

    const ops = {
      /**
       * Allocate `count` folios of `order` for each set, fill them with `stamp`, preserve them
       * (timed), time the copy baseline, and publish the list for the next kernel.
       */
      preserve({ sets, stamp }) {
        const held = [];
        const results = sets.map(({ order, count }) => {
          const folios = allocSet(order, count);
          for (const folio of folios) memory.fill(folio.pfn * PAGE_SIZE, folioBytes(order), stamp);
          const start = performance.now();
          for (const folio of folios) kho.preserveFolio(folio);
          const ms = performance.now() - start;
          held.push(...folios);
          return { order, count, frames: count * 2 ** order, ms, copyMs: timeCopy(folios, order) };
        });
        const size = HEADER + held.length * ENTRY;
        const blob = kho.allocPreserve(size);
        memory.writeU32(blob, held.length);
        memory.writeU32(blob + 4, stamp);
        held.forEach((folio, i) => {
          memory.writeU64(blob + HEADER + i * ENTRY, BigInt(folio.pfn * PAGE_SIZE));
          memory.writeU32(blob + HEADER + 8 + i * ENTRY, folio.order);
        });
        kho.addSubtree(SUBTREE, blob, size);
        return results;
      },
      /**
       * Restore what the previous kernel preserved, one order at a time (timed), check that the
       * folios still hold their stamp, time the copy baseline, and free them.
       */
      restore() {
        const { phys: blob } = kho.retrieveSubtree(SUBTREE);
        const count = memory.readU32(blob);
        const stamp = memory.readU32(blob + 4);
        const byOrder = new Map();
        for (let i = 0; i < count; i++) {
          const phys = Number(memory.readU64(blob + HEADER + i * ENTRY));
          const order = memory.readU32(blob + HEADER + 8 + i * ENTRY);
          if (!byOrder.has(order)) byOrder.set(order, []);
          byOrder.get(order).push(phys);
        }
        kho.restoreFree(blob);
        return [...byOrder].map(([order, physs]) => {
          const folios = new Array(physs.length);
          const start = performance.now();
          for (let i = 0; i < physs.length; i++) folios[i] = kho.restoreFolio(physs[i], order);
          const ms = performance.now() - start;
          const bytes = folioBytes(order);
          for (const phys of physs) {
            if (
              memory.view(phys, 1)[0] !== stamp ||
              memory.view(phys + bytes - 1, 1)[0] !== stamp
            ) {
              throw new KernelError(
                'EIO',
                `kho_bench: folio at 0x${phys.toString(16)} lost its contents`,
              );
            }
          }
          const copyMs = timeCopy(folios, order);
          freeSet(folios);
          return { order, count: physs.length, frames: physs.length * 2 ** order, ms, copyMs };
        });
      },
    };

    ctx.syscalls.register('kho_bench', (_sys, op, args) => {
      const fn = ops[op];
      if (!fn) throw new KernelError('EINVAL', `kho_bench: unknown op ${String(op)}`);
      return fn(args ?? {});
    });
  },
});
