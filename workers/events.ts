/**
 * Webhook events from the shard (docs/API.md, "Webhooks"): only when the engine has a webhook
 * URL (HandlerOptions.events), the handler calls these after a message is stored and after a
 * presence change; each writes one OUT_EVENT record (a MessagePack map, the room at the end) that
 * the main thread turns into a WebhookEvent. The shard knows what the main thread does not: the
 * epoch, the seq, and when a room's user count goes 0 -> 1 or 1 -> 0.
 *
 * An event goes straight into the outbound ring when it fits and nothing is waiting before it.
 * Otherwise it waits, as a copy of its record, in a small queue that is written before any new
 * output: the handler calls `flush()` before it handles each record (and each room of a closing
 * connection), and does nothing else until the queue is empty; the shard loop flushes what a
 * batch's last record left before it parks. So the queue holds at most the events of one step
 * of one record (two: `room.occupied` + `member.joined`, or `member.left` + `room.vacated`),
 * far below its bound (PENDING_EVENT_ENTRIES, PENDING_EVENT_BYTES; docs/LIMITS.md). Only an
 * event past that bound is dropped, and counted in `dropped` (shard stats S_EVENTS_DROPPED,
 * /metrics `dropped_shard_ring`).
 *
 * The handler writes its events after the records it planned for the same step (never between
 * them): an event written into the ring takes space a planned record may have counted on.
 */
import { MsgSizer, MsgWriter } from '../engine/protocol/msgpack.js';
import { OUT_BODY, OUT_EVENT } from '../engine/protocol/records.js';
import { type RingWriter, recordSpan } from '../engine/ring/index.js';
import type { Room } from './rooms.js';

/** Events a shard holds waiting for outbound room, at most (in practice two at a time; see above). */
export const PENDING_EVENT_ENTRIES = 1024;
/** Bytes of event records a shard holds waiting for outbound room, at most. */
export const PENDING_EVENT_BYTES = 8 << 20;

/**
 * What an event needs of its room: its name, epoch and present-user count (a Room; in cluster
 * mode a view of the room over all nodes, workers/cluster-handler.ts).
 */
export type EventRoom = Pick<Room, 'name' | 'epoch'> & { readonly users: { readonly size: number } };

const sz = new MsgSizer();
const w = new MsgWriter();

/** Where an event's record goes: `put` writes its MessagePack body (run once to size, once to write). */
export type EventSink = (room: string, put: (m: MsgWriter) => void) => void;

/**
 * Single-node mode's sink: an event goes straight into the outbound ring when it fits and nothing
 * waits before it, else into the bounded queue above (cluster mode's sink is its OutQueue).
 */
export class EventQueue {
  /** Events dropped past the queue's bound. */
  dropped = 0;
  private readonly queue: Uint8Array[] = [];
  private head = 0;
  private queuedBytes = 0;

  constructor(private readonly out: RingWriter, readonly maxEntries = PENDING_EVENT_ENTRIES, readonly maxBytes = PENDING_EVENT_BYTES) {}

  /** Events waiting for outbound room. */
  get pending(): number {
    return this.queue.length - this.head;
  }

  /**
   * Writes the waiting events into the ring, oldest first. Returns 0 when none is left, else the
   * free outbound bytes the next one is sure to fit in (its span, plus the tail a wrap may skip).
   */
  flush(): number {
    const q = this.queue;
    while (this.head < q.length) {
      const rec = q[this.head]!;
      const o = this.out.reserve(rec.byteLength);
      if (o < 0) return recordSpan(rec.byteLength) * 2;
      this.out.bytes.set(rec, o);
      this.out.commit(rec.byteLength);
      this.queuedBytes -= rec.byteLength;
      this.head++;
    }
    q.length = 0;
    this.head = 0;
    return 0;
  }

  readonly write: EventSink = (room, put) => {
    put(sz.start());
    const bodyLen = sz.pos;
    const len = OUT_BODY + bodyLen + room.length;
    if (this.pending === 0) {
      const o = this.out.reserve(len);
      if (o >= 0) {
        record(this.out.bytes, o, room, bodyLen, put);
        this.out.commit(len);
        return;
      }
    }
    if (this.pending >= this.maxEntries || this.queuedBytes + len > this.maxBytes) { this.dropped++; return; }
    const rec = new Uint8Array(len);
    record(rec, 0, room, bodyLen, put);
    this.queue.push(rec);
    this.queuedBytes += len;
  };
}

/** The webhook events a shard writes, each as one OUT_EVENT record into `write`. */
export class ShardEvents {
  constructor(private readonly write: EventSink) {}

  /** message.published: the stored message (its body copied as the client encoded it). */
  message(r: EventRoom, seq: number, from: string, ts: number, body: Uint8Array, bs: number, be: number): void {
    this.write(r.name, (m) => {
      m.mapHeader(6).str('type').str('message.published').str('epoch').str(r.epoch).str('seq').uint(seq)
        .str('ts').uint(ts).str('from').str(from).str('body').raw(body, bs, be);
    });
  }

  /**
   * member.joined / member.left, and room.occupied / room.vacated when the user count went 0 <-> 1.
   * `info`: the joining identity's (MessagePack map), on member.joined only.
   */
  presence(r: EventRoom, user: string, state: 'join' | 'leave', conn: number, info: Uint8Array | null = null): void {
    const ts = Date.now();
    const c = `c${conn.toString(36)}`;
    if (state === 'join' && r.users.size === 1) this.write(r.name, (m) => { m.mapHeader(2).str('type').str('room.occupied').str('ts').uint(ts); });
    this.write(r.name, (m) => {
      m.mapHeader(info === null ? 4 : 5).str('type').str(state === 'join' ? 'member.joined' : 'member.left').str('user').str(user).str('conn').str(c).str('ts').uint(ts);
      if (info !== null) m.str('info').raw(info, 0, info.byteLength);
    });
    if (state === 'leave' && r.users.size === 0) this.write(r.name, (m) => { m.mapHeader(2).str('type').str('room.vacated').str('ts').uint(ts); });
  }
}

/** One OUT_EVENT record at b[o..]: header, the body `put` writes (bodyLen bytes), the room. */
function record(b: Uint8Array, o: number, room: string, bodyLen: number, put: (m: MsgWriter) => void): void {
  b[o] = OUT_EVENT; b[o + 1] = room.length; b[o + 2] = 0; b[o + 3] = 0; b[o + 4] = 0; b[o + 5] = 0; b[o + 6] = 0; b[o + 7] = 0;
  const m = w.reset(b, o + OUT_BODY, o + OUT_BODY + bodyLen);
  put(m);
  if (m.pos !== o + OUT_BODY + bodyLen) throw new Error(`an event was sized at ${bodyLen} bytes and wrote ${m.pos - o - OUT_BODY}`);
  for (let i = 0; i < room.length; i++) b[m.pos + i] = room.charCodeAt(i);
}
