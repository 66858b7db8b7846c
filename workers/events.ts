/**
 * Webhook events from the shard (docs/API.md, "Webhooks"): only when the engine has a webhook
 * URL (HandlerOptions.events), the handler calls these after a message is stored and after a
 * presence change; each writes one OUT_EVENT record (a MessagePack map, the room at the end) that
 * the main thread turns into a WebhookEvent. The shard knows what the main thread does not: the
 * epoch, the seq, and when a room's user count goes 0 -> 1 or 1 -> 0.
 *
 * Best effort by design (webhooks are at-most-once past their bounds): the handler has planned
 * ring space for its own records only, so an event that does not fit the outbound ring at that
 * instant is dropped and counted in `droppedEvents` (shard stats S_EVENTS_DROPPED).
 */
import { MsgSizer, MsgWriter } from '../engine/protocol/msgpack.js';
import { OUT_BODY, OUT_EVENT } from '../engine/protocol/records.js';
import { type RingWriter, recordSpan } from '../engine/ring/index.js';
import type { Room } from './rooms.js';

/**
 * What an event needs of its room: its name, epoch and present-user count (a Room; in cluster
 * mode a view of the room over all nodes, workers/cluster-handler.ts).
 */
export type EventRoom = Pick<Room, 'name' | 'epoch'> & { readonly users: { readonly size: number } };

const sz = new MsgSizer();
const w = new MsgWriter();
export const eventCounts = { dropped: 0 };

function write(out: RingWriter, room: string, put: (m: MsgWriter) => void): void {
  put(sz.start());
  const bodyLen = sz.pos;
  const len = OUT_BODY + bodyLen + room.length;
  if (out.freeBytes() < recordSpan(len) * 2) { eventCounts.dropped++; return; }
  const o = out.reserve(len);
  if (o < 0) { eventCounts.dropped++; return; }
  const b = out.bytes;
  b[o] = OUT_EVENT; b[o + 1] = room.length; b[o + 2] = 0; b[o + 3] = 0; b[o + 4] = 0; b[o + 5] = 0; b[o + 6] = 0; b[o + 7] = 0;
  const m = w.reset(b, o + OUT_BODY, o + OUT_BODY + bodyLen);
  put(m);
  for (let i = 0; i < room.length; i++) b[m.pos + i] = room.charCodeAt(i);
  out.commit(len);
}

/** message.published: the stored message (its body copied as the client encoded it). */
export function messageEvent(out: RingWriter, r: EventRoom, seq: number, from: string, ts: number, body: Uint8Array, bs: number, be: number): void {
  write(out, r.name, (m) => {
    m.mapHeader(6).str('type').str('message.published').str('epoch').str(r.epoch).str('seq').uint(seq)
      .str('ts').uint(ts).str('from').str(from).str('body').raw(body, bs, be);
  });
}

/** member.joined / member.left, and room.occupied / room.vacated when the user count went 0 <-> 1. */
export function presenceEvent(out: RingWriter, r: EventRoom, user: string, state: 'join' | 'leave', conn: number): void {
  const ts = Date.now();
  const c = `c${conn.toString(36)}`;
  if (state === 'join' && r.users.size === 1) write(out, r.name, (m) => { m.mapHeader(2).str('type').str('room.occupied').str('ts').uint(ts); });
  write(out, r.name, (m) => {
    m.mapHeader(4).str('type').str(state === 'join' ? 'member.joined' : 'member.left').str('user').str(user).str('conn').str(c).str('ts').uint(ts);
  });
  if (state === 'leave' && r.users.size === 0) write(out, r.name, (m) => { m.mapHeader(2).str('type').str('room.vacated').str('ts').uint(ts); });
}
