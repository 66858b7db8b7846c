/**
 * Records between the main thread and a shard, one per ring record. Integers are little-endian
 * u32. Pure: layouts and field accessors only.
 *
 * The bulk of a record (a client frame inbound, a server frame outbound) starts 8-byte aligned
 * (the ring aligns payloads to 8): V8 copies into and out of shared memory 8 bytes at a time only
 * between aligned addresses, byte by byte otherwise (4x slower for 4 KiB). Short strings that
 * travel with it (user, room) go after it, at the end of the record.
 *
 * Inbound (main -> shard):
 *   IN_FRAME      [0] kind, [1] userLen, [2] flags, [4] conn u32, [8] stamp u32, [12] addr u32,
 *                 [16..] client frame, user (last userLen bytes). flags: IN_FRAME_ANON (the user is
 *                 anonymous), IN_FRAME_INFO (a join whose identity has `info`: then the frame is
 *                 followed by the info (one MessagePack map) and its length as u32, before the
 *                 user); addr: a hash of the client address (the room-creation principal of an
 *                 anonymous user; written for joins, 0 otherwise)
 *   IN_CLOSE      [0] kind, [1..5] conn u32
 *   IN_SERVER_PUB [0] kind, [1..5] req u32, roomLen u8, room, fromLen u8, from, cidLen u8 (0 = no cid), cid, body (one MessagePack value)
 *   IN_REPLAY     [0] kind, [1..5] conn u32, userLen u8, user, roomLen u8, room, flags u8 (join after a shard restart);
 *                 with IN_FRAME_INFO in flags: infoLen u32, info
 *   IN_DRAIN      [0] kind                    (everything before it is handled; answer OUT_DRAINED)
 *   IN_ADMIN      [0] kind, [1..5] req u32, [5] op (ADMIN_OPS index), [6..] arguments as JSON (HTTP API; workers/admin.ts)
 *   IN_CRASH      [0] kind, [1] mode          (test hook: 1 = throw from the task, 2 = exit the worker, 3 = hang, 4 = exit between a publish and its syncRead)
 *
 * `stamp`: the main thread's receipt time of a `pub` in microseconds mod 2^32 (0 = none), carried
 * to its publish record so the main thread can measure receipt-to-fan-out latency.
 *
 * Outbound (shard -> main): every record is [0] kind, [1] roomLen, [4] id u32, [8..] body,
 * room (last roomLen bytes):
 *   OUT_SEND       id = conn, body = frame              -> ws.send(frame)
 *   OUT_PUBLISH    id = stamp, body = frame, room       -> app.publish(room, frame)
 *   OUT_JOINED     id = conn, body = frame, room        -> send(frame), subscribe(room)
 *   OUT_LEFT       id = conn, body = frame, room        -> unsubscribe(room), send(frame)
 *   OUT_SERVER_ACK id = req, body = seqHi u32, seqLo u32, epochLen u8, epoch
 *   OUT_DRAINED    (no body)
 *   OUT_REFUSED    id = conn, body = err frame, room  -> the join of room was refused (room_limit):
 *                  drop room from the connection's rooms, send(frame)
 *   OUT_ADMIN_REPLY id = req, body = one MessagePack map (the result, or {error, msg}) -> the API call's answer
 *   OUT_EVENT      id = 0, body = one MessagePack map {type, ...} (a webhook event; only with webhooks on), room
 *   OUT_SERVER_ERR id = req, body = one MessagePack map {error, msg, retryAfterMs?} -> the server-side
 *                  publish failed (cluster mode: `unavailable`, Redis could not be reached in time)
 *   OUT_CONTROL    id = 0, body = the control channel's JSON payload (cluster mode: a kick or disconnect
 *                  made on some node, docs/CLUSTER.md §9) -> the main thread applies it to its connections
 *   OUT_PUBLISH_ACK id = conn, body = stamp u32, msgLen u32, msg frame (at +16), ack frame, room
 *                  -> inside conn's cork: app.publish(room, msg), send(ack): the sender's copy of
 *                  its message and its ack leave in one write, as plain uWS does for a publish
 *                  made in the sender's own message handler
 */

import { asciiString } from './msgpack.js';

export const IN_FRAME = 1;
export const IN_CLOSE = 2;
export const IN_SERVER_PUB = 3;
export const IN_REPLAY = 4;
export const IN_DRAIN = 5;
export const IN_CRASH = 6;
export const IN_ADMIN = 7;

export const OUT_SEND = 1;
export const OUT_PUBLISH = 2;
export const OUT_JOINED = 3;
export const OUT_LEFT = 4;
export const OUT_SERVER_ACK = 5;
export const OUT_DRAINED = 6;
export const OUT_PUBLISH_ACK = 7;
export const OUT_REFUSED = 8;
export const OUT_ADMIN_REPLY = 9;
export const OUT_EVENT = 10;
export const OUT_SERVER_ERR = 11;
export const OUT_CONTROL = 12;

