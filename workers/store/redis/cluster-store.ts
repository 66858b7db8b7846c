/**
 * Cluster mode's store: the asynchronous counterpart of workers/store/types.ts's Store, for one
 * node over one or more Redis instances (rooms partitioned by partitionIndex). Redis is the
 * sequencer, the history and the presence/cursor table; the shard keeps its loop and awaits one
 * call per inbound batch: `publishBatch()` issues every room's script in the same tick, so
 * node-redis writes them as one pipeline per instance, and acks go out only after it resolves.
 * docs/CLUSTER.md says how the shard loop uses it.
 */
import { RedisConnection, type RedisConnectionOptions } from './connection.js';
import { RedisCursors } from './cursors.js';
import { RedisUnavailableError } from './errors.js';
import { RedisHistory, type RedisMessage, type RoomRead } from './history.js';
import { CONTROL_CHANNEL, metaKey, partitionIndex, presenceKey } from './keys.js';
import { validateClusterOptions } from './options.js';
import { RedisPresence } from './presence.js';
import { DEFAULT_SEQUENCER_LIMITS, RedisSequencer, type PublishInput, type PublishResult, type SequencerLimits } from './sequencer.js';
import { RedisSubscriber, type SubscriberEvents, type SubscriberOptions } from './subscriber.js';

export interface ClusterStoreOptions {
  /** One or more Redis URLs; every node must list the same set (any order). */
  urls: readonly string[];
  /** This node's id: 1..64 of [A-Za-z0-9_.-], unique among the live nodes. */
  node: string;
  limits?: Partial<SequencerLimits>;
  /** Bytes of missed messages a join returns at most (maxHistBytes); beyond: truncated. */
  maxHistBytes?: number;
  /** A node whose heartbeat is older than this is swept from presence. */
  heartbeatTtlMs?: number;
  connection?: Partial<Omit<RedisConnectionOptions, 'url'>>;
  subscriber?: Partial<Omit<SubscriberOptions, 'url' | 'node' | 'control'>>;
  /** This store hears the control channel (events.control): one store per node sets it. */
  control?: boolean;
}

export interface JoinResult {
  readonly epoch: string;
  /** The seq this node has delivered up to: the member receives every message after it. */
  readonly seq: number;
  readonly unread: number;
  readonly members: string[];
  /** The missed frames (replayable as is), ascending seq; null with truncated or without since. */
  readonly missed: MissedMessage[] | null;
  readonly truncated: boolean;
  /** This join moved the user's connection count in the room from 0 to 1 over all nodes (it published the `join` event). */
  readonly first: boolean;
}

export interface MissedMessage { readonly seq: number; readonly frame: Buffer }

/** The outcome of one room of a batch: its seqs, or the typed error its pubs are answered with. */
export type RoomOutcome = PublishResult | RedisUnavailableError;

interface Partition {
  readonly url: string;
  readonly conn: RedisConnection;
  readonly seq: RedisSequencer;
  readonly history: RedisHistory;
  readonly presence: RedisPresence;
  readonly cursors: RedisCursors;
  readonly sub: RedisSubscriber;
}

export class ClusterStore {
  readonly kind = 'redis' as const;
  /** What survives a process: Redis's persistence setting decides (docs/CLUSTER.md). */
  readonly durable = true;
  private readonly parts: Partition[];
  private readonly limits: SequencerLimits;
  private readonly maxHistBytes: number;
  private readonly heartbeatTtlMs: number;
  /** Local connections per room (the rooms this node follows). */
  private readonly local = new Map<string, Map<string, string>>();
  /** Rooms this node follows: resolves once the first join started delivery. */
  private readonly following = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** The last failure of the background heartbeat/sweep (retried on the next tick), for logs. */
  lastHousekeepingError: Error | null = null;

  constructor(private readonly o: ClusterStoreOptions, events: SubscriberEvents) {
    validateClusterOptions(o);
    this.limits = { ...DEFAULT_SEQUENCER_LIMITS, ...o.limits };
    this.maxHistBytes = o.maxHistBytes ?? 1 << 20;
    this.heartbeatTtlMs = o.heartbeatTtlMs ?? 15_000;
    this.parts = o.urls.map((url) => {
      const conn = new RedisConnection({ url, name: `shardchat-${o.node}`, ...o.connection });
      const history = new RedisHistory(conn);
      return {
        url, conn, history, seq: new RedisSequencer(conn, this.limits), cursors: new RedisCursors(conn),
        presence: new RedisPresence(conn, o.node, this.heartbeatTtlMs),
        sub: new RedisSubscriber({ url, node: o.node, roomTtlMs: this.limits.roomTtlMs, ...o.subscriber, control: o.control === true && url === o.urls[0] }, conn, history, {
          ...events,
          health: (h) => {
            if (h) this.reassert(url);
            events.health(h);
          },
        }),
      };
    });
  }

