/**
 * Turns inbound records into room state changes and outbound records. Never touches a socket:
 * its only output is the outbound ring. Each `handle` either does all of a record's work or,
 * when the outbound ring lacks room for the worst case, does nothing and returns the bytes it
 * needs (the loop waits for them and calls it again). Closing a connection is the one record done
 * room by room, and it resumes where it stopped, so a retry never repeats work.
 */
import { BufferPool, DEFAULT_CLASSES } from '../engine/pool/index.js';
import { MsgWriter, asciiString } from '../engine/protocol/msgpack.js';
import {
  ClientFrame, E_INTERNAL, E_NOT_JOINED, T_HIST, T_JOIN, T_LEAVE, T_PUB, T_READ, T_WHO,
  errBound, isAbsent, msgBound, writeErr, writeHead, writeMsg,
} from '../engine/protocol/frames.js';
import {
  CRASH_AFTER_PUBLISH, CRASH_EXIT, CRASH_HANG, CRASH_THROW, IN_CLOSE, IN_CRASH, IN_DRAIN, IN_FRAME, IN_REPLAY, IN_SERVER_PUB,
  IN_FRAME_BODY, OUT_BODY, OUT_DRAINED, OUT_PUBLISH_ACK, OUT_JOINED, OUT_LEFT, OUT_PUBLISH, OUT_SEND, OUT_SERVER_ACK, getU32, putU32,
} from '../engine/protocol/records.js';
import type { RingWriter } from '../engine/ring/index.js';
import { type Room, Rooms } from './rooms.js';

export interface HandlerOptions {
  historyLimit: number;
  maxHistBytes: number;
  roomTtlMs: number;
  maxBodyDepth: number;
}

/** Slack per outbound record for its header and small frame fields. */
const REC_SLACK = 320;

export class Handler {
  readonly rooms: Rooms;
  /** History buffers; the top class holds a msg frame around the largest body (maxFrameBytes <= 1 MiB). */
  readonly pool = new BufferPool({ classes: [...DEFAULT_CLASSES, 2 << 20] });
  /** Set once IN_DRAIN was handled. */
  drained = false;
  published = 0;
  /** Test hook (CRASH_AFTER_PUBLISH): exit after the publish that carries a message past this count; -1 = off. */
  crashAfterPublishOf = -1;
  /** Deliveries the fan-out makes: the room's member connections at each publish. */
  delivered = 0;
  private readonly frame = new ClientFrame();
  private readonly w = new MsgWriter();
  /** Writes history entries (pooled buffers). */
  private readonly hw = new MsgWriter();
  private recStart = 0;
  private recRoom: Uint8Array | null = null;
  private readonly usersScratch: string[] = [];

  constructor(private readonly out: RingWriter, private readonly opts: HandlerOptions) {
    this.rooms = new Rooms(opts.historyLimit, opts.roomTtlMs, this.pool);
  }

  /** Handles one inbound record at b[off, off+len). Returns 0 when done, else outbound bytes needed. */
  handle(b: Uint8Array, off: number, len: number): number {
    const end = off + len;
    switch (b[off]) {
      case IN_FRAME: return this.onFrame(b, off, end);
      case IN_CLOSE: return this.onClose(getU32(b, off + 1));
      case IN_SERVER_PUB: return this.onServerPub(b, off, end);
      case IN_REPLAY: return this.onReplay(b, off);
      case IN_DRAIN:
        if (!this.fits(2 * (OUT_BODY + 8))) return 2 * (OUT_BODY + 8);
        this.begin(OUT_DRAINED, -1, null, 0);
        this.end();
        this.drained = true;
        return 0;
      case IN_CRASH:
        if (b[off + 1] === CRASH_EXIT) process.exit(70);
        if (b[off + 1] === CRASH_THROW) throw new Error('shard crash requested (test hook)');
        if (b[off + 1] === CRASH_AFTER_PUBLISH) this.crashAfterPublishOf = this.published;
        if (b[off + 1] === CRASH_HANG) for (;;) { /* test hook: a stuck shard (the supervisor's heartbeat watch ends it) */ }
        return 0;
      default:
        throw new Error(`unknown inbound record kind ${b[off]}`);
    }
  }

  // ---- output -------------------------------------------------------------------------------

  private fits(bytes: number): boolean {
    return this.out.freeBytes() >= bytes;
  }

