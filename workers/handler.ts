/**
 * Turns inbound records into room state changes and outbound records. Never touches a socket:
 * its only output is the outbound ring. Each `handle` either does all of a record's work or,
 * when the outbound ring lacks room for it, does nothing and returns the bytes it needs (the loop
 * waits for them and calls it again). Closing a connection is the one record done room by room,
 * and it resumes where it stopped, so a retry never repeats work.
 *
 * Sizes are never computed by hand: every record body is written by one `put*` method, which a
 * handler first runs over a MsgSizer (it writes nothing and counts) with the same arguments, then
 * over the reserved ring space. `begin` reserves exactly the counted bytes and `end` checks the
 * writer stopped there, so a size and its writer cannot drift apart.
 *
 * With a durable store (docs/STORE.md) the first record of a batch opens a store batch, every
 * pub and cursor change is written into it, and the shard loop calls `commit()` before it
 * publishes the outbound ring, so no ack and no msg is visible before its commit. Rooms come
 * back from the store with their epoch and seq; the in-memory history is a cache of the newest
 * messages, and what is older than it is read from the store. Without a store (`store: 'memory'`)
 * the history cache is all the history there is, as before.
 *
 * New inbound record kinds get a case in `handle()` and a method of their own under "other records".
 */
import { MsgSizer, MsgWriter, asciiString } from '../engine/protocol/msgpack.js';
import {
  ClientFrame, E_INTERNAL, E_NOT_JOINED, E_ROOM_LIMIT, T_HIST, T_JOIN, T_LEAVE, T_PUB, T_READ, T_WHO,
  isAbsent, writeErr, writeMsg,
} from '../engine/protocol/frames.js';
import {
  CRASH_AFTER_PUBLISH, CRASH_EXIT, CRASH_HANG, CRASH_THROW, IN_CLOSE, IN_CRASH, IN_DRAIN, IN_FRAME, IN_FRAME_ANON, IN_REPLAY, IN_SERVER_PUB, IN_ADMIN,
  IN_FRAME_BODY, OUT_BODY, OUT_DRAINED, OUT_PUBLISH_ACK, OUT_JOINED, OUT_LEFT, OUT_PUBLISH, OUT_REFUSED, OUT_SEND, OUT_SERVER_ACK, getU32, inFrameBounds, readReplay, readServerPub, type InFrameBounds,
} from '../engine/protocol/records.js';
import { type RingWriter, recordSpan } from '../engine/ring/index.js';
import { type Room, Rooms, connRooms } from './rooms.js';
import { CreationLimiter } from './creation.js';
import { CidWindow } from './cids.js';
import type { Store } from './store/index.js';
import { handleAdmin } from './admin.js';
import { EventQueue, ShardEvents } from './events.js';
import { writeAck, writeHist, writeJoined, writeLeft, writePresence, writeServerAck, writeWho } from './replies.js';

export interface HandlerOptions {
  historyLimit: number;
  historyBudgetBytes: number;
  maxHistBytes: number;
  roomTtlMs: number;
  maxBodyDepth: number;
  maxRoomsPerShard: number;
  roomCreateRate: number;
  roomCreateBurst: number;
  maxCursorsPerRoom: number;
  maxCursorsPerShard: number;
  /** The cid dedupe window: a repeat is recognised among the room's last N messages that are also at most cidWindowMs old. */
  cidWindowMessages: number;
  cidWindowMs: number;
  /** Webhooks are on: emit OUT_EVENT records (workers/events.ts). */
  events?: boolean;
  /** Bounds of the events waiting for outbound room (default PENDING_EVENT_ENTRIES / _BYTES; tests lower them). */
  eventQueueEntries?: number;
  eventQueueBytes?: number;
}

/** Principals whose room-creation buckets a shard keeps (LRU beyond it). */
export const CREATION_TABLE_ENTRIES = 65_536;

/** What `joined` carries about history: `missed` from a seq, `truncated`, or neither. */
const NO_SINCE = -2;
const TRUNCATED = -1;

