/**
 * Client frames (docs/PROTOCOL.md): one scan validates a frame and finds its fields without
 * decoding the body; server frames are written with MsgWriter by the encoders below.
 * Pure: no I/O.
 */
import {
  MsgWriter, SKIP_EXTENSION, SKIP_TOO_DEEP, readNumber, skipValue, skipValueFlat, strSpan,
} from './msgpack.js';

/** Client frame types. 0 = missing or unknown (`unknown_type`). */
export const T_JOIN = 1;
export const T_LEAVE = 2;
export const T_PUB = 3;
export const T_HIST = 4;
export const T_READ = 5;
export const T_WHO = 6;
export const CLIENT_TYPES = ['', 'join', 'leave', 'pub', 'hist', 'read', 'who'] as const;

/** Error codes, numbered for records between threads; ERR_NAMES gives the wire string. */
export const E_BAD_FRAME = 1;
export const E_UNKNOWN_TYPE = 2;
export const E_BAD_REQUEST = 3;
export const E_BAD_ROOM = 4;
export const E_NOT_JOINED = 5;
export const E_TOO_MANY_ROOMS = 6;
export const E_RATE_LIMITED = 7;
export const E_OVERLOADED = 8;
export const E_SHUTTING_DOWN = 9;
export const E_INTERNAL = 10;
/** A join that would create a room its shard may not create now (shard room cap, creation rate). */
export const E_ROOM_LIMIT = 11;
/** A room action the connection's token (or authenticate hook) does not allow; the connection stays open. */
export const E_FORBIDDEN = 12;
/** A `refresh` whose token is refused (missing, expired, invalid, another user, unavailable). */
export const E_UNAUTHORIZED = 13;
/** The shard could not commit the request to its durable store (disk full, I/O error): retry after retryAfterMs. */
export const E_UNAVAILABLE = 14;
/** Error codes fit the shard stats' 16 slots (metrics/shard-stats.ts S_ERR_BASE). */
export const ERR_NAMES = ['', 'bad_frame', 'unknown_type', 'bad_request', 'bad_room', 'not_joined',
  'too_many_rooms', 'rate_limited', 'overloaded', 'shutting_down', 'internal', 'room_limit', 'forbidden', 'unauthorized', 'unavailable'] as const;
export type ErrorName = typeof ERR_NAMES[number];

export const MAX_REF = 0xffffffff;
export const MAX_ROOM_BYTES = 128;
export const MAX_HIST_LIMIT = 500;
export const DEFAULT_HIST_LIMIT = 50;
export const DEFAULT_MAX_BODY_DEPTH = 32;

/** A pub's `cid` (client message id): 1..64 bytes of [A-Za-z0-9_.:@-] (docs/PROTOCOL.md). */
export const MAX_CID_BYTES = 64;

/** Allowed room bytes: [A-Za-z0-9_.:@-]. */
const ROOM_CHARS = new Uint8Array(256);
/** Allowed user id bytes: [A-Za-z0-9_.@-]. */
const USER_CHARS = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  const alnum = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
  const u = alnum || c === 95 || c === 46 || c === 64 || c === 45;
  USER_CHARS[c] = u ? 1 : 0;
  ROOM_CHARS[c] = u || c === 58 ? 1 : 0;
}

export function isValidRoomBytes(b: Uint8Array, start: number, end: number): boolean {
  const n = end - start;
  if (n < 1 || n > MAX_ROOM_BYTES) return false;
  for (let i = start; i < end; i++) if (ROOM_CHARS[b[i]!] === 0) return false;
  return true;
}

/** A valid `cid`: 1..64 bytes, the room charset [A-Za-z0-9_.:@-]. */
export function isValidCidBytes(b: Uint8Array, start: number, end: number): boolean {
  const n = end - start;
  if (n < 1 || n > MAX_CID_BYTES) return false;
  for (let i = start; i < end; i++) if (ROOM_CHARS[b[i]!] === 0) return false;
  return true;
}