  /**
   * Reserves an outbound record with room for `bodyBound` body bytes, writes its header and aims
   * `w` at the body (8-byte aligned); `end()` appends the room bytes and commits.
   */
  private begin(kind: number, id: number, room: Uint8Array | null, bodyBound: number): MsgWriter {
    const roomLen = room === null ? 0 : room.byteLength;
    const bound = OUT_BODY + bodyBound + roomLen;
    const off = this.out.reserve(bound);
    if (off < 0) throw new Error(`outbound ring refused ${bound} bytes after the space check`);
    const b = this.out.bytes;
    b[off] = kind;
    b[off + 1] = roomLen;
    putU32(b, off + 4, id < 0 ? 0 : id);
    this.recStart = off;
    this.recRoom = room;
    return this.w.reset(b, off + OUT_BODY, off + bound);
  }

  private end(): void {
    const room = this.recRoom;
    if (room !== null) this.w.raw(room, 0, room.byteLength);
    this.recRoom = null;
    this.out.commit(this.w.pos - this.recStart);
  }

  /** err replies sent, by error number. */
  readonly errors = new Float64Array(16);

  /** Sends an `err`, or does nothing and returns the outbound bytes it needs. */
  private sendErr(conn: number, code: number, msg: string, ref: number): number {
    const bound = errBound(msg.length);
    // Room for the record twice over: a record that does not fit in the tail also costs the tail.
    const need = 2 * (OUT_BODY + bound + 8);
    if (!this.fits(need)) return need;
    this.errors[code]!++;
    const w = this.begin(OUT_SEND, conn, null, bound);
    writeErr(w, code, msg, ref);
    this.end();
    return 0;
  }


  // ---- client frames ------------------------------------------------------------------------

  private onFrame(b: Uint8Array, off: number, end: number): number {
    const conn = getU32(b, off + 4);
    const stamp = getU32(b, off + 8);
    const fs = off + IN_FRAME_BODY;
    const fe = end - b[off + 1]!;
    const f = this.frame;
    if (f.scan(b, fs, fe, this.opts.maxBodyDepth) !== 0) {
      // The main thread validated the frame already; a failure here is still answered, never dropped.
      return this.sendErr(conn, f.error, f.message, f.ref);
    }
    const name = asciiString(b, f.roomStart, f.roomEnd);
    if (f.type === T_JOIN) return this.join(conn, asciiString(b, fe, end), name, f, b, false);
    const r = this.rooms.get(name);
    const user = r?.members.get(conn);
    if (r === undefined || user === undefined) {
      return this.sendErr(conn, E_NOT_JOINED, `not joined to room ${name}`, f.ref);
    }
    switch (f.type) {
      case T_PUB: return this.pub(r, user, b, f.bodyStart, f.bodyEnd, conn, f.ref, -1, stamp);
      case T_LEAVE: return this.leave(r, conn, f.ref);
      case T_HIST: return this.hist(r, conn, f);
      case T_READ: return this.read(r, user, conn, f);
      case T_WHO: return this.who(r, conn, f.ref);
      default:
        return this.sendErr(conn, E_INTERNAL, 'unhandled frame type', f.ref);
    }
  }

  private join(conn: number, user: string, name: string, f: ClientFrame | null, b: Uint8Array, replay: boolean): number {
    const r = this.rooms.room(name);
    // What `missed` would hold, or -1 for `truncated`, or -2 when `since` was not given.
    let missedFrom = -2;
    let missedBytes = 0;
    if (f !== null && !isAbsent(f.since)) {
      const since = f.since;
      const sameEpoch = f.epochStart < 0 || (f.epochEnd - f.epochStart === r.epoch.length &&
        asciiString(b, f.epochStart, f.epochEnd) === r.epoch);
      if (!sameEpoch || since > r.seq || since + 1 < this.rooms.firstKept(r)) missedFrom = -1;
      else {
        missedFrom = since + 1;
        for (let s = missedFrom; s <= r.seq; s++) missedBytes += r.histLens[this.rooms.slotOf(r, s)]!;
        if (missedBytes > this.opts.maxHistBytes) missedFrom = -1;
      }
    }
    const joinedBound = 200 + r.name.length + r.epoch.length + (missedFrom >= 0 ? missedBytes + 5 : 0);
    const need = 2 * (joinedBound + 6 + r.name.length + 2 * REC_SLACK + user.length * 3);
    if (!this.fits(need)) return need;
    const ref = f === null ? -1 : f.ref;
    const already = r.members.has(conn);
    if (!already) {
      const first = this.rooms.addMember(r, conn, user);
      // Presence goes out before `joined`: the joiner is subscribed only when `joined` reaches
      // the main thread, so it never sees its own presence; everyone else does.
      if (first && !replay) this.presence(r, user, 'join');
    }
    const cursor = r.cursors.get(user) ?? r.seq;
    const w = this.begin(OUT_JOINED, conn, r.nameBytes, joinedBound);
    const extra = 4 + (missedFrom === -2 ? 0 : 1);
    writeHead(w, 'joined', r.nameBytes, 0, r.nameBytes.byteLength, ref, extra);
    w.str('epoch').str(r.epoch).str('seq').uint(r.seq).str('unread').uint(r.seq - cursor).str('members').uint(r.users.size);
    if (missedFrom === -1) w.str('truncated').bool(true);
    else if (missedFrom >= 0) {
      w.str('missed').arrayHeader(r.seq - missedFrom + 1);
      for (let s = missedFrom; s <= r.seq; s++) {
        const slot = this.rooms.slotOf(r, s);
        w.raw(r.histBufs[slot]!, 0, r.histLens[slot]!);
      }
    }
    this.end();
    return 0;
  }

