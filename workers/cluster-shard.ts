/**
 * The shard loop in cluster mode (docs/CLUSTER.md §9): the single-node loop (shard.ts) parks its
 * thread in a blocking Atomics.wait, but here the worker's event loop must keep running (Redis
 * replies, subscriber messages, the store's timers), so this loop waits with RingReader's async
 * `waitForData` and yields to the loop between batches. A ref'd interval keeps the worker alive
 * while it waits: on Node 20 a pending waitAsync alone does not (nodejs/node#44729).
 *
 * Each turn reads up to BATCH inbound records (ClusterHandler copies what it needs), marks them
 * read, and sends the turn's pubs to Redis as one batch; output is written by the handler as its
 * Redis calls and subscriber messages arrive. While MAX_BATCHES_IN_FLIGHT batches (or
 * MAX_OPS_IN_FLIGHT other requests) are out, the loop reads no more: the inbound ring fills and
 * the main thread answers `overloaded`, as in single-node mode.
 */
import {
  S_CONNS, S_DELIVERED, S_ERR_BASE, S_HEAP_USED, S_HEARTBEAT, S_ARRAY_BUFFERS, S_LOOP_LAG_MS, S_MEMBERS, S_OUT_WAITS, S_PARKS,
  S_PRESENT_USERS, S_PUBLISHED, S_RECORDS_IN, S_ROOMS, S_STORE_HEALTHY, S_UP,
} from '../engine/metrics/shard-stats.js';
import { RingReader, RingWriter } from '../engine/ring/index.js';
import { ClusterHandler, type ClusterHandlerOptions } from './cluster-handler.js';

export interface ClusterShardTask extends ClusterHandlerOptions {
  inbound: SharedArrayBuffer;
  outbound: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** Time the drain may spend on what is in flight before the store closes (the engine's drain deadline, less a margin). */
  drainBudgetMs: number;
}

const BATCH = 1024;
const TICK_MS = 500;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export async function runClusterShard(task: ClusterShardTask): Promise<{ index: number; records: number }> {
  const inbound = new RingReader(task.inbound);
  const stats = new Float64Array(task.stats);
  const h = new ClusterHandler(new RingWriter(task.outbound), task);
  let records = 0;
  const publishStats = (): void => {
    let users = 0;
    for (const r of h.rooms.values()) users += r.users.size;
    stats[S_ROOMS] = h.rooms.size;
    stats[S_MEMBERS] = h.memberships;
    stats[S_PRESENT_USERS] = users;
    stats[S_CONNS] = h.conns.size;
    stats[S_PUBLISHED] = h.published;
    stats[S_DELIVERED] = h.delivered;
    stats[S_RECORDS_IN] = records;
    stats[S_PARKS] = inbound.parks;
    stats[S_OUT_WAITS] = h.out.waits;
    stats[S_STORE_HEALTHY] = h.store.healthy ? 1 : 0;
    stats.set(h.errors, S_ERR_BASE);
  };
  let nextTick = performance.now() + TICK_MS;
  const tickIfDue = (): void => {
    const now = performance.now();
    if (now < nextTick) return;
    stats[S_LOOP_LAG_MS] = now - nextTick;
    nextTick = now + TICK_MS;
    const mem = process.memoryUsage();
    stats[S_HEAP_USED] = mem.heapUsed;
    stats[S_ARRAY_BUFFERS] = mem.arrayBuffers;
    publishStats();
  };
  const keepAlive = setInterval(() => undefined, 1 << 30);
  // The store's health reaches /readyz within a tick whatever the loop does.
  const health = setInterval(() => { stats[S_STORE_HEALTHY] = h.store.healthy ? 1 : 0; stats[S_HEARTBEAT]! += 1; }, TICK_MS);
  stats[S_STORE_HEALTHY] = 0;
  // Up once the first connect settled (it is bounded by redisConnectTimeoutMs): an engine started
  // with Redis up is ready at once; one started while Redis is down starts anyway, not ready.
  await h.start();
  stats[S_STORE_HEALTHY] = h.store.healthy ? 1 : 0;
  stats[S_UP] = 1;
  try {
    for (;;) {
      stats[S_HEARTBEAT]! += 1;
      if (h.failure !== null) throw h.failure;
      let n = 0;
      while (n < BATCH && !h.draining && !h.saturated && inbound.next() >= 0) {
        h.handle(inbound.bytes, inbound.offset, inbound.length);
        inbound.release();
        n++;
      }
      if (n > 0) {
        records += n;
        inbound.syncRead();
        h.launch();
        publishStats();
      }
      tickIfDue();
      if (h.draining) {
        await h.drain(task.drainBudgetMs);
        return { index: task.index, records };
      }
      if (n === BATCH) { await yieldToLoop(); continue; }
      const wait = Math.max(1, nextTick - performance.now());
      if (h.saturated) { await h.settled(wait); continue; }
      if (!inbound.hasNext()) await inbound.waitForData(wait);
    }
  } finally {
    clearInterval(keepAlive);
    clearInterval(health);
    stats[S_UP] = 0;
    // After a drain the store is closed already (gracefully); after a crash it closes without
    // leaving presence: the restarted shard rejoins the same connections under the same node id.
    await h.store.close(false).catch(() => undefined);
    publishStats();
  }
}
