/**
 * History reads of cluster mode: the room's stream in Redis is the history, shared by all nodes.
 * `resume()` answers a `join` with `since`: exactly the messages after it, or `truncated`, never a
 * partial set (the room state, the first kept seq and the range come from one script run, so a
 * trim cannot fall between them). `range()` and `latest()` serve `hist`.
 */
import type { RedisConnection, Reply } from './connection.js';
import { newEpochCandidate } from './epoch.js';
import { RedisProtocolError } from './errors.js';
import { cursorKey, metaKey, redactKey, streamKey } from './keys.js';
import { RANGE, READ } from './scripts.js';

export interface RedisMessage {
  readonly seq: number;
  readonly from: string;
  readonly ts: number;
  readonly cid: string | null;
  /** The final `msg` frame, replayable as is. */
  readonly frame: Buffer;
}

export interface RoomRead {
  readonly epoch: string;
  /** Latest seq of the room. */
  readonly seq: number;
  readonly newEpoch: boolean;
  /** The user's cursor (created at `seq` on a first join), or null when no user was given. */
  readonly cursor: number | null;
  /** Seq of the oldest message the stream still holds (seq + 1 when none). */
  readonly firstKept: number;
  /** With `since`: every message after it (`missed`), or `truncated`. Without: neither. */
  readonly missed: RedisMessage[] | null;
  readonly truncated: boolean;
}

export interface ReadOptions {
  /** Whose cursor to return (and create on a first join); null for none. */
  user: string | null;
  /** The client's last seq, or null. */
  since: number | null;
  /** The epoch of `since`; null means the current one. */
  sinceEpoch: string | null;
  /** More missed messages than this is `truncated` (the history limit). */
  maxMissed: number;
  /** More missed bytes than this is `truncated` (maxHistBytes). */
  maxBytes: number;
  roomTtlMs: number;
}

function str(r: Reply | undefined): string {
  if (Buffer.isBuffer(r)) return r.toString('utf8');
  throw new RedisProtocolError('read: expected a string');
}
function int(r: Reply | undefined): number {
  if (typeof r === 'number') return r;
  const n = Buffer.isBuffer(r) ? Number(r.toString('latin1')) : NaN;
  if (!Number.isFinite(n)) throw new RedisProtocolError('read: expected a number');
  return n;
}

/** The messages of a READ script reply (after its 5 header fields). */
function rowsOf(r: Reply[]): RedisMessage[] {
  const msgs: RedisMessage[] = [];
  for (let j = 5; j + 4 < r.length; j += 5) {
    const cid = Buffer.isBuffer(r[j + 4]) ? str(r[j + 4]) : '';
    msgs.push({ seq: int(r[j]), frame: r[j + 1] as Buffer, from: str(r[j + 2]), ts: int(r[j + 3]), cid: cid === '' ? null : cid });
  }
  return msgs;
}

/** Parses XRANGE/XREVRANGE rows ([id, [field, value, ...]]) into messages. */
export function parseEntries(rows: Reply): RedisMessage[] {
  if (!Array.isArray(rows)) throw new RedisProtocolError('stream reply is not an array');
  const out: RedisMessage[] = [];
  for (const row of rows) {
    if (!Array.isArray(row) || !Buffer.isBuffer(row[0]) || !Array.isArray(row[1])) throw new RedisProtocolError('bad stream entry');
    const f = new Map<string, Buffer>();
    const kv = row[1];
    for (let j = 0; j + 1 < kv.length; j += 2) f.set(str(kv[j]), kv[j + 1] as Buffer);
    const frame = f.get('f');
    if (frame === undefined) throw new RedisProtocolError('stream entry without a frame');
    const cid = f.get('c')?.toString('utf8') ?? '';
    out.push({
      seq: Number(row[0].toString('latin1').split('-')[0]),
      from: f.get('u')?.toString('utf8') ?? '', ts: Number(f.get('t')?.toString('latin1') ?? 0), cid: cid === '' ? null : cid, frame,
    });
  }
  return out;
}

/** At most maxBytes of frames, but at least one message (docs/PROTOCOL.md, byte cap). */
export function capBytes(msgs: RedisMessage[], maxBytes: number, fromEnd: boolean): RedisMessage[] {
  let bytes = 0;
  if (!fromEnd) {
    for (let i = 0; i < msgs.length; i++) {
      bytes += msgs[i]!.frame.length;
      if (bytes > maxBytes && i > 0) return msgs.slice(0, i);
    }
    return msgs;
  }
  for (let i = msgs.length - 1; i >= 0; i--) {
    bytes += msgs[i]!.frame.length;
    if (bytes > maxBytes && i < msgs.length - 1) return msgs.slice(i + 1);
  }
  return msgs;
}