  private presence(r: Room, user: string, state: 'join' | 'leave'): void {
    const w = this.begin(OUT_PUBLISH, 0, r.nameBytes, 96 + r.name.length + 3 * user.length);
    writeHead(w, 'presence', r.nameBytes, 0, r.nameBytes.byteLength, -1, 2);
    w.str('user').str(user).str('state').str(state);
    this.end();
  }

  private leave(r: Room, conn: number, ref: number): number {
    const need = 4 * (REC_SLACK + r.name.length) + 200;
    if (!this.fits(need)) return need;
    const last = this.rooms.removeMember(r, conn);
    // `left` first: the main thread unsubscribes before sending it, so no `msg` follows it.
    const w = this.begin(OUT_LEFT, conn, r.nameBytes, 64 + r.name.length);
    writeHead(w, 'left', r.nameBytes, 0, r.nameBytes.byteLength, ref, 0);
    this.end();
    if (last !== null) this.presence(r, last, 'leave');
    return 0;
  }

  /** Assigns the next seq, keeps the encoded msg in history, fans it out, acks the sender. */
  private pub(r: Room, from: string, b: Uint8Array, bs: number, be: number, conn: number, ref: number, req: number, stamp: number): number {
    const bound = msgBound(r.name.length, from.length, be - bs);
    // Two records (msg, ack) plus one record's worth of padding should the ring wrap.
    const need = 2 * bound + 3 * REC_SLACK;
    if (!this.fits(need)) return need;
    const seq = ++r.seq;
    const buf = this.pool.acquire(bound);
    const hw = this.hw.reset(buf);
    writeMsg(hw, r.nameBytes, 0, r.nameBytes.byteLength, seq, from, b, bs, be, Date.now());
    const len = hw.pos;
    if (req < 0) {
      // A client's pub: the msg and the sender's ack in one record (see OUT_PUBLISH_ACK).
      const w = this.begin(OUT_PUBLISH_ACK, conn, r.nameBytes, 8 + len + 64 + r.name.length);
      putU32(w.buf, w.pos, stamp);
      putU32(w.buf, w.pos + 4, len);
      w.pos += 8;
      w.raw(buf, 0, len);
      writeHead(w, 'ack', r.nameBytes, 0, r.nameBytes.byteLength, ref, 1);
      w.str('seq').uint(seq);
      this.end();
    } else {
      const w = this.begin(OUT_PUBLISH, stamp, r.nameBytes, len);
      w.raw(buf, 0, len);
      this.end();
      const aw = this.begin(OUT_SERVER_ACK, req, null, 16 + r.epoch.length);
      putU32(aw.buf, aw.pos, Math.floor(seq / 0x100000000));
      putU32(aw.buf, aw.pos + 4, seq >>> 0);
      aw.pos += 8;
      aw.buf[aw.pos++] = r.epoch.length;
      for (let i = 0; i < r.epoch.length; i++) aw.buf[aw.pos++] = r.epoch.charCodeAt(i);
      this.end();
    }
    if (r.cursors.has(from)) r.cursors.set(from, seq);
    this.rooms.pushHistory(r, buf, len);
    this.published++;
    this.delivered += r.members.size;
    return 0;
  }

