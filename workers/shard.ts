/**
 * Piscina entry: one long-lived task per shard worker. It runs the shard loop until the main
 * thread sends IN_DRAIN (the task then resolves) or something throws (the task rejects and the
 * main thread restarts the shard). It never touches a socket.
 *
 * The loop drains the inbound ring in batches, publishes outbound once per batch, yields to the
 * event loop between full batches, spins briefly when the ring runs dry, then parks the thread in
 * Atomics.wait until the main thread publishes more or the next housekeeping tick is due. A
 * blocking wait is right here: the shard has no other work, and a notify that meets a blocked
 * waiter is a plain futex wake, where one that meets Atomics.waitAsync posts a task to this
 * thread's event loop (an eventfd write, a loop turn, a promise) on both threads' time. The tick
 * (loop lag, heap, room TTLs, stats) therefore runs from the loop, not from a timer. While it
 * waits for outbound room (waitForFree, async) a ref'd interval keeps the thread alive: on Node
 * 20 a pending waitAsync alone does not (nodejs/node#44729).
 *
 * In cluster mode (`cluster` set) the task runs cluster-shard.ts's loop instead: Redis is the
 * store and the worker's event loop must keep running, so that loop never blocks.
 *
 * With a durable store (`store: 'sqlite'`) the shard opens its own connection at start and
 * commits each batch's writes before it publishes the batch's output (handler.commit()), also
 * where it publishes mid-batch for want of outbound room: an ack, and a msg, mean committed.
 * The tick trims retention within a time budget. A store error (at open, at a commit, in a read)
 * ends the task with an Error whose message starts with the StoreError's code (`STORE_FULL: ...`):
 * nothing of the failed batch was published, the main thread answers its records with
 * `unavailable`, and the restarted shard reloads its rooms from what was committed.
 */
import { RingReader, RingWriter } from '../engine/ring/index.js';
import {
  S_ARRAY_BUFFERS, S_EVENTS_DROPPED, S_CONNS, S_CURSORS, S_CURSORS_EVICTED, S_HEAP_USED, S_HISTORY_EVICTED, S_HISTORY_BYTES, S_HISTORY_MSGS, S_LOOP_LAG_MS, S_MEMBERS, S_OUT_WAITS, S_PARKS,
  S_DELIVERED, S_ERR_BASE, S_HEARTBEAT, S_INFO_BYTES, S_INFO_SKIPPED, S_IN_HANDLED, S_OUT_PUBLISH_END, S_POOL_IN_USE, S_POOL_FREE_BYTES, S_PRESENT_USERS, S_PUBLISHED, S_RECORDS_IN, S_ROOMS, S_STORE_HEALTHY, S_UP,
} from '../engine/metrics/shard-stats.js';
import { Handler, type HandlerOptions } from './handler.js';
import { SqliteStore, StoreError, type FsyncMode, type Store } from './store/index.js';
import type { ClusterShardTask } from './cluster-shard.js';

export interface ShardTask extends HandlerOptions {
  index: number;
  inbound: SharedArrayBuffer;
  outbound: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** 'memory': no store, the history cache is the history. 'sqlite': the durable store in dataDir. */
  store: 'memory' | 'sqlite';
  dataDir: string;
  fsync: FsyncMode;
  historyMaxAgeMs: number;
  /** The store's automatic checkpoint (WAL pages): high when the engine runs its checkpoint thread. */
  autoCheckpointPages: number;
  /** Cluster mode (docs/CLUSTER.md): the shard's ClusterStore settings; null = single node (this loop). */
  cluster: ClusterShardTask['cluster'] | null;
  drainBudgetMs: number;
}

export interface ShardResult {
  index: number;
  records: number;
}

const BATCH = 1024;
const SPINS = 200;
const TICK_MS = 500;
/** Retention trimming per tick, in milliseconds of the shard's time. */
const TRIM_BUDGET_MS = 2;

function openStore(task: ShardTask): Store | null {
  if (task.store !== 'sqlite') return null;
  return new SqliteStore({
    dir: task.dataDir, fsync: task.fsync, historyLimit: task.historyLimit, historyMaxAgeMs: task.historyMaxAgeMs,
    cidWindowMessages: task.cidWindowMessages, cidWindowMs: task.cidWindowMs, autoCheckpointPages: task.autoCheckpointPages,
    shard: task.index,
  });
}

/** A store error crosses to the main thread as a plain Error whose message starts with its code. */
function storeFailure(e: unknown): unknown {
  return e instanceof StoreError ? new Error(`${e.code}: ${e.message}`) : e;
}