/** IN_ADMIN operations, by their op byte. */
export const ADMIN_OPS = ['', 'history', 'presence', 'rooms', 'redact', 'control'] as const;
export type AdminOp = Exclude<typeof ADMIN_OPS[number], ''>;

/** IN_FRAME / IN_REPLAY flag: the connection's user is anonymous (`anon-<conn>`, no identity). */
export const IN_FRAME_ANON = 1;
/** IN_FRAME / IN_REPLAY flag: a join carries the identity's `info` (MessagePack; see the layouts above). */
export const IN_FRAME_INFO = 2;

/** Offset of the client frame in an IN_FRAME record. */
export const IN_FRAME_BODY = 16;
/** Offset of the body in an outbound record. */
export const OUT_BODY = 8;

export const CRASH_THROW = 1;
export const CRASH_EXIT = 2;
/** Test hook: the shard's thread enters an endless loop (a stuck shard). */
export const CRASH_HANG = 3;
/** Test hook: the shard exits right after the next outbound publish that carries a published message, before marking its input read. */
export const CRASH_AFTER_PUBLISH = 4;

export function putU32(b: Uint8Array, p: number, v: number): void {
  b[p] = v & 0xff; b[p + 1] = (v >>> 8) & 0xff; b[p + 2] = (v >>> 16) & 0xff; b[p + 3] = v >>> 24;
}

export function getU32(b: Uint8Array, p: number): number {
  return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
}

/** Writes an ASCII string (room, user, epoch: all validated ASCII) with a u8 length; returns the end. */
export function putShortAscii(b: Uint8Array, p: number, s: string): number {
  b[p] = s.length;
  for (let i = 0; i < s.length; i++) b[p + 1 + i] = s.charCodeAt(i);
  return p + 1 + s.length;
}

const V4_MAPPED = '0000:0000:0000:0000:0000:ffff:';

/**
 * The IN_FRAME `addr` field: a 32-bit FNV-1a hash of the client address as uWebSockets.js gives
 * it (`getRemoteAddressAsText`: dotted IPv4, or IPv6 as eight 4-digit groups). An IPv6 address
 * counts by its /64 (what one subscriber is usually given), IPv4 and IPv4-mapped addresses whole.
 */
export function addrHash(text: string): number {
  const key = text.length === 39 && text[4] === ':' && !text.startsWith(V4_MAPPED) ? text.slice(0, 19) : text;
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i) & 0xff;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The fields of an IN_SERVER_PUB record at b[off, end): the body is b[bodyStart, end). */
export interface ServerPubRecord { req: number; room: string; from: string; cid: string | null; bodyStart: number }

export function readServerPub(b: Uint8Array, off: number): ServerPubRecord {
  const req = getU32(b, off + 1);
  let p = off + 5;
  const roomLen = b[p++]!;
  const room = asciiString(b, p, p + roomLen);
  p += roomLen;
  const fromLen = b[p++]!;
  const from = asciiString(b, p, p + fromLen);
  p += fromLen;
  const cidLen = b[p++]!;
  const cid = cidLen === 0 ? null : asciiString(b, p, p + cidLen);
  return { req, room, from, cid, bodyStart: p + cidLen };
}

/** The fields of an IN_REPLAY record at b[off, end). */
/** `info`: the identity's info (a MessagePack map) when the record has IN_FRAME_INFO, else null. */
/**
 * An IN_FRAME record at b[off, end): where the user starts (`userStart`), the length of a join's
 * identity info (-1 without IN_FRAME_INFO) and where the client frame ends (`frameEnd`: before
 * the info and its u32 length). Written into `into` (no allocation on the hot path).
 */
export interface InFrameBounds { userStart: number; infoLen: number; frameEnd: number }

export function inFrameBounds(b: Uint8Array, off: number, end: number, into: InFrameBounds): InFrameBounds {
  const ue = end - b[off + 1]!;
  const infoLen = (b[off + 2]! & IN_FRAME_INFO) === 0 ? -1 : getU32(b, ue - 4);
  into.userStart = ue;
  into.infoLen = infoLen;
  into.frameEnd = infoLen < 0 ? ue : ue - 4 - infoLen;
  return into;
}

export interface ReplayRecord { conn: number; user: string; room: string; anon: boolean; info: Uint8Array | null }

export function readReplay(b: Uint8Array, off: number, end: number): ReplayRecord {
  const conn = getU32(b, off + 1);
  let p = off + 5;
  const userLen = b[p++]!;
  const user = asciiString(b, p, p + userLen);
  p += userLen;
  const roomLen = b[p++]!;
  const room = asciiString(b, p, p + roomLen);
  p += roomLen;
  // The trailing flags byte (IN_FRAME_ANON) is there since anonymous cursors are dropped on leave.
  const flags = p < end ? b[p]! : 0;
  const anon = (flags & IN_FRAME_ANON) !== 0;
  // With IN_FRAME_INFO: infoLen u32, then the identity's info (a MessagePack map), copied.
  const info = (flags & IN_FRAME_INFO) === 0 ? null : b.slice(p + 5, p + 5 + getU32(b, p + 1));
  return { conn, user, room, anon, info };
}
