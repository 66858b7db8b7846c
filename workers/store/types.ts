/**
 * The store: what must outlive a process, behind one interface with several backends (memory,
 * sqlite; redis later). The shard calls it from its loop, synchronously, in batches:
 *
 *   beginBatch(); ...room()/findCid()/append()/setCursor() per inbound record...; commit();
 *   then, and only then, the batch's acks go out.  Between batches: trim(now, budgetMs).
 *
 * Reads inside a batch see the batch's own writes. A backend supplies storage, not semantics:
 * every rule below holds for each one (test/store.backends.test.ts runs one suite against all).
 * See docs/STORE.md for the integration and what each durability setting promises.
 */

export interface RoomInfo {
  readonly name: string;
  /** Stays the same for as long as the store keeps the room. */
  readonly epoch: string;
  /** The latest seq assigned (0 before the first message). Includes the open batch's appends. */
  readonly seq: number;
}

export interface StoredMessage {
  readonly seq: number;
  readonly from: string;
  /** Milliseconds since the epoch, as in the `msg` frame. */
  readonly ts: number;
  readonly cid: string | null;
  /** The encoded `msg` frame, replayable as is. */
  readonly frame: Uint8Array;
}

export interface AppendInput {
  /** Must be room(name).seq + 1: the shard encodes the frame with it before appending. */
  readonly seq: number;
  readonly from: string;
  readonly ts: number;
  readonly cid: string | null;
  /** Copied by append(): the caller may reuse the buffer at once. */
  readonly frame: Uint8Array;
}

export interface TrimResult {
  /** Messages and dedupe ids removed by this call. */
  readonly removed: number;
  /** True when the call ran out of budget with work left (call again next tick). */
  readonly more: boolean;
}

export interface StoreLimits {
  /** Messages kept per room (count); older ones are trimmed. 0 keeps none. */
  historyLimit: number;
  /** Messages older than this are trimmed; 0 = no age limit. */
  historyMaxAgeMs: number;
  /** A repeated cid is recognised among the room's last N messages... */
  cidWindowMessages: number;
  /** ...that are also at most this old. */
  cidWindowMs: number;
  /** Room entries (epoch, seq) a durable backend caches in memory. */
  roomCacheEntries: number;
}

export const DEFAULT_STORE_LIMITS: StoreLimits = {
  historyLimit: 1000,
  historyMaxAgeMs: 0,
  cidWindowMessages: 1000,
  cidWindowMs: 10 * 60_000,
  roomCacheEntries: 100_000,
};

/** Every limit is an integer >= 0 (roomCacheEntries >= 1): a TypeError names the one that is not. */
export function checkLimits(l: StoreLimits): StoreLimits {
  for (const key of Object.keys(DEFAULT_STORE_LIMITS) as (keyof StoreLimits)[]) {
    const v = l[key];
    const min = key === 'roomCacheEntries' ? 1 : 0;
    if (!Number.isSafeInteger(v) || v < min) throw new TypeError(`store option ${key} must be an integer >= ${min}, got ${String(v)}`);
  }
  return l;
}

export interface Store {
  readonly kind: 'memory' | 'sqlite';
  /** True when committed data outlives the process. */
  readonly durable: boolean;

  /** The room's epoch and seq; a room the store does not have is created (seq 0, a new epoch). */
  room(name: string): RoomInfo;

  /** Opens a batch: writes are buffered until commit(). */
  beginBatch(): void;
  /** Records message `m.seq` (= room(name).seq + 1, else STORE_MISUSE) in the open batch. */
  append(room: string, m: AppendInput): void;
  /**
   * Replaces the stored frame of message `seq` (a redaction's tombstone): in the open batch when
   * the message is still pending there, else written to the backend at once. False when the
   * store no longer keeps that message.
   */
  replace(room: string, seq: number, frame: Uint8Array): boolean;
  /** Sets `user`'s read cursor in `room` in the open batch. */
  setCursor(room: string, user: string, seq: number): void;
  /** Makes the batch durable (per the backend's setting); acks may go out once it returns. */
  commit(): void;
  /** Drops the open batch's writes (after an error): rooms return to their committed seq. */
  rollback(): void;
  /** True between beginBatch() and commit()/rollback(). */
  readonly inBatch: boolean;

  /** Messages fromSeq..toSeq (inclusive) still kept, in seq order, at most maxBytes of frames (at least one). */
  range(room: string, fromSeq: number, toSeq: number, maxBytes: number): StoredMessage[];
  /** The newest `limit` kept messages, oldest first, at most maxBytes of frames (at least one). */
  latest(room: string, limit: number, maxBytes: number): StoredMessage[];
  /** The seq of the oldest message kept (seq + 1 when none). */
  firstKept(room: string): number;
  /** The user's read cursor, or null when the room has none for them. */
  cursor(room: string, user: string): number | null;
  /** The seq of `user`'s earlier message with this cid in the dedupe window, or 0. */
  findCid(room: string, user: string, cid: string, now: number): number;

  /**
   * Between batches, after their acks went out: work a backend deferred from its commits (the
   * SQLite backend moves its log into its tables, docs/STORE.md). Cheap when there is none.
   */
  maintain(): void;
  /** Retention and dedupe-window trimming in small steps; returns within about budgetMs. Not inside a batch. */
  trim(now: number, budgetMs: number): TrimResult;
  /**
   * The shard no longer holds the room in memory. A durable backend drops its cached entry; the
   * memory backend drops the room (today's behaviour: a new epoch on the next join).
   */
  evict(room: string): void;
  /** Closes the store; an open batch is rolled back. Safe to call twice. */
  close(): void;
}