export async function runShard(task: ShardTask): Promise<ShardResult> {
  if (task.cluster !== null) {
    // Loaded only in cluster mode: a single-node shard never loads the Redis client.
    const { runClusterShard } = await import('./cluster-shard.js');
    return runClusterShard({ ...task, cluster: task.cluster });
  }
  let store: Store | null;
  try {
    store = openStore(task);
  } catch (e) {
    throw storeFailure(e);
  }
  try {
    return await loop(task, store);
  } catch (e) {
    throw storeFailure(e);
  } finally {
    store?.close();
  }
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function loop(task: ShardTask, store: Store | null): Promise<ShardResult> {
  const inbound = new RingReader(task.inbound);
  const out = new RingWriter(task.outbound);
  const stats = new Float64Array(task.stats);
  const h = new Handler(out, task, store);
  let records = 0;
  let outWaits = 0;
  const publishStats = (): void => {
    const rm = h.rooms;
    stats[S_ROOMS] = rm.rooms.size;
    stats[S_EVENTS_DROPPED] = h.eventQueue?.dropped ?? 0;
    stats[S_MEMBERS] = rm.memberships;
    stats[S_PRESENT_USERS] = rm.presentUsers;
    stats[S_INFO_BYTES] = rm.infoBytes;
    stats[S_INFO_SKIPPED] = rm.infoSkipped;
    stats[S_CONNS] = rm.conns.size;
    stats[S_CURSORS] = rm.cursorCount;
    stats[S_HISTORY_MSGS] = rm.historyMessages;
    stats[S_HISTORY_BYTES] = rm.history.bytes;
    stats[S_POOL_IN_USE] = rm.history.buffersHeld;
    stats[S_POOL_FREE_BYTES] = rm.history.pool.freeBytes;
    stats[S_HISTORY_EVICTED] = rm.history.evicted;
    stats[S_CURSORS_EVICTED] = rm.idle.evicted;
    stats[S_PUBLISHED] = h.published;
    stats[S_DELIVERED] = h.delivered;
    stats[S_RECORDS_IN] = records;
    stats[S_PARKS] = inbound.parks;
    stats[S_OUT_WAITS] = outWaits;
    stats.set(h.errors, S_ERR_BASE);
  };
  // The tick measures how late the loop came round to it (the shard's loop lag), samples the
  // heap and drops rooms past their TTL.
  // Scheduled on the monotonic clock: after a wall-clock step back, Date.now() would park an
  // idle shard for the size of the step, and its missed heartbeat would get it restarted.
  let nextTick = performance.now() + TICK_MS;
  const tickIfDue = (): boolean => {
    const now = performance.now();
    if (now < nextTick) return false;
    stats[S_LOOP_LAG_MS] = now - nextTick;
    nextTick = now + TICK_MS;
    const mem = process.memoryUsage();
    stats[S_HEAP_USED] = mem.heapUsed;
    stats[S_ARRAY_BUFFERS] = mem.arrayBuffers;
    const wall = Date.now(); // room TTLs and retention ages are wall-clock (workers/rooms.ts, the store)
    h.rooms.sweep(wall);
    h.commit(); // not in a batch here: tells the store which rooms the sweep dropped
    store?.trim(wall, TRIM_BUDGET_MS);
    h.rooms.history.trimIdle();
    publishStats();
    return true;
  };
  // Tell the main thread which input this publish answers (see S_IN_HANDLED), then publish.
  const publishOutput = (): void => {
    stats[S_IN_HANDLED] = inbound.position;
    stats[S_OUT_PUBLISH_END] = out.position;
    out.publish();
    if (h.crashAfterPublishOf >= 0 && h.published > h.crashAfterPublishOf) process.exit(70); // test hook
  };
  const keepAlive = setInterval(() => undefined, 1 << 30);
  stats[S_STORE_HEALTHY] = 1; // an embedded store is there or the shard is not running
  stats[S_UP] = 1;
  try {
    for (;;) {
      stats[S_HEARTBEAT]! += 1; // the supervisor's heartbeat (engine/server/supervisor.ts)
      let n = 0;
      while (n < BATCH && inbound.next() >= 0) {
        let need: number;
        while ((need = h.handle(inbound.bytes, inbound.offset, inbound.length)) > 0) {
          // Outbound is short of room: hand back what we consumed, publish, wait for the main thread.
          if (need > out.capacity) throw new Error(`a record needs ${need} outbound bytes, more than the ring's ${out.capacity}`);
          h.commit(); // before anything of the batch becomes visible; the next handle() opens a new batch
          publishOutput();
          inbound.syncRead();
          outWaits++;
          await out.waitForFree(need);
          stats[S_HEARTBEAT]! += 1;
        }
        inbound.release();
        n++;
        if (h.drained) break;
      }
      records += n;
      if (n > 0) {
        // Output first, then mark the input consumed: should the shard die in between, the
        // main thread answers the records it still sees as unhandled, rather than losing them.
        // The store's commit comes before both: an ack (and a msg) means committed.
        h.commit();
        publishOutput();
        inbound.syncRead();
        store?.maintain(); // the log's move, if due: after the batch's acks went out
        // Webhook events the batch's last record left waiting for outbound room go out before
        // the shard parks (workers/events.ts): the main thread frees the room as it reads.
        if (h.eventQueue !== null && h.eventQueue.pending > 0) {
          let need: number;
          while ((need = h.flushEvents()) > 0) {
            publishOutput();
            outWaits++;
            await out.waitForFree(need);
            stats[S_HEARTBEAT]! += 1;
          }
          publishOutput();
        }
        publishStats();
      }
      if (h.drained) return { index: task.index, records };
      // A full batch, or the tick, lets the event loop run (V8's posted GC tasks among others).
      if (tickIfDue() || n === BATCH) { await yieldToLoop(); continue; }
      let spins = 0;
      while (spins < SPINS && !inbound.hasNext()) spins++;
      if (!inbound.hasNext()) inbound.waitForDataSync(Math.max(1, nextTick - performance.now()));
    }
  } finally {
    clearInterval(keepAlive);
    stats[S_UP] = 0;
    h.rooms.dispose();
    publishStats();
  }
}

export default runShard;