export class Handler {
  readonly rooms: Rooms;
  readonly creation: CreationLimiter;
  /** Webhook events (workers/events.ts), when opts.events; null otherwise. */
  readonly events: ShardEvents | null;
  /** Where the events go: the ring, or a bounded wait for its room (workers/events.ts). */
  readonly eventQueue: EventQueue | null;
  /** Set once IN_DRAIN was handled. */
  drained = false;
  published = 0;
  /** Test hook (CRASH_AFTER_PUBLISH): exit after the publish that carries a message past this count; -1 = off. */
  crashAfterPublishOf = -1;
  /** Deliveries the fan-out makes: the room's member connections at each publish. */
  delivered = 0;
  /** err replies sent, by error number. */
  readonly errors = new Float64Array(16);
  private readonly frame = new ClientFrame();
  private readonly w = new MsgWriter();
  private readonly sz = new MsgSizer();
  private recStart = 0;
  private recBodyEnd = 0;
  /** The room name of the records being written (ASCII), and its length. */
  private readonly nb = new Uint8Array(256);
  private nbLen = 0;
  private recRoomLen = 0;
  /** Ring bytes the records of one handle take: their spans' sum and the largest (see need()). */
  private spanSum = 0;
  private spanMax = 0;
  private readonly usersScratch: string[] = [];
  /** The frames of the hist page or joined.missed being written, in seq order, and their lengths. */
  private readonly pageBufs: Uint8Array[] = [];
  private readonly pageLens: number[] = [];
  private readonly bounds: InFrameBounds = { userStart: 0, infoLen: -1, frameEnd: 0 };
  /** A room this shard does not hold, as the store has it (undefined without a store). */
  private readonly stored: ((name: string) => { epoch: string; seq: number }) | undefined;

  constructor(private readonly out: RingWriter, private readonly opts: HandlerOptions, readonly store: Store | null = null) {
    this.rooms = new Rooms(opts);
    this.rooms.trackDropped = store !== null;
    this.creation = new CreationLimiter(opts.roomCreateRate, opts.roomCreateBurst, CREATION_TABLE_ENTRIES);
    this.stored = store === null ? undefined : (name) => store.room(name);
    this.eventQueue = opts.events === true ? new EventQueue(out, opts.eventQueueEntries, opts.eventQueueBytes) : null;
    this.events = this.eventQueue === null ? null : new ShardEvents(this.eventQueue.write);
  }

  /**
   * Writes webhook events still waiting for outbound room (the shard loop calls it before it
   * parks): 0 when none is left, else the free outbound bytes the next one needs.
   */
  flushEvents(): number {
    return this.eventQueue === null || this.eventQueue.pending === 0 ? 0 : this.eventQueue.flush();
  }

  /**
   * Commits the store batch the records handled since the last call opened (call it before the
   * outbound ring is published: an ack means committed), then lets the store forget the rooms
   * the shard dropped. Throws the store's error when the commit fails (the batch is rolled back).
   */
  commit(): void {
    const s = this.store;
    if (s === null) return;
    if (s.inBatch) s.commit();
    for (const name of this.rooms.takeDropped()) if (this.rooms.get(name) === undefined) s.evict(name);
  }

