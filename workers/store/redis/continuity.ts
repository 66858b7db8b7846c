/**
 * Per-room continuity of a node's subscription: each room's last delivered seq and epoch, the
 * out-of-order messages buffered while a hole is filled from the stream, and a small ring of the
 * latest deliveries. Turns "each message at most once, maybe out of order, maybe missing" into
 * "every message once, in seq order" or an explicit `epoch` / `lost` report. No connection of
 * its own: subscriber.ts feeds it and reads the stream through RedisHistory.
 */
import type { RedisHistory, RedisMessage } from './history.js';

export interface FeedEvents {
  /** The room's next message: contiguous seqs, each once. */
  message(room: string, seq: number, frame: Buffer): void;
  /** The room has a new epoch (Redis lost it): its seq restarts; messages of the new epoch follow from 1. */
  epoch(room: string, epoch: string): void;
  /** Messages fromSeq..toSeq of the room can no longer be delivered (trimmed): the room's members must resync. */
  lost(room: string, fromSeq: number, toSeq: number): void;
}

export interface FeedOptions {
  maxPendingPerRoom: number;
  fillBatch: number;
  recentPerRoom: number;
  roomTtlMs: number;
}

interface RoomState {
  /** Null until begin(): messages are buffered while the joiner reads history. */
  epoch: string | null;
  seq: number;
  pending: Map<number, { epoch: string; frame: Buffer }>;
  filling: boolean;
  fillAgain: boolean;
  /** Ring of the last recentPerRoom delivered messages (seq -> frame at seq % size). */
  recent: ({ seq: number; frame: Buffer } | undefined)[];
}

export class RoomFeeds {
  private readonly rooms = new Map<string, RoomState>();
  /** Gaps filled from the stream (for tests and metrics). */
  fills = 0;

  constructor(private readonly o: FeedOptions, private readonly history: RedisHistory, private readonly events: FeedEvents,
    /** A fill failed (Redis went away): the subscriber reconnects, which resyncs every room. */
    private readonly onFillError: () => void) {}

  has(room: string): boolean { return this.rooms.has(room); }
  names(): IterableIterator<string> { return this.rooms.keys(); }
  delete(room: string): boolean { return this.rooms.delete(room); }
  clear(): void { this.rooms.clear(); }

  /** Starts buffering a room (before its subscription is confirmed). */
  add(room: string): void {
    this.rooms.set(room, { epoch: null, seq: 0, pending: new Map(), filling: false, fillAgain: false, recent: new Array(this.o.recentPerRoom) });
  }

  /**
   * The joiner read the room's history (after add()): deliver from `seq` on. Buffered messages
   * after it are merged in; a hole is filled from the stream.
   */
  begin(room: string, epoch: string, seq: number): void {
    const st = this.rooms.get(room);
    if (st === undefined) throw new Error(`begin(${room}) without add()`);
    if (st.epoch !== null) return; // already delivering: its position is the truth
    st.epoch = epoch;
    st.seq = seq;
    this.drain(room, st);
  }

  /** The room's last delivered seq and epoch (null before begin()). */
  position(room: string): { epoch: string; seq: number } | null {
    const st = this.rooms.get(room);
    return st?.epoch == null ? null : { epoch: st.epoch, seq: st.seq };
  }

  /**
   * Delivered messages fromSeq..toSeq of the current epoch from memory, or null when the ring no
   * longer holds all of them.
   */
  recent(room: string, fromSeq: number, toSeq: number): { seq: number; frame: Buffer }[] | null {
    const st = this.rooms.get(room);
    if (st === undefined || toSeq > st.seq || toSeq - fromSeq + 1 > st.recent.length) return null;
    const out: { seq: number; frame: Buffer }[] = [];
    for (let s = fromSeq; s <= toSeq; s++) {
      const m = st.recent[s % st.recent.length];
      if (m === undefined || m.seq !== s) return null;
      out.push(m);
    }
    return out;
  }