export class RedisHistory {
  constructor(private readonly conn: RedisConnection) {}

  /** The room's state (created when missing), the user's cursor, and the resume of `since`. */
  async read(room: string, o: ReadOptions): Promise<RoomRead> {
    const resumeWanted = o.since !== null;
    const r = await READ.run(this.conn, [metaKey(room), streamKey(room), cursorKey(room), redactKey(room)], [
      newEpochCandidate(), o.user ?? '', String(resumeWanted ? o.since : -1),
      // One more than allowed: an answer that long means "too many missed" without a second read.
      String(resumeWanted ? o.maxMissed + 1 : 0), String(o.roomTtlMs),
    ], `read ${room}`);
    if (!Array.isArray(r) || r.length < 5) throw new RedisProtocolError('read script: bad reply');
    const epoch = str(r[0]);
    const seq = int(r[1]);
    const cursor = int(r[3]);
    const firstKept = int(r[4]);
    const base = { epoch, seq, newEpoch: int(r[2]) === 1, cursor: o.user === null ? null : cursor, firstKept };
    if (!resumeWanted) return { ...base, missed: null, truncated: false };
    const since = o.since!;
    const sameEpoch = o.sinceEpoch === null || o.sinceEpoch === epoch;
    if (!sameEpoch || since > seq || since < 0) return { ...base, missed: null, truncated: true };
    if (since === seq) return { ...base, missed: [], truncated: false };
    const msgs = rowsOf(r);
    const want = seq - since;
    // Exactly since+1..seq, contiguous: anything else (trimmed, too many, too large) is truncated.
    const complete = want <= o.maxMissed && msgs.length === want && msgs[0]?.seq === since + 1 && msgs[msgs.length - 1]?.seq === seq;
    let bytes = 0;
    for (const m of msgs) bytes += m.frame.length;
    if (!complete || bytes > o.maxBytes) return { ...base, missed: null, truncated: true };
    return { ...base, missed: msgs, truncated: false };
  }

  /**
   * What a subscriber fills a gap with: the room's epoch and seq and up to `max` kept messages
   * after `since` (ascending; they start later than since+1 when the stream was trimmed).
   * Creates the room's epoch when Redis lost it, like every read.
   */
  async after(room: string, since: number, max: number, roomTtlMs: number): Promise<{ epoch: string; seq: number; firstKept: number; msgs: RedisMessage[] }> {
    const r = await READ.run(this.conn, [metaKey(room), streamKey(room), cursorKey(room), redactKey(room)],
      [newEpochCandidate(), '', String(since), String(max), String(roomTtlMs)], `fill ${room}`);
    if (!Array.isArray(r) || r.length < 5) throw new RedisProtocolError('read script: bad reply');
    return { epoch: str(r[0]), seq: int(r[1]), firstKept: int(r[4]), msgs: rowsOf(r) };
  }

  /** Kept messages fromSeq..toSeq in seq order (redacted ones as their tombstone), at most `limit` and maxBytes (at least one). */
  async range(room: string, fromSeq: number, toSeq: number, limit: number, maxBytes: number): Promise<RedisMessage[]> {
    if (toSeq < fromSeq || limit < 1) return [];
    const rows = await RANGE.run(this.conn, [metaKey(room), streamKey(room), redactKey(room)], ['f', `${Math.max(1, fromSeq)}-0`, `${toSeq}-0`, String(limit)], `history of ${room}`);
    return capBytes(parseEntries(rows), maxBytes, false);
  }

  /** The newest `limit` kept messages up to `toSeq` (inclusive; null = latest), oldest first, at most maxBytes (at least one). */
  async latest(room: string, limit: number, maxBytes: number, toSeq: number | null = null): Promise<RedisMessage[]> {
    if (limit < 1 || (toSeq !== null && toSeq < 1)) return [];
    const rows = await RANGE.run(this.conn, [metaKey(room), streamKey(room), redactKey(room)], ['r', toSeq === null ? '+' : `${toSeq}-0`, '-', String(limit)], `history of ${room}`);
    return capBytes(parseEntries(rows).reverse(), maxBytes, true);
  }

  /** Seq of the oldest kept message, or null when the stream holds none. */
  async firstKept(room: string): Promise<number | null> {
    const rows = parseEntries(await this.conn.call(['XRANGE', streamKey(room), '-', '+', 'COUNT', '1'], `history of ${room}`));
    return rows[0]?.seq ?? null;
  }
}
