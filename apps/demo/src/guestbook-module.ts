// The demo's kernel module: a guestbook that lives in one KHO-preserved folio. Every kernel that
// boots restores the book its predecessor handed over, signs it with its version and boot time,
// and preserves it again for the next kernel. The kernel worker imports this file from dist/ by
// URL, afresh in every kernel: nothing of the book survives in JS, only the bytes in RAM.
import {
  KernelError,
  MAX_PAGE_ORDER,
  PAGE_SIZE,
  defineModule,
  getOrder,
  type Folio,
  type ModuleContext,
} from '@liveupdate/kernel';

/** Name of the KHO subtree the book is published under. */
export const GUESTBOOK_SUBTREE = 'guestbook';

/** What the `guestbook_read` syscall returns. */
export interface GuestbookContents {
  /** Physical address of the folio holding the book. */
  readonly phys: number;
  readonly order: number;
  /** The book's text: one line per kernel that signed it. */
  readonly text: string;
}

// struct guestbook_ser, at the start of the book's folio (little-endian, packed):
//   0  u32 magic   GUESTBOOK_MAGIC ("book")
//   4  u32 length  bytes of UTF-8 text that follow
//   8  u8  text[length], one line per kernel, each ending in "\n"
const GUESTBOOK_MAGIC = 0x6b6f6f62;
const OFFSET_MAGIC = 0;
const OFFSET_LENGTH = 4;
const OFFSET_TEXT = 8;

const folioBytes = (folio: Folio): number => PAGE_SIZE * 2 ** folio.order;

function readBook(ctx: ModuleContext, folio: Folio): string {
  const phys = folio.pfn * PAGE_SIZE;
  const magic = ctx.memory.readU32(phys + OFFSET_MAGIC);
  const length = ctx.memory.readU32(phys + OFFSET_LENGTH);
  if (magic !== GUESTBOOK_MAGIC || OFFSET_TEXT + length > folioBytes(folio)) {
    throw new KernelError(
      'EINVAL',
      `guestbook: folio at 0x${phys.toString(16)} holds no book (magic 0x${magic.toString(16)}, length ${length})`,
    );
  }
  return new TextDecoder().decode(ctx.memory.view(phys + OFFSET_TEXT, length));
}

/** Write `text` into `folio`, moving to a larger folio when it does not fit; returns the folio used. */
function writeBook(ctx: ModuleContext, folio: Folio, text: string): Folio {
  const bytes = new TextEncoder().encode(text);
  let target = folio;
  if (OFFSET_TEXT + bytes.length > folioBytes(folio)) {
    const order = getOrder(OFFSET_TEXT + bytes.length);
    if (order > MAX_PAGE_ORDER) throw new KernelError('E2BIG', 'guestbook: the book is full');
    target = ctx.pages.allocPages(order);
    ctx.pages.freePages(folio);
  }
  const phys = target.pfn * PAGE_SIZE;
  ctx.memory.writeU32(phys + OFFSET_MAGIC, GUESTBOOK_MAGIC);
  ctx.memory.writeU32(phys + OFFSET_LENGTH, bytes.length);
  ctx.memory.write(phys + OFFSET_TEXT, bytes);
  return target;
}

/** The book the previous kernel handed over, restored, or `null` when there is none. */
function restoreBook(ctx: ModuleContext): Folio | null {
  if (!ctx.kho.isKhoBoot) return null;
  let blob;
  try {
    blob = ctx.kho.retrieveSubtree(GUESTBOOK_SUBTREE);
  } catch (error) {
    if (KernelError.isInstance(error) && error.code === 'ENOENT') return null;
    throw error;
  }
  // The subtree's size is the whole folio, so its order follows from it.
  return ctx.kho.restoreFolio(blob.phys, getOrder(blob.size));
}

export default defineModule({
  name: 'guestbook',
  init(ctx) {
    const { kho, log } = ctx;
    const restored = restoreBook(ctx);
    let book: Folio;
    let text: string;
    if (restored) {
      book = restored;
      try {
        text = readBook(ctx, book);
      } catch (error) {
        ctx.pages.freePages(book);
        throw error;
      }
      const entries = text.split('\n').length - 1;
      log.info(
        `guestbook: restored a book of ${entries} ${entries === 1 ? 'entry' : 'entries'} from 0x${(book.pfn * PAGE_SIZE).toString(16)}`,
      );
    } else {
      book = ctx.pages.allocPages(0, { zero: true });
      text = '';
      log.info(`guestbook: new book at 0x${(book.pfn * PAGE_SIZE).toString(16)}`);
    }

    const how = kho.isKhoBoot ? 'kexec' : 'cold boot';
    const uptimeMs = (log.uptime() * 1000).toFixed(1);
    text += `${ctx.kernelVersion}  ${how} at ${new Date().toISOString()}, signed ${uptimeMs} ms into boot\n`;
    book = writeBook(ctx, book, text);
    kho.preserveFolio(book);
    kho.addSubtree(GUESTBOOK_SUBTREE, book.pfn * PAGE_SIZE, folioBytes(book));
    log.info(`guestbook: signed by ${ctx.kernelVersion}, preserved for the next kernel`);

    ctx.syscalls.register('guestbook_read', (): GuestbookContents => ({
      phys: book.pfn * PAGE_SIZE,
      order: book.order,
      text: readBook(ctx, book),
    }));
  },
});
