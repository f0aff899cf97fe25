/**
 * The counters `stats` reports (memcached's names, protocol.txt "General-purpose statistics"),
 * for one server process: they start at 0 when it starts, as memcached's do. Items and bytes
 * come from the table instead, which survives the live update.
 */
export class MemcachedStats {
  readonly startedAt = Math.floor(Date.now() / 1000);
  currConnections = 0;
  totalConnections = 0;
  cmdGet = 0;
  cmdSet = 0;
  cmdTouch = 0;
  getHits = 0;
  getMisses = 0;
  deleteHits = 0;
  deleteMisses = 0;
  incrHits = 0;
  incrMisses = 0;
  decrHits = 0;
  decrMisses = 0;
  touchHits = 0;
  touchMisses = 0;
  casHits = 0;
  casMisses = 0;
  casBadval = 0;
}