  /**
   * A redaction of the room's `epoch`: a buffered or recently delivered copy of `seq` becomes the
   * tombstone, so a message delivered later or a join's catch-up from memory shows it redacted.
   */
  redact(room: string, seq: number, epoch: string, frame: Buffer): void {
    const st = this.rooms.get(room);
    if (st === undefined || (st.epoch !== null && st.epoch !== epoch)) return;
    const p = st.pending.get(seq);
    if (p !== undefined && p.epoch === epoch) st.pending.set(seq, { epoch, frame });
    const i = st.recent.length > 0 ? seq % st.recent.length : -1;
    if (i >= 0 && st.recent[i]?.seq === seq) st.recent[i] = { seq, frame };
  }

  /** After a reconnect: check every started room against its stream. */
  resyncAll(): void {
    for (const [room, st] of this.rooms) if (st.epoch !== null) this.fill(room, st);
  }

  /** A room's channel could not be decoded: check the room against its stream. */
  check(room: string): void {
    const st = this.rooms.get(room);
    if (st !== undefined && st.epoch !== null) this.fill(room, st);
  }

  /** A live message of a room (any order, maybe a duplicate). */
  live(room: string, seq: number, epoch: string, frame: Buffer): void {
    const st = this.rooms.get(room);
    if (st === undefined) return;
    if (st.epoch !== null && epoch === st.epoch && seq <= st.seq) return; // a duplicate
    if (st.pending.size >= this.o.maxPendingPerRoom) {
      // Too far behind to buffer: the stream has them (or the fill reports them lost).
      st.pending.clear();
      if (st.epoch !== null) this.fill(room, st);
      return;
    }
    st.pending.set(seq, { epoch, frame });
    if (st.epoch !== null) this.drain(room, st);
  }

  /** Delivers the pending messages that continue the room; a hole or another epoch starts a fill. */
  private drain(room: string, st: RoomState): void {
    if (st.filling || st.epoch === null) return;
    for (let p = st.pending.get(st.seq + 1); p !== undefined; p = st.pending.get(st.seq + 1)) {
      if (p.epoch !== st.epoch) break;
      st.pending.delete(st.seq + 1);
      st.seq++;
      this.deliver(room, st, st.seq, p.frame);
    }
    for (const [seq, p] of st.pending) {
      if (p.epoch === st.epoch && seq <= st.seq) st.pending.delete(seq);
    }
    if (st.pending.size > 0) this.fill(room, st);
  }

  private deliver(room: string, st: RoomState, seq: number, frame: Buffer): void {
    if (st.recent.length > 0) st.recent[seq % st.recent.length] = { seq, frame };
    this.events.message(room, seq, frame);
  }

  private fill(room: string, st: RoomState): void {
    if (st.filling) {
      st.fillAgain = true;
      return;
    }
    st.filling = true;
    this.fills++;
    this.fillLoop(room, st).catch(() => {
      // Redis went away mid-fill: the reconnect resynchronises every room.
      st.filling = false;
      this.onFillError();
    });
  }

  private async fillLoop(room: string, st: RoomState): Promise<void> {
    for (;;) {
      st.fillAgain = false;
      if (this.rooms.get(room) !== st || st.epoch === null) break;
      const r = await this.history.after(room, st.seq, this.o.fillBatch, this.o.roomTtlMs);
      if (this.rooms.get(room) !== st) break;
      if (r.epoch !== st.epoch) {
        st.epoch = r.epoch;
        st.seq = 0;
        st.recent.fill(undefined);
        for (const [seq, p] of st.pending) if (p.epoch !== r.epoch) st.pending.delete(seq);
        this.events.epoch(room, r.epoch);
        continue;
      }
      if (r.seq <= st.seq) break;
      const first: RedisMessage | undefined = r.msgs[0];
      const firstSeq = first?.seq ?? r.firstKept;
      if (firstSeq > st.seq + 1) {
        this.events.lost(room, st.seq + 1, firstSeq - 1);
        st.seq = firstSeq - 1;
      }
      for (const m of r.msgs) {
        if (m.seq !== st.seq + 1) break;
        st.seq = m.seq;
        st.pending.delete(m.seq);
        this.deliver(room, st, m.seq, m.frame);
      }
      if (r.seq > st.seq && r.msgs.length > 0) continue; // more than one batch behind
      if (!st.fillAgain) break;
    }
    st.filling = false;
    this.drain(room, st);
  }
}
