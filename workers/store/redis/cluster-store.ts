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
import { RedisProtocolError, RedisUnavailableError } from './errors.js';
import { RedisHistory, type RedisMessage, type RoomRead } from './history.js';
import { CONTROL_CHANNEL, KEY_PREFIX, ROOMS_KEY, cursorKey, metaKey, partitionIndex, presenceKey, redactKey, roomChannel, streamKey } from './keys.js';
import { REDACT, ROOMS, TOUCH } from './scripts.js';
import { validateClusterOptions } from './options.js';
import { RedisPresence } from './presence.js';
import { DEFAULT_SEQUENCER_LIMITS, RedisSequencer, type PublishInput, type PublishResult, type SequencerLimits } from './sequencer.js';
import { RedisSubscriber, type SubscriberEvents, type SubscriberOptions } from './subscriber.js';

/**
 * Followed rooms whose keys' TTLs one housekeeping tick refreshes at most, and rooms per TOUCH
 * script call (the calls of a tick are issued together: one pipeline per instance, at most
 * 10000 / 128 = 79 commands, well inside redisMaxQueued). docs/LIMITS.md.
 */
export const MAX_TTL_REFRESH_PER_TICK = 10_000;
export const TTL_REFRESH_ROOMS_PER_CALL = 128;

/**
 * Presence entries this node still has to remove (a join that failed, a leave that could not be
 * sent), retried every housekeeping tick; past the bound the oldest is dropped (the entry then
 * stays until the node stops). docs/LIMITS.md.
 */
