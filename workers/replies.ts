/**
 * The reply frames a shard writes about a room (`joined`, `presence`, `left`, `ack`, `hist`,
 * `who`) and the OUT_SERVER_ACK body, shared by the single-node handler (handler.ts) and cluster
 * mode (cluster-handler.ts), so both speak byte for byte the same protocol. Each takes the room
 * as ASCII bytes `nb[0, nbLen)`; a page of frames (`missed`, `msgs`) is written by the caller's
 * `page` callback. Pure writers: they run over a MsgSizer to size and over the ring to write.
 */
import type { MsgWriter } from '../engine/protocol/msgpack.js';
import { writeHead } from '../engine/protocol/frames.js';

export type PageWriter = (w: MsgWriter) => void;

/** `joined`: epoch, seq, unread, members, then `truncated` or `missed` (the page), or neither. */
export function writeJoined(w: MsgWriter, nb: Uint8Array, nbLen: number, ref: number, epoch: string, seq: number, unread: number,
  members: number, truncated: boolean, page: PageWriter | null): void {
  writeHead(w, 'joined', nb, 0, nbLen, ref, 4 + (truncated || page !== null ? 1 : 0));
  w.str('epoch').str(epoch).str('seq').uint(seq).str('unread').uint(unread).str('members').uint(members);
  if (truncated) w.str('truncated').bool(true);
  else if (page !== null) { w.str('missed'); page(w); }
}

export function writePresence(w: MsgWriter, nb: Uint8Array, nbLen: number, user: string, state: 'join' | 'leave'): void {
  writeHead(w, 'presence', nb, 0, nbLen, -1, 2);
  w.str('user').str(user).str('state').str(state);
}

export function writeLeft(w: MsgWriter, nb: Uint8Array, nbLen: number, ref: number): void {
  writeHead(w, 'left', nb, 0, nbLen, ref, 0);
}

export function writeAck(w: MsgWriter, nb: Uint8Array, nbLen: number, ref: number, seq: number, dup = false): void {
  writeHead(w, 'ack', nb, 0, nbLen, ref, dup ? 2 : 1);
  w.str('seq').uint(seq);
  if (dup) w.str('dup').bool(true);
}

/** OUT_SERVER_ACK body: seq as two u32 (high, low), the epoch with a u8 length, then dup (0/1). */
export function writeServerAck(w: MsgWriter, epoch: string, seq: number, dup = false): void {
  w.u32le(Math.floor(seq / 0x100000000)).u32le(seq >>> 0).byte(epoch.length);
  for (let i = 0; i < epoch.length; i++) w.byte(epoch.charCodeAt(i));
  w.byte(dup ? 1 : 0);
}

/** `hist`: the page as `msgs`, then `truncated` when some of the range asked for is no longer kept. */
export function writeHist(w: MsgWriter, nb: Uint8Array, nbLen: number, ref: number, truncated: boolean, page: PageWriter): void {
  writeHead(w, 'hist', nb, 0, nbLen, ref, truncated ? 2 : 1);
  w.str('msgs');
  page(w);
  if (truncated) w.str('truncated').bool(true);
}

export function writeWho(w: MsgWriter, nb: Uint8Array, nbLen: number, ref: number, users: readonly string[], truncated: boolean): void {
  writeHead(w, 'who', nb, 0, nbLen, ref, truncated ? 2 : 1);
  w.str('users').arrayHeader(users.length);
  for (const u of users) w.str(u);
  if (truncated) w.str('truncated').bool(true);
}

/**
 * The users a `who` reply lists: in order, while their names (plus 2 bytes each) fit `maxBytes`.
 * Fills `out` (cleared first); returns true when some were left out (`truncated`).
 */
export function whoPage(users: Iterable<string>, maxBytes: number, out: string[]): boolean {
  out.length = 0;
  let bytes = 0;
  for (const u of users) {
    if (bytes + u.length + 2 > maxBytes) return true;
    out.push(u);
    bytes += u.length + 2;
  }
  return false;
}