export function isValidCid(cid: unknown): cid is string {
  return typeof cid === 'string' && cid.length >= 1 && cid.length <= MAX_CID_BYTES && /^[A-Za-z0-9_.:@-]+$/.test(cid);
}

export function isValidRoom(room: unknown): room is string {
  if (typeof room !== 'string' || room.length < 1 || room.length > MAX_ROOM_BYTES) return false;
  for (let i = 0; i < room.length; i++) {
    const c = room.charCodeAt(i);
    if (c > 255 || ROOM_CHARS[c] === 0) return false;
  }
  return true;
}

export function isValidUser(user: unknown): user is string {
  if (typeof user !== 'string' || user.length < 1 || user.length > 64) return false;
  for (let i = 0; i < user.length; i++) {
    const c = user.charCodeAt(i);
    if (c > 255 || USER_CHARS[c] === 0) return false;
  }
  return true;
}

/** Stable 32-bit FNV-1a over bytes: the room -> shard hash. */
export function fnv1a(b: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= b[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function fnv1aString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i) & 0xff;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const KEY_T = 1, KEY_REF = 2, KEY_ROOM = 3, KEY_BODY = 4, KEY_SINCE = 5, KEY_EPOCH = 6,
  KEY_BEFORE = 7, KEY_AFTER = 8, KEY_LIMIT = 9, KEY_SEQ = 10, KEY_CID = 11;

/** Identifies a known key from its bytes without making a string. */
function keyId(b: Uint8Array, s: number, e: number): number {
  const n = e - s;
  const c0 = b[s];
  switch (n) {
    case 1: return c0 === 0x74 ? KEY_T : 0; // t
    case 3:
      if (c0 === 0x72 && b[s + 1] === 0x65 && b[s + 2] === 0x66) return KEY_REF;
      if (c0 === 0x73 && b[s + 1] === 0x65 && b[s + 2] === 0x71) return KEY_SEQ;
      if (c0 === 0x63 && b[s + 1] === 0x69 && b[s + 2] === 0x64) return KEY_CID;
      return 0;
    case 4:
      if (c0 === 0x72 && b[s + 1] === 0x6f && b[s + 2] === 0x6f && b[s + 3] === 0x6d) return KEY_ROOM;
      if (c0 === 0x62 && b[s + 1] === 0x6f && b[s + 2] === 0x64 && b[s + 3] === 0x79) return KEY_BODY;
      return 0;
    case 5:
      if (eq(b, s, 'since')) return KEY_SINCE;
      if (eq(b, s, 'epoch')) return KEY_EPOCH;
      if (eq(b, s, 'after')) return KEY_AFTER;
      if (eq(b, s, 'limit')) return KEY_LIMIT;
      return 0;
    case 6: return eq(b, s, 'before') ? KEY_BEFORE : 0;
    default: return 0;
  }
}

function eq(b: Uint8Array, s: number, lit: string): boolean {
  for (let i = 0; i < lit.length; i++) if (b[s + i] !== lit.charCodeAt(i)) return false;
  return true;
}

function typeId(b: Uint8Array, s: number, e: number): number {
  switch (e - s) {
    case 3:
      if (eq(b, s, 'pub')) return T_PUB;
      if (eq(b, s, 'who')) return T_WHO;
      return 0;
    case 4:
      if (eq(b, s, 'join')) return T_JOIN;
      if (eq(b, s, 'hist')) return T_HIST;
      if (eq(b, s, 'read')) return T_READ;
      return 0;
    case 5: return eq(b, s, 'leave') ? T_LEAVE : 0;
    default: return 0;
  }
}

/** A number field: NaN absent, -1 present but invalid (wrong type, fractional, negative, too big). */
const ABSENT = NaN;
const INVALID = -1;

function asCount(b: Uint8Array, p: number, nilIsAbsent: boolean): number {
  if (b[p] === 0xc0) return nilIsAbsent ? ABSENT : INVALID;
  const v = readNumber(b, p);
  // A u64 beyond 2^53 reads as Infinity; any non-negative integer that large counts as 2^53 - 1
  // (a limit above 500 counts as 500, a read beyond the latest as the latest).
  if (v === Infinity && (b[p] === 0xcf || b[p] === 0xd3)) return Number.MAX_SAFE_INTEGER;
  if (!(v >= 0) || !Number.isFinite(v) || Math.floor(v) !== v) return INVALID;
  return v > Number.MAX_SAFE_INTEGER ? Number.MAX_SAFE_INTEGER : v;
}

/**
 * The result of scanning one client frame. One instance is reused per thread: every field is
 * reset by `scan`. Spans are offsets into the scanned buffer.
 */
export class ClientFrame {
  type = 0;
  /** The request's ref, or -1 when absent (or invalid, see refInvalid). */
  ref = -1;
  refInvalid = false;
  roomStart = -1;
  roomEnd = -1;
  bodyStart = -1;
  bodyEnd = -1;
  epochStart = -1;
  epochEnd = -1;
  /** A pub's `cid` span, -1 when absent. */
  cidStart = -1;
  cidEnd = -1;
  since = ABSENT;
  before = ABSENT;
  after = ABSENT;
  limit = ABSENT;
  seq = ABSENT;
  /** The error found, 0 if none, and a fixed human-readable message. */
  error = 0;
  message = '';
  private readonly str = { strStart: 0 };

  /**
   * Scans the frame at buf[start, end). Returns 0 for a valid frame, else an E_* code
   * (also in `error`, with `message`). `ref` is set whenever a valid one was read, so errors
   * can carry it.
   */
  scan(buf: Uint8Array, start: number, end: number, maxDepth = DEFAULT_MAX_BODY_DEPTH): number {
    this.type = 0; this.ref = -1; this.refInvalid = false;
    this.roomStart = this.roomEnd = this.bodyStart = this.bodyEnd = this.epochStart = this.epochEnd = -1;
    this.cidStart = this.cidEnd = -1;
    this.since = this.before = this.after = this.limit = this.seq = ABSENT;
    this.error = 0; this.message = '';
    if (start >= end) return this.fail(E_BAD_FRAME, 'empty frame');
    const c = buf[start]!;
    let pairs: number;
    let p: number;
    if (c >= 0x80 && c <= 0x8f) { pairs = c & 0x0f; p = start + 1; }
    else if (c === 0xde && start + 3 <= end) { pairs = (buf[start + 1]! << 8) | buf[start + 2]!; p = start + 3; }
    else if (c === 0xdf && start + 5 <= end) {
      pairs = ((buf[start + 1]! << 24) | (buf[start + 2]! << 16) | (buf[start + 3]! << 8) | buf[start + 4]!) >>> 0;
      p = start + 5;
    } else return this.fail(E_BAD_FRAME, 'a frame must be one MessagePack map');
    if (pairs * 2 > end - p) return this.fail(E_BAD_FRAME, 'truncated MessagePack');
    let seen = 0;
    let tSeen = false;
    let roomBadType = false;
    let badField = '';
    let tooDeep = '';
    for (let i = 0; i < pairs; i++) {
      const keyEnd = strSpan(buf, p, this.str);
      let key = 0;
      let valueAt: number;
      if (keyEnd >= 0) {
        if (keyEnd > end) return this.fail(E_BAD_FRAME, 'truncated MessagePack');
        key = keyId(buf, this.str.strStart, keyEnd);
        valueAt = keyEnd;
      } else {
        // A key that is not a string is ignored, however deep: walk past it without a limit.
        valueAt = skipValueFlat(buf, p, end);
        if (valueAt < 0) return this.skipFail(valueAt);
      }
      let next = skipValue(buf, valueAt, end, 1, maxDepth);
      if (next === SKIP_TOO_DEEP) {
        // Walk past it to find the rest of the frame (a `ref` after the body, trailing bytes).
        if (tooDeep === '') tooDeep = key === KEY_BODY ? 'body' : 'a value';
        next = skipValueFlat(buf, valueAt, end);
      }
      if (next < 0) return this.skipFail(next);
      if (key !== 0) {
        const bit = 1 << key;
        if ((seen & bit) !== 0 && badField === '') badField = 'duplicate key';
        seen |= bit;
        switch (key) {
          case KEY_T: {
            tSeen = true;
            const e = strSpan(buf, valueAt, this.str);
            this.type = e >= 0 ? typeId(buf, this.str.strStart, e) : 0;
            break;
          }
          case KEY_REF: {
            if (buf[valueAt] === 0xc0) break;
            const v = asCount(buf, valueAt, false);
            if (v === INVALID || v > MAX_REF) this.refInvalid = true; else this.ref = v;
            break;
          }
          case KEY_ROOM: {
            const e = strSpan(buf, valueAt, this.str);
            if (e >= 0) { this.roomStart = this.str.strStart; this.roomEnd = e; } else roomBadType = true;
            break;
          }
          case KEY_BODY: this.bodyStart = valueAt; this.bodyEnd = next; break;
          case KEY_EPOCH: {
            if (buf[valueAt] === 0xc0) break;
            const e = strSpan(buf, valueAt, this.str);
            if (e >= 0) { this.epochStart = this.str.strStart; this.epochEnd = e; } else if (badField === '') badField = 'epoch';
            break;
          }
          case KEY_CID: {
            if (buf[valueAt] === 0xc0) break;
            const e = strSpan(buf, valueAt, this.str);
            if (e >= 0 && isValidCidBytes(buf, this.str.strStart, e)) { this.cidStart = this.str.strStart; this.cidEnd = e; }
            else if (badField === '') badField = 'cid must be a string of 1..64 [A-Za-z0-9_.:@-]';
            break;
          }
          case KEY_SINCE: this.since = asCount(buf, valueAt, true); break;
          case KEY_BEFORE: this.before = asCount(buf, valueAt, true); break;
          case KEY_AFTER: this.after = asCount(buf, valueAt, true); break;
          case KEY_LIMIT: this.limit = asCount(buf, valueAt, true); break;
          case KEY_SEQ: this.seq = asCount(buf, valueAt, false); break;
        }
      }
      p = next;
    }
    if (p !== end) return this.fail(E_BAD_FRAME, 'trailing bytes after the MessagePack map');
    if (this.type === 0) return this.fail(E_UNKNOWN_TYPE, tSeen ? 'unknown frame type t' : 'missing frame type t');
    if (this.refInvalid) return this.fail(E_BAD_REQUEST, 'ref must be an integer 0..2^32-1');
    if (tooDeep !== '') return this.fail(E_BAD_REQUEST, `${tooDeep} nested deeper than ${maxDepth} levels`);
    if (badField !== '') return this.fail(E_BAD_REQUEST, `bad field: ${badField}`);
    // Every client frame names a room.
    if (roomBadType) return this.fail(E_BAD_ROOM, 'room must be a string of 1..128 [A-Za-z0-9_.:@-]');
    if (this.roomStart < 0) return this.fail(E_BAD_REQUEST, 'missing field: room');
    if (!isValidRoomBytes(buf, this.roomStart, this.roomEnd)) {
      return this.fail(E_BAD_ROOM, 'room must be a string of 1..128 [A-Za-z0-9_.:@-]');
    }
    switch (this.type) {
      case T_JOIN:
        if (this.since === INVALID) return this.fail(E_BAD_REQUEST, 'since must be a non-negative integer');
        break;
      case T_PUB:
        if (this.bodyStart < 0) return this.fail(E_BAD_REQUEST, 'missing field: body');
        break;
      case T_HIST:
        if (this.before === INVALID) return this.fail(E_BAD_REQUEST, 'before must be a non-negative integer');
        if (this.after === INVALID) return this.fail(E_BAD_REQUEST, 'after must be a non-negative integer');
        if (this.before === this.before && this.after === this.after) {
          return this.fail(E_BAD_REQUEST, 'hist takes at most one of before and after');
        }
        if (this.limit === INVALID || this.limit < 1) return this.fail(E_BAD_REQUEST, 'limit must be an integer >= 1');
        break;
      case T_READ:
        if (this.seq !== this.seq) return this.fail(E_BAD_REQUEST, 'missing field: seq');
        if (this.seq === INVALID) return this.fail(E_BAD_REQUEST, 'seq must be a non-negative integer');
        break;
    }
    return 0;
  }

  /** The hist limit after defaults and the 500 cap. */
  histLimit(): number {
    const l = this.limit;
    return l !== l ? DEFAULT_HIST_LIMIT : l > MAX_HIST_LIMIT ? MAX_HIST_LIMIT : l;
  }

  private skipFail(code: number): number {
    if (code === SKIP_EXTENSION) return this.fail(E_BAD_FRAME, 'MessagePack extension types are not allowed');
    if (code === SKIP_TOO_DEEP) return this.fail(E_BAD_REQUEST, 'value nested too deep');
    return this.fail(E_BAD_FRAME, 'truncated or invalid MessagePack');
  }

  private fail(code: number, message: string): number {
    this.error = code;
    this.message = message;
    return code;
  }
}

/** True when n is an absent number field (NaN). */
export function isAbsent(n: number): boolean {
  return n !== n;
}

// ---- server frames -------------------------------------------------------------------------

export interface Limits {
  maxFrame: number;
  maxRooms: number;
  ratePerSec: number;
  burst: number;
  maxBuffer: number;
}

export function writeHello(w: MsgWriter, conn: string, user: string, limits: Limits): void {
  w.mapHeader(5).str('t').str('hello').str('conn').str(conn).str('user').str(user).str('v').uint(1);
  w.str('limits').mapHeader(5)
    .str('maxFrame').uint(limits.maxFrame).str('maxRooms').uint(limits.maxRooms)
    .str('ratePerSec').uint(limits.ratePerSec).str('burst').uint(limits.burst)
    .str('maxBuffer').uint(limits.maxBuffer);
}

/** `err` with code, msg, optional retryAfterMs and ref (-1 = none). */
export function writeErr(w: MsgWriter, code: number, msg: string, ref: number, retryAfterMs = -1): void {
  w.mapHeader(3 + (ref >= 0 ? 1 : 0) + (retryAfterMs >= 0 ? 1 : 0));
  w.str('t').str('err').str('code').str(ERR_NAMES[code] ?? 'internal').str('msg').str(msg);
  if (retryAfterMs >= 0) w.str('retryAfterMs').uint(retryAfterMs);
  if (ref >= 0) w.str('ref').uint(ref);
}

/** `refreshed` {exp, ref?}: a `refresh` frame's new token was accepted (docs/PROTOCOL.md). */
export function writeRefreshed(w: MsgWriter, exp: number, ref: number): void {
  w.mapHeader(2 + (ref >= 0 ? 1 : 0)).str('t').str('refreshed').str('exp').uint(exp);
  if (ref >= 0) w.str('ref').uint(ref);
}

/** Starts a frame `{t, room, ...}` with `extra` more pairs, the room given as bytes. */
export function writeHead(w: MsgWriter, t: string, room: Uint8Array, rs: number, re: number, ref: number, extra: number): void {
  w.mapHeader(2 + extra + (ref >= 0 ? 1 : 0)).str('t').str(t).str('room').strBytes(room, rs, re);
  if (ref >= 0) w.str('ref').uint(ref);
}

/** A `msg` frame: the body is copied as the client encoded it, never decoded; `cid` (null: none) last. */
export function writeMsg(w: MsgWriter, room: Uint8Array, rs: number, re: number, seq: number, from: string,
  body: Uint8Array, bs: number, be: number, ts: number, cid: string | null = null): void {
  w.mapHeader(cid === null ? 6 : 7).str('t').str('msg').str('room').strBytes(room, rs, re).str('seq').uint(seq)
    .str('from').str(from).str('body').raw(body, bs, be).str('ts').uint(ts);
  if (cid !== null) w.str('cid').str(cid);
}