export const MAX_PENDING_LEAVES = 10_000;
/** Pending leaves one housekeeping tick retries at most (oldest first; a failed one goes to the back). */
export const PENDING_LEAVES_PER_TICK = 1000;

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
  /**
   * Followed rooms by when their keys' TTLs were last refreshed (a join's read refreshes them
   * too), oldest first: a refresh re-inserts the room at the end. One entry per followed room.
   */
  private readonly touched = new Map<string, number>();
  /**
   * `room \0 conn` -> user: presence entries to remove that are not (or no longer) local members:
   * a join that failed after its PRESENCE call was sent (it may still run: a timed-out call is not
   * a refused one), a leave that failed. Without this a live node kept them for good: the sweep
   * only removes dead nodes' entries. At most MAX_PENDING_LEAVES, oldest first.
   */
  private readonly pendingLeaves = new Map<string, { room: string; conn: string; user: string }>();
  /** Pending leaves dropped at the bound (their entries stay until the node stops). */
  pendingLeavesDropped = 0;
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
    // The tick heartbeats (every heartbeatTtlMs / 3) and keeps followed rooms' keys alive (each
    // refreshed every roomTtlMs / 3), whichever is more often.
    const ttl = this.limits.roomTtlMs;
    const every = Math.min(this.heartbeatTtlMs / 3, ttl > 0 ? ttl / 3 : Infinity);
    this.timer = setInterval(() => { void this.housekeeping(); }, Math.max(50, Math.floor(every)));
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
    const rejoin = this.local.get(room)?.has(conn) === true;
    // A retried leave of this connection must not go out behind this join (it would remove the entry).
    this.pendingLeaves.delete(`${room}\0${conn}`);
    const entered = p.presence.join(room, conn, user);
    try {
      const [r, count] = await Promise.all([firstRead ?? ready.then(() => p.history.read(room, opts)), entered]);
      const conns = this.local.get(room) ?? new Map<string, string>();
      if (!this.local.has(room)) this.touched.set(room, Date.now());
      this.local.set(room, conns);
      conns.set(conn, user);
      return { ...await this.answer(p, room, r, since), first: count === 1 };
    } catch (err) {
      // The PRESENCE call may have run (sent, then timed out), or may still run: the connection
      // is not a member, so take its entry out again. The leave goes out behind the join on the
      // same connection, so Redis runs it after the join whenever that runs.
      if (!rejoin) void this.leavePresence(p, room, conn, user);
      if (firstRead !== null && (this.local.get(room)?.size ?? 0) === 0) {
        this.following.delete(room);
        this.local.delete(room);
        this.touched.delete(room);
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
      this.touched.delete(room);
      // The keys' TTL starts over as this node stops following: roomTtlMs from now, not from the last refresh.
      const ttl = this.limits.roomTtlMs;
      const touch = ttl > 0 ? TOUCH.run(p.conn, [metaKey(room), streamKey(room), cursorKey(room), redactKey(room)], [String(ttl)], `keep ${room} after its last local leave`)
        .catch((err: unknown) => { this.lastHousekeepingError = err as Error; }) : Promise.resolve();
      unsubscribed = Promise.all([p.sub.remove(room), touch]).then(() => undefined);
    }
    const leaving = p.presence.leave(room, conn, user);
    // Not a local member any more: if Redis cannot be told now, the tick retries until it is.
    leaving.catch(() => { this.pendLeave(room, conn, user); });
    const [, left] = await Promise.all([unsubscribed, leaving]);
    return left;
  }

  /** Removes a presence entry that is not a local member; on failure, the housekeeping tick retries. */
  private async leavePresence(p: Partition, room: string, conn: string, user: string): Promise<void> {
    try {
      await p.presence.leave(room, conn, user);
      this.pendingLeaves.delete(`${room}\0${conn}`);
    } catch (err) {
      this.lastHousekeepingError = err as Error;
      this.pendLeave(room, conn, user);
    }
  }

  private pendLeave(room: string, conn: string, user: string): void {
    if (this.closed || this.local.get(room)?.has(conn) === true) return;
    const key = `${room}\0${conn}`;
    this.pendingLeaves.delete(key);
    this.pendingLeaves.set(key, { room, conn, user });
    while (this.pendingLeaves.size > MAX_PENDING_LEAVES) {
      this.pendingLeaves.delete(this.pendingLeaves.keys().next().value!);
      this.pendingLeavesDropped++;
    }
  }

  /** Presence entries still to remove (failed joins and leaves, retried every housekeeping tick). */
  get pendingLeaveCount(): number { return this.pendingLeaves.size; }

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

  /**
   * Redacts message `seq` of the room's `epoch`: its tombstone (`frame`) replaces it in every
   * history read and is published to every node following the room. False when the room, the
   * epoch or the stream's entry is gone (nothing written).
   */
  async redact(room: string, epoch: string, seq: number, frame: Uint8Array): Promise<boolean> {
    const r = await REDACT.run(this.part(room).conn, [metaKey(room), streamKey(room), redactKey(room)],
      [epoch, String(seq), Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength), roomChannel(room), String(this.limits.roomTtlMs)], `redact ${seq} in ${room}`);
    return r === 1;
  }

  /**
   * The `limit` smallest names past `after` of the rooms with presence on any node (every
   * instance's `sc:rooms`), sorted, with their connections over all nodes (always >= 1); `more`
   * when names past the page's last exist. Each instance's names and counts are one snapshot
   * (the ROOMS script): a room is listed exactly while some connection is present in it.
   */
  async rooms(after: string, limit: number): Promise<{ rooms: { room: string; connections: number }[]; more: boolean }> {
    const lists = await Promise.all(this.parts.map((p) => ROOMS.run(p.conn, [ROOMS_KEY], [KEY_PREFIX, after, String(limit + 1)], 'list the rooms')));
    const all: { room: string; connections: number }[] = [];
    for (const l of lists) {
      if (!Array.isArray(l) || l.length % 2 !== 0) throw new RedisProtocolError('rooms script: bad reply');
      for (let i = 0; i < l.length; i += 2) all.push({ room: (l[i] as Buffer).toString('utf8'), connections: Number(l[i + 1]) });
    }
    // A room's keys live on one instance, so the lists are disjoint: merge them by name.
    all.sort((x, y) => (x.room < y.room ? -1 : x.room > y.room ? 1 : 0));
    return { rooms: all.slice(0, limit), more: all.length > limit };
  }

  /** Connections present in the room over all nodes. */
  async connections(room: string): Promise<number> {
    const n = await this.part(room).conn.call(['HLEN', presenceKey(room)], `count the connections of ${room}`);
    return typeof n === 'number' ? n : 0;
  }

  /**
   * Refreshes the TTLs of the followed rooms whose keys were last refreshed roomTtlMs / 3 ago or
   * more, oldest first, at most MAX_TTL_REFRESH_PER_TICK per tick in TOUCH calls of
   * TTL_REFRESH_ROOMS_PER_CALL rooms, so a room that people sit in
   * quietly keeps its epoch and history: its keys expire only roomTtlMs after the last node with
   * members stopped following it. The calls are issued in this tick (one pipeline per instance).
   * A failed refresh is retried roomTtlMs / 3 later (two more chances before the keys expire).
   */
  private refreshTtls(now: number): Promise<unknown> {
    const ttl = this.limits.roomTtlMs;
    if (ttl <= 0) return Promise.resolve();
    const due = now - ttl / 3;
    const rooms: string[] = [];
    for (const [room, at] of this.touched) {
      if (at > due || rooms.length >= MAX_TTL_REFRESH_PER_TICK) break;
      rooms.push(room);
    }
    const byPart = new Map<Partition, string[]>();
    for (const room of rooms) {
      this.touched.delete(room);
      this.touched.set(room, now);
      const p = this.part(room);
      if (!p.conn.healthy) continue;
      const keys = byPart.get(p) ?? [];
      byPart.set(p, keys);
      keys.push(metaKey(room), streamKey(room), cursorKey(room), redactKey(room));
    }
    const calls: Promise<unknown>[] = [];
    const step = 4 * TTL_REFRESH_ROOMS_PER_CALL;
    for (const [p, keys] of byPart) {
      for (let i = 0; i < keys.length; i += step) {
        calls.push(TOUCH.run(p.conn, keys.slice(i, i + step), [String(ttl)], 'keep followed rooms alive')
          .catch((err: unknown) => { this.lastHousekeepingError = err as Error; }));
      }
    }
    return Promise.all(calls);
  }

  /**
   * Heartbeat, then sweep dead nodes' presence (bounded per call); keeps followed rooms' keys
   * alive. Failures wait for the next tick.
   */
  private async housekeeping(): Promise<void> {
    const touched = this.refreshTtls(Date.now());
    let retries = 0;
    for (const { room, conn, user } of [...this.pendingLeaves.values()]) {
      if (retries++ >= PENDING_LEAVES_PER_TICK) break;
      const p = this.part(room);
      if (p.conn.healthy && this.local.get(room)?.has(conn) !== true) void this.leavePresence(p, room, conn, user);
    }
    await Promise.all(this.parts.map(async (p) => {
      if (!p.conn.healthy) return;
      try {
        await p.presence.heartbeat();
        await p.presence.sweep();
      } catch (err) {
        this.lastHousekeepingError = err as Error;
      }
    }));
    await touched;
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
      for (const { room, conn, user } of this.pendingLeaves.values()) leaves.push(this.part(room).presence.leave(room, conn, user));
      await Promise.allSettled(leaves);
      await Promise.allSettled(this.parts.map((p) => p.presence.retire()));
    }
    this.local.clear();
    this.following.clear();
    this.touched.clear();
    this.pendingLeaves.clear();
    for (const p of this.parts) {
      p.sub.close();
      p.conn.close();
    }
  }
}
