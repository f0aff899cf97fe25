import type { GuestNic, GuestNicState } from './vm-guest-nic.js';

/** What the guest's ring proves after a live update. */
export interface GuestRingCheck {
  /** Sequence numbers seen since the VM booted: 0 … `sequences - 1`. */
  readonly sequences: number;
  /** Sequence numbers skipped: a packet the NIC dropped (ring full) leaves a gap. */
  readonly missing: number;
  readonly outOfOrder: number;
  readonly badChecksum: number;
  /** Packets the guest took from the ring after it resumed, before the check. */
  readonly takenAfterResume: number;
  /**
   * No more gaps than packets the NIC counted as dropped (a gap it did not drop would be a packet
   * written somewhere else; a drop not yet seen as a gap is one the guest has not passed), no
   * reordering, no bad checksum, and packets kept coming after the
   * update.
   */
  readonly ok: boolean;
}

/** Packets the guest must take after resuming for the ring to count as alive. */
export const PACKETS_AFTER_RESUME = 200;

/**
 * Let the guest run until it has taken {@link PACKETS_AFTER_RESUME} packets past `resumed` (its
 * state when it resumed), or `timeoutMs` passed, then read what its ring shows: every sequence
 * number since the VM booted, in order, each packet's checksum right. `nicDrops` reads the NIC's
 * own count of dropped packets, which every gap must be one of.
 */
export async function checkGuestRing(
  guest: GuestNic,
  resumed: GuestNicState,
  nicDrops: () => number,
  timeoutMs = 5000,
): Promise<GuestRingCheck> {
  const end = Date.now() + timeoutMs;
  while (guest.state.consumed < resumed.consumed + PACKETS_AFTER_RESUME && Date.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const state = guest.state;
  const takenAfterResume = state.consumed - resumed.consumed;
  return {
    sequences: state.nextSequence,
    missing: state.missing,
    outOfOrder: state.outOfOrder,
    badChecksum: state.badChecksum,
    takenAfterResume,
    ok:
      state.missing <= nicDrops() &&
      state.outOfOrder === 0 &&
      state.badChecksum === 0 &&
      state.consumed + state.missing === state.nextSequence &&
      takenAfterResume >= PACKETS_AFTER_RESUME,
  };
}