  /**
   * After a subscriber reconnects, put this node's presence entries of that instance back (a Redis
   * that lost its data lost them too; HSETNX makes it a no-op where they survived). A user whose
   * entries were lost gets a second `join` event: a repeat, never a lost member.
   */
  private reassert(url: string): void {
    const p = this.parts.find((x) => x.url === url);
    if (p === undefined || this.closed) return;
    for (const [room, conns] of this.local) {
      if (this.part(room) !== p) continue;
      for (const [conn, user] of conns) {
        p.presence.join(room, conn, user).catch((err: unknown) => { this.lastHousekeepingError = err as Error; });
      }
    }
    p.presence.heartbeat().catch((err: unknown) => { this.lastHousekeepingError = err as Error; });
  }

  /**
   * Connects every instance; rejects (unavailable) when one is down now, retrying in the
   * background (call close() either way).
   */
  async start(): Promise<void> {
    this.timer = setInterval(() => { void this.housekeeping(); }, Math.max(50, Math.floor(this.heartbeatTtlMs / 3)));
    // Both connections of every instance start (and keep retrying) even when one fails now:
    // the store turns healthy by itself once Redis is reachable; start() reports the first failure.
    const results = await Promise.allSettled(this.parts.flatMap((p) => [
      p.conn.connect().then(() => p.presence.heartbeat()),
      p.sub.start(),
    ]));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  /** True when every instance answers commands and delivers pub/sub: what /readyz follows. */
  get healthy(): boolean { return !this.closed && this.parts.every((p) => p.conn.healthy && p.sub.healthy); }

  private part(room: string): Partition { return this.parts[partitionIndex(room, this.o.urls)]!; }

  /** Sequences the batch: every room's script in one tick (one pipeline per instance). */
  async publishBatch(batch: ReadonlyMap<string, readonly PublishInput[]>): Promise<Map<string, RoomOutcome>> {
    const rooms = [...batch.keys()];
    const settled = await Promise.allSettled(rooms.map((r) => this.part(r).seq.publish(r, batch.get(r)!)));
    const out = new Map<string, RoomOutcome>();
    settled.forEach((s, i) => {
      if (s.status === 'fulfilled') out.set(rooms[i]!, s.value);
      else if (s.reason instanceof RedisUnavailableError) out.set(rooms[i]!, s.reason);
      else throw s.reason;
    });
    return out;
  }

  /**
   * A local connection joins: subscribe first (the subscriber buffers), then read the room and
   * register presence, then start delivery after the read's seq. For a room this node already
   * follows (or is starting to follow: a concurrent join waits for the first one's start), the
   * reply's seq is what this node has delivered when the reply is made, and `missed` runs exactly
   * up to it, so the member neither misses a message in flight to the node nor gets one twice.
   * The caller must emit `joined` in the same turn as this promise resolves (no await between).
   */
  async join(room: string, conn: string, user: string, since: number | null, sinceEpoch: string | null): Promise<JoinResult> {
    const p = this.part(room);
    const opts = { user, since, sinceEpoch, maxMissed: this.limits.historyLimit, maxBytes: this.maxHistBytes, roomTtlMs: this.limits.roomTtlMs };
    let ready = this.following.get(room);
    let firstRead: Promise<RoomRead> | null = null;
    if (ready === undefined) {
      firstRead = (async () => {
        await p.sub.add(room);
        const r = await p.history.read(room, opts);
        p.sub.begin(room, r.epoch, r.seq);
        return r;
      })();
      ready = firstRead.then(() => undefined);
      // The first join reports a failure itself; a concurrent one awaiting `ready` sees it too.
      ready.catch(() => undefined);
      this.following.set(room, ready);
    }
    try {
      const [r, count] = await Promise.all([firstRead ?? ready.then(() => p.history.read(room, opts)), p.presence.join(room, conn, user)]);
      const conns = this.local.get(room) ?? new Map<string, string>();
      this.local.set(room, conns);
      conns.set(conn, user);
      return { ...await this.answer(p, room, r, since), first: count === 1 };
    } catch (err) {
      if (firstRead !== null && (this.local.get(room)?.size ?? 0) === 0) {
        this.following.delete(room);
        this.local.delete(room);
        await p.sub.remove(room).catch(() => { /* the subscriber is down: nothing to undo */ });
      }
      throw err;
    }
  }

  /** The join reply from the read and the subscriber's position, extending `missed` up to that position. */
  private async answer(p: Partition, room: string, r: RoomRead, since: number | null): Promise<Omit<JoinResult, 'first'>> {
    const members = await p.presence.who(room);
    let missed: MissedMessage[] | null = r.missed;
    let truncated = r.truncated;
    let upTo = r.seq;
    for (let round = 0; ; round++) {
      const pos = p.sub.position(room) ?? { epoch: r.epoch, seq: r.seq };
      const base = { epoch: pos.epoch, seq: pos.seq, unread: Math.max(0, pos.seq - (r.cursor ?? pos.seq)), members };
      if (since === null || truncated) return { ...base, missed: null, truncated };
      if (pos.epoch !== r.epoch || round > 3) return { ...base, missed: null, truncated: true };
      if (pos.seq <= upTo) return { ...base, missed: missed!.filter((m) => m.seq <= pos.seq), truncated: false };
      // The node delivered past the read while we waited: take the difference from the
      // subscriber's memory (no await: the position cannot move meanwhile), else the stream.
      const extra = p.sub.recent(room, upTo + 1, pos.seq)
        ?? await p.history.range(room, upTo + 1, pos.seq, pos.seq - upTo, Number.MAX_SAFE_INTEGER);
      const all = [...missed!, ...extra];
      let bytes = 0;
      for (const m of all) bytes += m.frame.length;
      const contiguous = extra.length === pos.seq - upTo && extra[0]?.seq === upTo + 1;
      if (!contiguous || all.length > this.limits.historyLimit || bytes > this.maxHistBytes) truncated = true;
      missed = all;
      upTo = pos.seq;
    }
  }

  /**
   * A local connection leaves; the last one unsubscribes the node from the room. Resolves with the
   * user's connections left in the room over all nodes (0: this leave published the `leave` event).
   * The local bookkeeping is undone first, so a leave that fails (unavailable) still stops delivery.
   */
  async leave(room: string, conn: string, user: string): Promise<number> {
    const p = this.part(room);
    const conns = this.local.get(room);
    conns?.delete(conn);
    let unsubscribed: Promise<void> = Promise.resolve();
    if (conns !== undefined && conns.size === 0) {
      this.local.delete(room);
      this.following.delete(room);
      unsubscribed = p.sub.remove(room);
    }
    const [, left] = await Promise.all([unsubscribed, p.presence.leave(room, conn, user)]);
    return left;
  }

  /** The room's epoch and latest seq as Redis has them now (epoch null: no such room). Creates nothing. */
  async meta(room: string): Promise<{ epoch: string | null; seq: number }> {
    const r = await this.part(room).conn.call(['HMGET', metaKey(room), 'e', 's'], `read the state of ${room}`);
    const [e, s] = Array.isArray(r) ? r : [];
    if (!Buffer.isBuffer(e)) return { epoch: null, seq: 0 };
    return { epoch: e.toString('latin1'), seq: Buffer.isBuffer(s) ? Number(s.toString('latin1')) : 0 };
  }

  /** True while this node delivers the room (a local member joined it and has not left). */
  follows(room: string): boolean { return this.local.has(room); }

  /** `read`: the user's cursor after the update (null: the room or epoch is gone). */
  read(room: string, user: string, seq: number, epoch: string | null = null): Promise<number | null> {
    return this.part(room).cursors.advance(room, user, seq, epoch);
  }

  /** `hist`: with `after`, the `limit` just after it; with `before`, just before it; else the latest. */
  async hist(room: string, q: { before?: number; after?: number; limit: number }): Promise<RedisMessage[]> {
    const h = this.part(room).history;
    if (q.after !== undefined) return h.range(room, q.after + 1, Number.MAX_SAFE_INTEGER, q.limit, this.maxHistBytes);
    if (q.before !== undefined) return h.latest(room, q.limit, this.maxHistBytes, q.before - 1);
    return h.latest(room, q.limit, this.maxHistBytes);
  }

  who(room: string): Promise<string[]> { return this.part(room).presence.who(room); }

  /** Publishes `payload` on the control channel (first instance): every node whose store has `control` hears it, this one too. */
  async publishControl(payload: string): Promise<void> {
    await this.parts[0]!.conn.call(['PUBLISH', CONTROL_CHANNEL, payload], 'publish a control message');
  }

  /** Connections present in the room over all nodes. */
  async connections(room: string): Promise<number> {
    const n = await this.part(room).conn.call(['HLEN', presenceKey(room)], `count the connections of ${room}`);
    return typeof n === 'number' ? n : 0;
  }

  /** Heartbeat, then sweep dead nodes' presence (bounded per call). Failures wait for the next tick. */
  private async housekeeping(): Promise<void> {
    await Promise.all(this.parts.map(async (p) => {
      if (!p.conn.healthy) return;
      try {
        await p.presence.heartbeat();
        await p.presence.sweep();
      } catch (err) {
        this.lastHousekeepingError = err as Error;
      }
    }));
  }

  /**
   * Leaves every local presence entry (their leave events go out) and deletes the heartbeat, then
   * closes. Safe to call twice. `graceful` false (a crashed shard about to be restarted under the
   * same node id): entries and heartbeat stay, so the restarted store's joins of the same
   * connections change no count and make no events; should it not come back, the entries go with
   * the heartbeat's TTL like a dead node's.
   */
  async close(graceful = true): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    if (graceful) {
      const leaves: Promise<unknown>[] = [];
      for (const [room, conns] of this.local) {
        for (const [conn, user] of conns) leaves.push(this.part(room).presence.leave(room, conn, user));
      }
      await Promise.allSettled(leaves);
      await Promise.allSettled(this.parts.map((p) => p.presence.retire()));
    }
    this.local.clear();
    this.following.clear();
    for (const p of this.parts) {
      p.sub.close();
      p.conn.close();
    }
  }
}
