import { GuestNic } from './vm-guest-nic.js';

const PAGE = 4096;

/** What {@link checkGuestMemory} found. */
export interface GuestMemoryCheck {
  /** Pages of guest RAM checked: every page after the NIC's ring and its buffers. */
  readonly pages: number;
  /** Pages whose stamp is not the one {@link fillGuestMemory} wrote. */
  readonly mismatches: number;
}

/** The stamp of the page at guest-physical address `gpa`: its page number, then a hash of it. */
function stamp(gpa: number): [number, number] {
  const page = gpa / PAGE;
  return [page, (Math.imul(page, 0x9e37_79b1) ^ 0x5a5a_5a5a) >>> 0];
}

function guestPages(guest: GuestNic): number[] {
  const from = GuestNic.bytesNeeded(guest.ringSize);
  const pages: number[] = [];
  for (let gpa = from; gpa + PAGE <= guest.ram.size; gpa += PAGE) pages.push(gpa);
  return pages;
}

/**
 * Stamp every page of guest RAM the NIC does not use (after its ring and buffers): the guest's
 * own memory, which no device writes, so it must come back exactly as it was after every update.
 */
export function fillGuestMemory(guest: GuestNic): void {
  for (const gpa of guestPages(guest)) {
    const view = guest.ram.view(gpa, 8);
    const [page, hash] = stamp(gpa);
    view.setUint32(0, page, true);
    view.setUint32(4, hash, true);
  }
}

/** Read back every stamp {@link fillGuestMemory} wrote. */
export function checkGuestMemory(guest: GuestNic): GuestMemoryCheck {
  const pages = guestPages(guest);
  let mismatches = 0;
  for (const gpa of pages) {
    const view = guest.ram.view(gpa, 8);
    const [page, hash] = stamp(gpa);
    if (view.getUint32(0, true) !== page || view.getUint32(4, true) !== hash) mismatches++;
  }
  return { pages: pages.length, mismatches };
}