  private hist(r: Room, conn: number, f: ClientFrame): number {
    const limit = f.histLimit();
    const first = this.rooms.firstKept(r);
    let lo: number; let hi: number; // the range asked for, inclusive
    if (!isAbsent(f.before)) { hi = Math.min(f.before - 1, r.seq); lo = hi - limit + 1; }
    else if (!isAbsent(f.after)) { lo = f.after + 1; hi = Math.min(lo + limit - 1, r.seq); }
    else { hi = r.seq; lo = hi - limit + 1; }
    if (lo < 1) lo = 1;
    // Truncated: some of the range asked for existed once but history no longer keeps it.
    const truncated = lo < first && lo <= hi;
    if (lo < first) lo = first;
    // Keep within maxHistBytes: the newest end for "latest"/"before" pages, the oldest for "after";
    // a page always holds at least one message, however large, so paging never stalls.
    let bytes = 0;
    const fromNewest = isAbsent(f.after);
    let a = lo; let z = hi;
    if (fromNewest) {
      for (let s = hi; s >= lo; s--) {
        const l = r.histLens[this.rooms.slotOf(r, s)]!;
        if (bytes + l > this.opts.maxHistBytes && s !== hi) { a = s + 1; break; }
        bytes += l;
      }
    } else {
      for (let s = lo; s <= hi; s++) {
        const l = r.histLens[this.rooms.slotOf(r, s)]!;
        if (bytes + l > this.opts.maxHistBytes && s !== lo) { z = s - 1; break; }
        bytes += l;
      }
    }
    const count = z >= a ? z - a + 1 : 0;
    const bound = 128 + r.name.length + bytes;
    const need = 2 * (bound + REC_SLACK);
    if (!this.fits(need)) return need;
    const w = this.begin(OUT_SEND, conn, null, bound);
    writeHead(w, 'hist', r.nameBytes, 0, r.nameBytes.byteLength, f.ref, truncated ? 2 : 1);
    w.str('msgs').arrayHeader(count);
    for (let s = a; s <= z; s++) {
      const slot = this.rooms.slotOf(r, s);
      w.raw(r.histBufs[slot]!, 0, r.histLens[slot]!);
    }
    if (truncated) w.str('truncated').bool(true);
    this.end();
    return 0;
  }

  private read(r: Room, user: string, conn: number, f: ClientFrame): number {
    const need = 2 * (REC_SLACK + r.name.length);
    if (!this.fits(need)) return need;
    const target = Math.min(f.seq, r.seq);
    const cur = r.cursors.get(user) ?? 0;
    const next = target > cur ? target : cur;
    r.cursors.set(user, next);
    const w = this.begin(OUT_SEND, conn, null, 64 + r.name.length);
    writeHead(w, 'ack', r.nameBytes, 0, r.nameBytes.byteLength, f.ref, 1);
    w.str('seq').uint(next);
    this.end();
    return 0;
  }

  private who(r: Room, conn: number, ref: number): number {
    const users = this.usersScratch;
    users.length = 0;
    let bytes = 0;
    let truncated = false;
    for (const u of r.users.keys()) {
      if (bytes + u.length + 2 > this.opts.maxHistBytes) { truncated = true; break; }
      users.push(u);
      bytes += u.length + 2;
    }
    const bound = 128 + r.name.length + bytes + 5;
    const need = 2 * (bound + REC_SLACK);
    if (!this.fits(need)) return need;
    const w = this.begin(OUT_SEND, conn, null, bound);
    writeHead(w, 'who', r.nameBytes, 0, r.nameBytes.byteLength, ref, truncated ? 2 : 1);
    w.str('users').arrayHeader(users.length);
    for (const u of users) w.str(u);
    if (truncated) w.str('truncated').bool(true);
    this.end();
    users.length = 0;
    return 0;
  }

  // ---- other records ------------------------------------------------------------------------

  /** A connection closed: leave each of its rooms here, room by room (resumable). */
  private onClose(conn: number): number {
    const c = this.rooms.conns.get(conn);
    if (c === undefined) return 0;
    for (const r of [...c.rooms]) {
      const need = 2 * (REC_SLACK + r.name.length + 200);
      if (!this.fits(need)) return need;
      const last = this.rooms.removeMember(r, conn);
      if (last !== null) this.presence(r, last, 'leave');
    }
    return 0;
  }

  private onServerPub(b: Uint8Array, off: number, end: number): number {
    const req = getU32(b, off + 1);
    let p = off + 5;
    const roomLen = b[p++]!;
    const name = asciiString(b, p, p + roomLen);
    p += roomLen;
    const fromLen = b[p++]!;
    const from = asciiString(b, p, p + fromLen);
    p += fromLen;
    return this.pub(this.rooms.room(name), from, b, p, end, -1, -1, req, 0);
  }

  private onReplay(b: Uint8Array, off: number): number {
    const conn = getU32(b, off + 1);
    let p = off + 5;
    const userLen = b[p++]!;
    const user = asciiString(b, p, p + userLen);
    p += userLen;
    const roomLen = b[p++]!;
    const name = asciiString(b, p, p + roomLen);
    return this.join(conn, user, name, null, b, true);
  }
}
