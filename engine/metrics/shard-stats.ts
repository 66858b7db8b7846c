/**
 * Per-shard numbers a shard writes into a small SharedArrayBuffer and the main thread reads at
 * `stats()` / scrape time: no message between threads. Plain Float64 stores: each slot has one
 * writer (the shard), 8-byte aligned stores are not torn on the platforms Node supports, and a
 * reader only needs a recent value, not a consistent snapshot across slots.
 */
export const S_UP = 0;
export const S_ROOMS = 1;
export const S_MEMBERS = 2;
export const S_PRESENT_USERS = 3;
export const S_CONNS = 4;
export const S_CURSORS = 5;
export const S_HISTORY_MSGS = 6;
export const S_PUBLISHED = 7;
export const S_RECORDS_IN = 8;
/** History buffers held: rooms' ring buffers and pooled buffers of frames over 4 KiB (0 once no room keeps history). */
export const S_POOL_IN_USE = 9;
export const S_HEAP_USED = 10;
export const S_LOOP_LAG_MS = 11;
export const S_PARKS = 12;
export const S_OUT_WAITS = 13;
export const S_DELIVERED = 14;
/** Bytes the shard's room histories are charged (payload + per-entry overhead; see workers/history.ts). */
export const S_HISTORY_BYTES = 15;
/** err replies sent by the shard: slot S_ERR_BASE + error number (frames.ts E_*). */
export const S_ERR_BASE = 16;
/** The shard isolate's ArrayBuffer bytes (process.memoryUsage().arrayBuffers there): history payloads live here. */
export const S_ARRAY_BUFFERS = 32;
/** History messages dropped to keep historyBudgetBytes. */
export const S_HISTORY_EVICTED = 33;
/** Idle read cursors dropped to keep maxCursorsPerRoom / maxCursorsPerShard. */
export const S_CURSORS_EVICTED = 34;
/** Bytes in the history pool's free lists (large frames; capped, trimmed when idle). */
export const S_POOL_FREE_BYTES = 35;
/** Bumped by the shard once per turn of its loop (at least once per tick): the supervisor's heartbeat. */
export const S_HEARTBEAT = 36;
/**
 * Written by the shard just before each outbound publish: the inbound read counter past the
 * last record whose output that publish carries, and the outbound write counter the publish
 * will make visible. After a crash, if the outbound ring's published counter equals
 * S_OUT_PUBLISH_END, that publish happened and the inbound records before S_IN_HANDLED were
 * answered already (the supervisor resets S_OUT_PUBLISH_END to -1 for each incarnation).
 */
export const S_IN_HANDLED = 37;
export const S_OUT_PUBLISH_END = 38;
/** Webhook events the shard dropped because its outbound ring was full at that instant (workers/events.ts). */
export const S_EVENTS_DROPPED = 39;
/** Bytes of identity info the shard keeps for present users (workers/rooms.ts, INFO_BUDGET_BYTES). */
export const S_INFO_BYTES = 40;
/** Joins whose info the shard did not keep: its info budget was spent. */
export const S_INFO_SKIPPED = 41;
/**
 * 1 while the shard's store can serve requests: always in single-node mode; in cluster mode the
 * ClusterStore's `healthy` (every Redis instance answers commands and delivers pub/sub). /readyz
 * is 503 while any shard's is 0.
 */
export const S_STORE_HEALTHY = 42;
export const SHARD_STAT_SLOTS = 43;

export const SHARD_STAT_NAMES: Record<number, string> = {
  [S_ROOMS]: 'rooms', [S_MEMBERS]: 'members', [S_PRESENT_USERS]: 'presentUsers', [S_CONNS]: 'conns',
  [S_CURSORS]: 'cursors', [S_HISTORY_MSGS]: 'historyMessages', [S_PUBLISHED]: 'published',
  [S_RECORDS_IN]: 'recordsIn', [S_POOL_IN_USE]: 'poolInUse', [S_HEAP_USED]: 'heapUsed',
  [S_LOOP_LAG_MS]: 'loopLagMs', [S_PARKS]: 'parks', [S_OUT_WAITS]: 'outboundWaits', [S_DELIVERED]: 'delivered',
  [S_HISTORY_BYTES]: 'historyBytes', [S_ARRAY_BUFFERS]: 'arrayBuffers', [S_HISTORY_EVICTED]: 'historyEvicted',
  [S_CURSORS_EVICTED]: 'cursorsEvicted', [S_POOL_FREE_BYTES]: 'poolFreeBytes', [S_STORE_HEALTHY]: 'storeHealthy',
  [S_INFO_BYTES]: 'infoBytes', [S_INFO_SKIPPED]: 'infoSkipped',
};

export function createShardStats(): SharedArrayBuffer {
  return new SharedArrayBuffer(SHARD_STAT_SLOTS * 8);
}