  /** Handles one inbound record at b[off, off+len). Returns 0 when done, else outbound bytes needed. */
  handle(b: Uint8Array, off: number, len: number): number {
    const end = off + len;
    // Events a previous record left waiting go out before anything new (workers/events.ts).
    const waiting = this.flushEvents();
    if (waiting > 0) return waiting;
    if (this.store !== null && !this.store.inBatch) this.store.beginBatch();
    switch (b[off]) {
      case IN_FRAME: return this.onFrame(b, off, end);
      case IN_CLOSE: return this.onClose(getU32(b, off + 1));
      case IN_SERVER_PUB: return this.onServerPub(b, off, end);
      case IN_REPLAY: return this.onReplay(b, off, end);
      case IN_ADMIN: return handleAdmin(this.out, this.rooms, this.opts.maxHistBytes, b, off, end, this.store);
      case IN_DRAIN: {
        const need = this.plan().add(0, 0).need();
        if (!this.fits(need)) return need;
        this.begin(OUT_DRAINED, -1, 0, 0);
        this.end();
        this.drained = true;
        return 0;
      }
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

  /** Starts planning the records of one handle. */
  private plan(): this {
    this.spanSum = 0;
    this.spanMax = 0;
    return this;
  }

  /** Aims the room name bytes (`nb`) at r: every record of a handle is about one room. */
  private useRoom(name: string): void {
    for (let i = 0; i < name.length; i++) this.nb[i] = name.charCodeAt(i);
    this.nbLen = name.length;
  }

  /** Adds a record of `bodyLen` body bytes (as a MsgSizer counted them) and `roomLen` room bytes to the plan. */
  private add(bodyLen: number, roomLen: number): this {
    const s = recordSpan(OUT_BODY + bodyLen + roomLen);
    this.spanSum += s;
    if (s > this.spanMax) this.spanMax = s;
    return this;
  }

  /**
   * Free outbound bytes the planned records are sure to fit in: their spans, plus the tail the
   * ring skips should one of them not fit before its end (shorter than that record's span; the
   * records of one handle take less than the ring, so it wraps at most once).
   */
  private need(): number {
    return this.spanSum + this.spanMax;
  }

  /** A sizer at 0, to run a `put*` method over. */
  private size(): MsgSizer {
    return this.sz.start();
  }

  /**
   * Reserves an outbound record of exactly `bodyLen` body bytes plus the room, writes its header
   * and aims `w` at the body (8-byte aligned); `end()` checks the body, appends the room, commits.
   */
  private begin(kind: number, id: number, roomLen: number, bodyLen: number): MsgWriter {
    const len = OUT_BODY + bodyLen + roomLen;
    const off = this.out.reserve(len);
    if (off < 0) throw new Error(`outbound ring refused ${len} bytes after the space check`);
    const b = this.out.bytes;
    b[off] = kind;
    b[off + 1] = roomLen;
    b[off + 2] = 0;
    b[off + 3] = 0;
    const idv = id < 0 ? 0 : id;
    b[off + 4] = idv & 0xff; b[off + 5] = (idv >>> 8) & 0xff; b[off + 6] = (idv >>> 16) & 0xff; b[off + 7] = idv >>> 24;
    this.recStart = off;
    this.recBodyEnd = off + OUT_BODY + bodyLen;
    this.recRoomLen = roomLen;
    return this.w.reset(b, off + OUT_BODY, this.recBodyEnd);
  }

  private end(): void {
    const w = this.w;
    if (w.pos !== this.recBodyEnd) {
      throw new Error(`a record body was sized at ${this.recBodyEnd - this.recStart - OUT_BODY} bytes and wrote ${w.pos - this.recStart - OUT_BODY}`);
    }
    const n = this.recRoomLen;
    if (n > 0) w.reset(w.buf, w.pos, w.pos + n).raw(this.nb, 0, n);
    this.recRoomLen = 0;
    this.out.commit(w.pos - this.recStart);
  }

  /**
   * Sends an `err`, or does nothing and returns the outbound bytes it needs. `refused`: it answers
   * a join the main thread already counted, so it goes as OUT_REFUSED with the room (`nb`).
   */
  private sendErr(conn: number, code: number, msg: string, ref: number, retryAfterMs = -1, refused = false): number {
    writeErr(this.size(), code, msg, ref, retryAfterMs);
    const bodyLen = this.sz.pos;
    const roomLen = refused ? this.nbLen : 0;
    const need = this.plan().add(bodyLen, roomLen).need();
    if (!this.fits(need)) return need;
    this.errors[code]!++;
    writeErr(this.begin(refused ? OUT_REFUSED : OUT_SEND, conn, roomLen, bodyLen), code, msg, ref, retryAfterMs);
    this.end();
    return 0;
  }

  // ---- record bodies: each written by one method, sized by running it over the sizer --------

  private putJoined(w: MsgWriter, r: Room, ref: number, unread: number, members: number, missedFrom: number): void {
    writeJoined(w, this.nb, this.nbLen, ref, r.epoch, r.seq, unread, members, missedFrom === TRUNCATED, missedFrom >= 0 ? this.putPage : null);
  }

  /** `info`: the joining identity's (a MessagePack map), on a join only. */
  private putPresence(w: MsgWriter, _r: Room, user: string, state: 'join' | 'leave', info: Uint8Array | null = null): void {
    writePresence(w, this.nb, this.nbLen, user, state, info);
  }

  private putLeft(w: MsgWriter, _r: Room, ref: number): void {
    writeLeft(w, this.nb, this.nbLen, ref);
  }

  private putAck(w: MsgWriter, _r: Room, ref: number, seq: number, dup = false): void {
    writeAck(w, this.nb, this.nbLen, ref, seq, dup);
  }

  /** The page's frames as a msgpack array. */
  private readonly putPage = (w: MsgWriter): void => {
    const bufs = this.pageBufs; const lens = this.pageLens;
    w.arrayHeader(bufs.length);
    for (let i = 0; i < bufs.length; i++) w.raw(bufs[i]!, 0, lens[i]!);
  };

  /** OUT_PUBLISH_ACK body: stamp, msg length, the msg frame, the sender's ack. */
  private putPublishAck(w: MsgWriter, r: Room, seq: number, from: string, b: Uint8Array, bs: number, be: number,
    ts: number, stamp: number, msgLen: number, ref: number, cid: string | null): void {
    w.u32le(stamp).u32le(msgLen);
    writeMsg(w, this.nb, 0, this.nbLen, seq, from, b, bs, be, ts, cid);
    this.putAck(w, r, ref, seq);
  }

  /** OUT_SERVER_ACK body: seq as two u32 (high, low), the epoch with a u8 length, then dup (0/1). */
  private putServerAck(w: MsgWriter, r: Room, seq: number, dup = false): void {
    writeServerAck(w, r.epoch, seq, dup);
  }

  private putHist(w: MsgWriter, _r: Room, ref: number, truncated: boolean): void {
    writeHist(w, this.nb, this.nbLen, ref, truncated, this.putPage);
  }

  // ---- pages of history: the memory cache, or the store for what is older ----------------

  /** The oldest seq still kept: the store's retention when there is one, else the cache's. */
  private firstKept(r: Room): number {
    return this.store === null ? this.rooms.firstKept(r) : this.store.firstKept(r.name);
  }

  private clearPage(): void {
    this.pageBufs.length = 0;
    this.pageLens.length = 0;
  }

  /** Puts the cached messages a..z on the page (all must be in the cache). */
  private pageFromCache(r: Room, a: number, z: number): void {
    for (let s = a; s <= z; s++) { this.pageBufs.push(this.rooms.entry(r, s)); this.pageLens.push(this.rooms.entryLen(r, s)); }
  }

  private pageFromStore(msgs: readonly { frame: Uint8Array }[], from: number, to: number): void {
    for (let i = from; i <= to; i++) { const f = msgs[i]!.frame; this.pageBufs.push(f); this.pageLens.push(f.byteLength); }
  }

  /**
   * Fills the page with messages since+1..r.seq for a join's `missed`: returns since + 1, or
   * TRUNCATED when they are no longer all kept or exceed maxHistBytes.
   */
  private pageMissed(r: Room, since: number): number {
    this.clearPage();
    const a = since + 1;
    if (since > r.seq || a < this.firstKept(r)) return TRUNCATED;
    if (a > r.seq) return a;
    const max = this.opts.maxHistBytes;
    if (a >= this.rooms.firstKept(r)) {
      let bytes = 0;
      for (let s = a; s <= r.seq; s++) bytes += this.rooms.entryLen(r, s);
      if (bytes > max) return TRUNCATED;
      this.pageFromCache(r, a, r.seq);
      return a;
    }
    const msgs = this.store!.range(r.name, a, r.seq, max);
    let bytes = 0;
    for (const m of msgs) bytes += m.frame.byteLength;
    if (msgs.length === 0 || msgs[0]!.seq !== a || msgs[msgs.length - 1]!.seq !== r.seq || bytes > max) return TRUNCATED;
    this.pageFromStore(msgs, 0, msgs.length - 1);
    return a;
  }

  /** `infos`: how many of `users` have info in r (then an `info` map user -> info follows the list). */
  private putWho(w: MsgWriter, r: Room, ref: number, users: readonly string[], truncated: boolean, infos: number): void {
    writeWho(w, this.nb, this.nbLen, ref, users, truncated, r.infos, infos);
  }

  // ---- client frames ------------------------------------------------------------------------

  private onFrame(b: Uint8Array, off: number, end: number): number {
    const conn = getU32(b, off + 4);
    const stamp = getU32(b, off + 8);
    const fs = off + IN_FRAME_BODY;
    // A join's identity info (records.ts): the frame, the info, its u32 length, then the user.
    const { userStart: ue, infoLen, frameEnd: fe } = inFrameBounds(b, off, end, this.bounds);
    const f = this.frame;
    if (f.scan(b, fs, fe, this.opts.maxBodyDepth) !== 0) {
      // The main thread validated the frame already; a failure here is still answered, never dropped.
      return this.sendErr(conn, f.error, f.message, f.ref);
    }
    const name = asciiString(b, f.roomStart, f.roomEnd);
    if (f.type === T_JOIN) {
      const anon = (b[off + 2]! & IN_FRAME_ANON) !== 0;
      const user = asciiString(b, ue, end);
      if (this.rooms.get(name) === undefined) {
        this.useRoom(name);
        // A room the store keeps (it has messages) exists: loading it takes no creation token, only memory.
        const stored = this.store !== null && this.store.room(name).seq > 0;
        const refused = this.refuseCreate(conn, anon ? `a${getU32(b, off + 12)}` : `u${user}`, f.ref, stored);
        // Refused: the store forgets the entry the check above made (else refused names would pile up in its cache).
        if (refused === 0) this.rooms.forget(name);
        if (refused >= 0) return refused;
      }
      // Copied out of the ring: the room keeps it while the user is present.
      return this.join(conn, user, anon, name, f, b, false, infoLen < 0 ? null : b.slice(fe, fe + infoLen));
    }
    const r = this.rooms.get(name);
    const user = r?.members.get(conn);
    if (r === undefined || user === undefined) {
      return this.sendErr(conn, E_NOT_JOINED, `not joined to room ${name}`, f.ref);
    }
    switch (f.type) {
      case T_PUB: {
        const cid = f.cidStart < 0 ? null : asciiString(b, f.cidStart, f.cidEnd);
        return this.pub(r, user, b, f.bodyStart, f.bodyEnd, conn, f.ref, -1, stamp, cid);
      }
      case T_LEAVE: return this.leave(r, conn, f.ref);
      case T_HIST: return this.hist(r, conn, f);
      case T_READ: return this.read(r, user, conn, f);
      case T_WHO: return this.who(r, conn, f.ref);
      default:
        return this.sendErr(conn, E_INTERNAL, 'unhandled frame type', f.ref);
    }
  }

  /**
   * A join that would create a room (or, `stored`, load one from the store into memory): -1 when
   * it may, else sendErr's result (0, or bytes needed) for `room_limit`. The creation token is
   * taken only once the answer fits, and not for a stored room.
   */
  private refuseCreate(conn: number, principal: string, ref: number, stored: boolean): number {
    const o = this.opts;
    if (this.rooms.rooms.size >= o.maxRoomsPerShard) {
      const retry = Math.min(o.roomTtlMs, 60_000) || 1000;
      return this.sendErr(conn, E_ROOM_LIMIT, `this shard holds its limit of ${o.maxRoomsPerShard} rooms`, ref, retry, true);
    }
    if (stored) return -1;
    const errMsg = 'creating rooms too fast';
    // Room for the refusal first (with the largest retryAfterMs encoding), so a retry takes no second token.
    writeErr(this.size(), E_ROOM_LIMIT, errMsg, ref, 0xffffffff);
    const need = this.plan().add(this.sz.pos, this.nbLen).need();
    if (!this.fits(need)) return need;
    const wait = this.creation.take(principal, performance.now());
    return wait === 0 ? -1 : this.sendErr(conn, E_ROOM_LIMIT, errMsg, ref, wait, true);
  }

  private join(conn: number, user: string, anon: boolean, name: string, f: ClientFrame | null, b: Uint8Array, replay: boolean, info: Uint8Array | null): number {
    const r = this.rooms.room(name, this.stored);
    this.useRoom(r.name);
    let missedFrom = NO_SINCE;
    if (f !== null && !isAbsent(f.since)) {
      const sameEpoch = f.epochStart < 0 || (f.epochEnd - f.epochStart === r.epoch.length &&
        asciiString(b, f.epochStart, f.epochEnd) === r.epoch);
      missedFrom = sameEpoch ? this.pageMissed(r, f.since) : TRUNCATED;
    }
    const ref = f === null ? -1 : f.ref;
    const already = r.members.has(conn);
    const firstOfUser = !already && !r.users.has(user);
    const members = r.users.size + (firstOfUser ? 1 : 0);
    // The cursor addMember keeps or makes, read before it runs: the one in memory, else the
    // store's (a named user's), else r.seq for a user without one (written to the store as such).
    let cursor = r.cursors.get(user);
    let newCursor = false;
    if (cursor === undefined && this.store !== null && !anon) {
      const c = this.store.cursor(r.name, user);
      if (c === null) newCursor = true; else cursor = Math.min(c, r.seq);
    }
    const unread = r.seq - (cursor ?? r.seq);
    this.plan();
    const presence = firstOfUser && !replay;
    if (presence) { this.putPresence(this.size(), r, user, 'join', info); this.add(this.sz.pos, this.nbLen); }
    this.putJoined(this.size(), r, ref, unread, members, missedFrom);
    const joinedLen = this.sz.pos;
    const need = this.add(joinedLen, this.nbLen).need();
    // A room made above stays when this waits for room: the retry finds it and takes no second creation token.
    if (!this.fits(need)) return need;
    if (!already) {
      this.rooms.addMember(r, conn, user, anon, cursor ?? r.seq);
      if (newCursor) this.store!.setCursor(r.name, user, r.seq);
    }
    // The latest join's info is the user's in this room (docs/PROTOCOL.md).
    this.rooms.setInfo(r, r.members.get(conn)!, info);
    // Presence goes out before `joined`: the joiner is subscribed only when `joined` reaches
    // the main thread, so it never sees its own presence; everyone else does.
    if (presence) this.presence(r, user, 'join', conn, info);
    this.putJoined(this.begin(OUT_JOINED, conn, this.nbLen, joinedLen), r, ref, unread, members, missedFrom);
    this.end();
    this.clearPage();
    // Events after the planned records, never between them (workers/events.ts).
    if (presence) this.events?.presence(r, user, 'join', conn, info);
    return 0;
  }

  /** Writes a presence record (its room was planned by the caller). */
  private presence(r: Room, user: string, state: 'join' | 'leave', conn: number, info: Uint8Array | null = null): void {
    this.putPresence(this.size(), r, user, state, info);
    this.putPresence(this.begin(OUT_PUBLISH, 0, this.nbLen, this.sz.pos), r, user, state, info);
    this.end();
  }

  /** Plans the records of a member leaving: `extra` (a `left`, or none) and maybe a presence leave. */
  private planLeave(r: Room, conn: number, leftLen: number): number {
    this.plan();
    if (leftLen >= 0) this.add(leftLen, this.nbLen);
    const user = r.members.get(conn);
    if (user !== undefined && r.users.get(user) === 1) { this.putPresence(this.size(), r, user, 'leave'); this.add(this.sz.pos, this.nbLen); }
    return this.need();
  }

  private leave(r: Room, conn: number, ref: number): number {
    this.useRoom(r.name);
    this.putLeft(this.size(), r, ref);
    const leftLen = this.sz.pos;
    const need = this.planLeave(r, conn, leftLen);
    if (!this.fits(need)) return need;
    const last = this.rooms.removeMember(r, conn);
    // `left` first: the main thread unsubscribes before sending it, so no `msg` follows it.
    this.putLeft(this.begin(OUT_LEFT, conn, this.nbLen, leftLen), r, ref);
    this.end();
    if (last !== null) { this.presence(r, last, 'leave', conn); this.events?.presence(r, last, 'leave', conn); }
    return 0;
  }

  /**
   * Assigns the next seq, keeps the encoded msg in history (and the store), fans it out, acks
   * the sender. A `cid` the sender used in this room within the window gets an ack with the
   * original seq and `dup: true` instead, and no message.
   */
  private pub(r: Room, from: string, b: Uint8Array, bs: number, be: number, conn: number, ref: number, req: number,
    stamp: number, cid: string | null): number {
    this.useRoom(r.name);
    const ts = Date.now();
    if (cid !== null) {
      const dup = this.store !== null ? this.store.findCid(r.name, from, cid, ts) : (r.cids?.find(from, cid, r.seq, ts) ?? 0);
      if (dup > 0) return this.ackDup(r, conn, ref, req, dup);
    }
    const seq = r.seq + 1;
    writeMsg(this.size(), this.nb, 0, this.nbLen, seq, from, b, bs, be, ts, cid);
    const msgLen = this.sz.pos;
    let bodyLen: number;
    let ackLen = 0;
    this.plan();
    if (req < 0) {
      // putPublishAck's body is its two u32, the msg just sized, then the ack: sized as such
      // (the msg is not sized twice); end() checks the writer stopped exactly there.
      const sz = this.size().u32le(stamp).u32le(msgLen);
      sz.pos += msgLen;
      this.putAck(sz, r, ref, seq);
      bodyLen = sz.pos;
      this.add(bodyLen, this.nbLen);
    } else {
      bodyLen = msgLen;
      this.putServerAck(this.size(), r, seq);
      ackLen = this.sz.pos;
      this.add(bodyLen, this.nbLen).add(ackLen, 0);
    }
    const need = this.need();
    if (!this.fits(need)) return need;
    r.seq = seq;
    let msgAt: number;
    if (req < 0) {
      // A client's pub: the msg and the sender's ack in one record (see OUT_PUBLISH_ACK).
      const w = this.begin(OUT_PUBLISH_ACK, conn, this.nbLen, bodyLen);
      msgAt = w.pos + 8;
      this.putPublishAck(w, r, seq, from, b, bs, be, ts, stamp, msgLen, ref, cid);
      this.end();
    } else {
      const w = this.begin(OUT_PUBLISH, stamp, this.nbLen, bodyLen);
      msgAt = w.pos;
      writeMsg(w, this.nb, 0, this.nbLen, seq, from, b, bs, be, ts, cid);
      this.end();
    }
    // History and the store copy the msg from the ring before the next reserve can move past it.
    this.keep(r, from, ts, cid, seq, msgAt, msgLen);
    if (req >= 0) {
      this.putServerAck(this.begin(OUT_SERVER_ACK, req, 0, ackLen), r, seq);
      this.end();
      // A server-side publish counts as activity: a room only published to is kept, not re-epoched.
      this.rooms.touch(r, ts);
    }
    if (r.cursors.has(from)) {
      r.setCursor(from, seq);
      if (this.store !== null && !(this.rooms.conns.get(conn)?.anon ?? false)) this.store.setCursor(r.name, from, seq);
    }
    this.published++;
    this.delivered += r.members.size;
    this.events?.message(r, seq, from, ts, b, bs, be);
    return 0;
  }

  /** Keeps message `seq` (its frame at out.bytes[at, at+len)) in the history cache, the store or the cid window. */
  private keep(r: Room, from: string, ts: number, cid: string | null, seq: number, at: number, len: number): void {
    const frame = this.out.bytes;
    this.rooms.pushHistory(r, frame, at, len);
    if (this.store !== null) this.store.append(r.name, { seq, from, ts, cid, frame: frame.subarray(at, at + len) });
    else if (cid !== null) (r.cids ??= new CidWindow(this.opts.cidWindowMessages, this.opts.cidWindowMs)).add(from, cid, seq, ts);
  }

  /** A repeated cid: the ack of the original message (`dup: true`), to the client or to engine.publish. */
  private ackDup(r: Room, conn: number, ref: number, req: number, seq: number): number {
    let bodyLen: number;
    if (req < 0) { this.putAck(this.size(), r, ref, seq, true); bodyLen = this.sz.pos; this.plan().add(bodyLen, 0); }
    else { this.putServerAck(this.size(), r, seq, true); bodyLen = this.sz.pos; this.plan().add(bodyLen, 0); }
    const need = this.need();
    if (!this.fits(need)) return need;
    if (req < 0) this.putAck(this.begin(OUT_SEND, conn, 0, bodyLen), r, ref, seq, true);
    else this.putServerAck(this.begin(OUT_SERVER_ACK, req, 0, bodyLen), r, seq, true);
    this.end();
    return 0;
  }

  private hist(r: Room, conn: number, f: ClientFrame): number {
    this.useRoom(r.name);
    const limit = f.histLimit();
    const first = this.firstKept(r);
    let lo: number; let hi: number; // the range asked for, inclusive
    if (!isAbsent(f.before)) { hi = Math.min(f.before - 1, r.seq); lo = hi - limit + 1; }
    else if (!isAbsent(f.after)) { lo = f.after + 1; hi = Math.min(lo + limit - 1, r.seq); }
    else { hi = r.seq; lo = hi - limit + 1; }
    if (lo < 1) lo = 1;
    // Truncated: some of the range asked for existed once but history no longer keeps it.
    const truncated = lo < first && lo <= hi;
    if (lo < first) lo = first;
    this.clearPage();
    if (lo <= hi) this.pageHist(r, lo, hi, isAbsent(f.after));
    this.putHist(this.size(), r, f.ref, truncated);
    const bodyLen = this.sz.pos;
    const need = this.plan().add(bodyLen, 0).need();
    if (!this.fits(need)) { this.clearPage(); return need; }
    this.putHist(this.begin(OUT_SEND, conn, 0, bodyLen), r, f.ref, truncated);
    this.end();
    this.clearPage();
    return 0;
  }

  /**
   * Fills the page with kept messages of lo..hi within maxHistBytes: the newest end for
   * "latest"/"before" pages (`newest`), the oldest for "after"; a page always holds at least one
   * message, however large, so paging never stalls. From the cache when it holds lo, else from the store.
   */
  private pageHist(r: Room, lo: number, hi: number, newest: boolean): void {
    const max = this.opts.maxHistBytes;
    let bytes = 0;
    if (lo >= this.rooms.firstKept(r)) {
      let a = lo; let z = hi;
      if (newest) {
        for (let s = hi; s >= lo; s--) {
          const l = this.rooms.entryLen(r, s);
          if (bytes + l > max && s !== hi) { a = s + 1; break; }
          bytes += l;
        }
      } else {
        for (let s = lo; s <= hi; s++) {
          const l = this.rooms.entryLen(r, s);
          if (bytes + l > max && s !== lo) { z = s - 1; break; }
          bytes += l;
        }
      }
      this.pageFromCache(r, a, z);
      return;
    }
    // Older than the cache (only with a store): at most MAX_HIST_LIMIT messages are read for a
    // newest-end page, then cut to maxHistBytes from that end.
    const msgs = this.store!.range(r.name, lo, hi, newest ? Number.MAX_SAFE_INTEGER : max);
    if (msgs.length === 0) return;
    if (!newest) { this.pageFromStore(msgs, 0, msgs.length - 1); return; }
    let a = msgs.length - 1;
    bytes = msgs[a]!.frame.byteLength;
    while (a > 0 && bytes + msgs[a - 1]!.frame.byteLength <= max) { a--; bytes += msgs[a]!.frame.byteLength; }
    this.pageFromStore(msgs, a, msgs.length - 1);
  }

  private read(r: Room, user: string, conn: number, f: ClientFrame): number {
    this.useRoom(r.name);
    const target = Math.min(f.seq, r.seq);
    const cur = r.cursors.get(user) ?? 0;
    const next = target > cur ? target : cur;
    this.putAck(this.size(), r, f.ref, next);
    const bodyLen = this.sz.pos;
    const need = this.plan().add(bodyLen, 0).need();
    if (!this.fits(need)) return need;
    if (!r.cursors.has(user)) this.rooms.cursorCount++;
    r.setCursor(user, next);
    // The ack goes out only after the store's commit: a read acked is a cursor kept.
    if (this.store !== null && next !== cur && !(this.rooms.conns.get(conn)?.anon ?? false)) this.store.setCursor(r.name, user, next);
    this.putAck(this.begin(OUT_SEND, conn, 0, bodyLen), r, f.ref, next);
    this.end();
    return 0;
  }

  private who(r: Room, conn: number, ref: number): number {
    this.useRoom(r.name);
    const users = this.usersScratch;
    users.length = 0;
    let bytes = 0;
    let truncated = false;
    let infos = 0;
    for (const u of r.users.keys()) {
      // A user with info costs its name twice (list and map) and the info: all within maxHistBytes.
      const info = r.infos.get(u);
      const cost = u.length + 2 + (info === undefined ? 0 : u.length + 2 + info.byteLength);
      if (bytes + cost > this.opts.maxHistBytes) { truncated = true; break; }
      users.push(u);
      bytes += cost;
      if (info !== undefined) infos++;
    }
    this.putWho(this.size(), r, ref, users, truncated, infos);
    const bodyLen = this.sz.pos;
    const need = this.plan().add(bodyLen, 0).need();
    const fits = this.fits(need);
    if (fits) {
      this.putWho(this.begin(OUT_SEND, conn, 0, bodyLen), r, ref, users, truncated, infos);
      this.end();
    }
    users.length = 0;
    return fits ? 0 : need;
  }

  // ---- other records ------------------------------------------------------------------------

  /** A connection closed: leave each of its rooms here, room by room (resumable). */
  private onClose(conn: number): number {
    const c = this.rooms.conns.get(conn);
    if (c === undefined) return 0;
    for (const r of connRooms(c)) {
      // The events of the room before go out first (a connection may be in many rooms).
      const waiting = this.flushEvents();
      if (waiting > 0) return waiting;
      this.useRoom(r.name);
      const need = this.planLeave(r, conn, -1);
      if (!this.fits(need)) return need;
      const last = this.rooms.removeMember(r, conn);
      if (last !== null) { this.presence(r, last, 'leave', conn); this.events?.presence(r, last, 'leave', conn); }
    }
    return 0;
  }

  private onServerPub(b: Uint8Array, off: number, end: number): number {
    const { req, room, from, cid, bodyStart } = readServerPub(b, off);
    return this.pub(this.rooms.room(room, this.stored), from, b, bodyStart, end, -1, -1, req, 0, cid);
  }

  private onReplay(b: Uint8Array, off: number, end: number): number {
    const { conn, user, room, anon, info } = readReplay(b, off, end);
    return this.join(conn, user, anon, room, null, b, true, info);
  }

}
