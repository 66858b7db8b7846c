/**
 * Cluster mode's handler (docs/CLUSTER.md §9): the same inbound records as handler.ts, served
 * from Redis through one ClusterStore per shard worker. The single-node Handler stays as it is
 * (synchronous, its hot path measured); this one is asynchronous:
 *
 * - `pub`s are collected per room in ring order and sequenced by one `publishBatch()` per loop
 *   turn (one script per room, one pipeline per instance), at most MAX_BATCHES_IN_FLIGHT at once;
 *   a room whose script failed answers each of its pubs `unavailable` + retryAfterMs at once.
 * - **Delivery comes only from the subscriber**, on this node as on every other, so a room has
 *   one order across nodes. A pub's `ack` (seq s) is released once the subscriber delivered s
 *   here (the `msg` goes out before its ack, as docs/PROTOCOL.md requires); a duplicate cid is
 *   acked at once with `dup: true` and the original seq.
 * - Per connection, replies keep request order: a connection's pubs may be in flight together
 *   (their acks leave in request order), every other request (join, leave, read, hist, who)
 *   starts only once the connection's earlier replies are out and runs alone; its reply is
 *   written in the turn its Redis call resolves (`joined` must be: CLUSTER.md §4).
 * - Presence events come only from the subscriber (one per user over all tabs and nodes); a
 *   connection's close leaves its rooms in Redis; `who`, `unread`, history come from Redis.
 * - The subscriber's `epoch` (Redis lost the room) and `lost` (a hole the stream no longer
 *   holds) become an unsolicited `joined` to the room's local connections, as after a shard
 *   restart.
 *
 * Validation, reply charging and rate limits are the main thread's as in single-node mode; the
 * room limit and the room-creation rate are the shard's, checked here for rooms this shard does
 * not follow yet. Reply frames are the handler's (replies.ts).
 */
import { MsgSizer, MsgWriter, asciiString } from '../engine/protocol/msgpack.js';
import {
  ClientFrame, E_INTERNAL, E_NOT_JOINED, E_OVERLOADED, E_ROOM_LIMIT, E_UNAVAILABLE, T_HIST, T_JOIN, T_LEAVE, T_PUB, T_READ, T_WHO,
  isAbsent, writeErr, writeHead, writeMsg,
} from '../engine/protocol/frames.js';
import {
  ADMIN_OPS, CRASH_EXIT, CRASH_HANG, CRASH_THROW, IN_ADMIN, IN_CLOSE, IN_CRASH, IN_DRAIN, IN_FRAME, IN_FRAME_ANON, IN_FRAME_BODY, IN_REPLAY,
  IN_SERVER_PUB, OUT_ADMIN_REPLY, OUT_CONTROL, OUT_DRAINED, OUT_EVENT, OUT_JOINED, OUT_LEFT, OUT_PUBLISH, OUT_REFUSED, OUT_SEND, OUT_SERVER_ACK, OUT_SERVER_ERR, getU32, inFrameBounds, readReplay, readServerPub, type InFrameBounds,
} from '../engine/protocol/records.js';
import type { RingWriter } from '../engine/ring/index.js';
import { adminError, parseAdminArgs } from './admin.js';
import { clusterAdmin, cutByBytes } from './cluster-admin.js';
import { CreationLimiter } from './creation.js';
import { ShardEvents } from './events.js';
import { CREATION_TABLE_ENTRIES, type HandlerOptions } from './handler.js';
import { OutQueue } from './out-queue.js';
import { whoPage, writeAck, writeHist, writeJoined, writeLeft, writePresence, writeServerAck, writeWho, type PageWriter } from './replies.js';
import {
  ClusterStore, type ClusterStoreOptions, type JoinResult, type PublishInput, type RedisMessage, RedisUnavailableError, type RoomOutcome, findSeqSlot,
} from './store/redis/index.js';

/** Publish batches (one publishBatch each) in flight at once; past it the shard stops reading its ring (back-pressure: `overloaded`). */
export const MAX_BATCHES_IN_FLIGHT = 4;
/**
 * Pubs the batch being collected takes at most while MAX_BATCHES_IN_FLIGHT are out (one ring
 * turn's worth). Taking only one there drained a ring behind a hung Redis at 4 pubs per command
 * timeout, so queued pubs waited far past redisCommandTimeoutMs for their `unavailable`.
 */
export const MAX_BATCH_RECORDS = 1024;
/** Requests other than pubs (join, leave, read, hist, who, close, API calls) in flight at once; past it the same. */
export const MAX_OPS_IN_FLIGHT = 4096;
/** Acks a room keeps waiting for their message's local delivery; a pub past it is answered `overloaded`. */
export const MAX_PENDING_ACKS_PER_ROOM = 4096;
/** Requests one connection has queued behind its earlier ones; past it they are answered `overloaded`. */
export const MAX_QUEUED_PER_CONN = 256;
/** The seq a msg frame is encoded with before Redis assigns one: the smallest uint64-encoded (CLUSTER.md §3). */
const SEQ_PLACEHOLDER = 2 ** 32;

export interface ClusterHandlerOptions extends HandlerOptions {
  index: number;
  cluster: Omit<ClusterStoreOptions, 'node'> & { node: string };
}

/** A reply of one connection, in request order; `write` is null until it is ready. */
interface Slot { write: (() => void) | null }

interface CConn {
  readonly id: number;
  /** Rooms this connection is a member of here. */
  readonly rooms: Set<string>;
  readonly slots: Slot[];
  readonly waiting: Op[];
  busy: boolean;
  /** An anonymous connection (IN_FRAME_ANON): no cursor of its own is kept. */
  anon: boolean;
  /** The connection's user, from its joins: the main thread sends it with joins only, not with pubs. */
  user: string;
}

interface AckWait { readonly epoch: string; readonly seq: number; readonly release: () => void }

interface CRoom {
  readonly name: string;
  epoch: string;
  /** The seq delivered here (the subscriber's position). */
  seq: number;
  readonly members: Map<number, string>;
  readonly users: Map<string, number>;
  /** Acks waiting for local delivery, ascending seq. */
  readonly acks: AckWait[];
}

interface PubWait {
  readonly conn: CConn | null;
  readonly ref: number;
  /** engine.publish's request id, or -1 for a client's pub. */
  readonly req: number;
  readonly from: string;
  readonly ts: number;
  readonly slot: Slot | null;
  /** The body as the client encoded it (only with webhooks on). */
  readonly body: Uint8Array | null;
}

interface Batch { inputs: Map<string, PublishInput[]>; waits: Map<string, PubWait[]> }

type Op =
  | { k: 'pub'; room: string; user: string; ref: number; frame: Uint8Array; seqOffset: number; cid: string | null; ts: number; body: Uint8Array | null }
  | { k: 'err'; code: number; msg: string; ref: number }
  | { k: 'join'; room: string; user: string; anon: boolean; ref: number; since: number | null; sinceEpoch: string | null; principal: string; replay: boolean }
  | { k: 'leave'; room: string; ref: number }
  | { k: 'read'; room: string; ref: number; seq: number }
  | { k: 'hist'; room: string; ref: number; before: number; after: number; limit: number }
  | { k: 'who'; room: string; ref: number }
  | { k: 'close' };

export class ClusterHandler {
  readonly store: ClusterStore;
  readonly out: OutQueue;
  readonly rooms = new Map<string, CRoom>();
  readonly conns = new Map<number, CConn>();
  readonly creation: CreationLimiter;
  readonly errors = new Float64Array(16);
  published = 0;
  delivered = 0;
  memberships = 0;
  /** Set once IN_DRAIN was read: the loop reads no more and waits for what is in flight. */
  draining = false;
  /** A failure that must end the shard task (the output queue's bound). */
  get failure(): Error | null { return this.out.overflow; }
  private readonly frame = new ClientFrame();
  private readonly sz = new MsgSizer();
  private readonly nb = new Uint8Array(256);
  private nbLen = 0;
  private batch: Batch = { inputs: new Map(), waits: new Map() };
  private batchSize = 0;
  private batchesInFlight = 0;
  private opsInFlight = 0;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly scratchUsers: string[] = [];
  private readonly bounds: InFrameBounds = { userStart: 0, infoLen: -1, frameEnd: 0 };
  /** Webhook events (HandlerOptions.events), written through the OutQueue like all output (workers/events.ts). */
  private readonly events: ShardEvents | null;

  constructor(private readonly ring: RingWriter, private readonly opts: ClusterHandlerOptions) {
    this.out = new OutQueue(ring);
    // Events go through the OutQueue: one FIFO with the shard's other output (workers/events.ts).
    this.events = opts.events === true ? new ShardEvents((room, put) => { this.out.emit(OUT_EVENT, 0, room, put); }) : null;
    this.creation = new CreationLimiter(opts.roomCreateRate, opts.roomCreateBurst, CREATION_TABLE_ENTRIES);
    // Shard 0's store hears the control channel for the node (kick, disconnect from any node's API).
    this.store = new ClusterStore({ ...opts.cluster, node: `${opts.cluster.node}.s${opts.index}`, control: opts.index === 0 }, {
      message: (room, seq, frame) => this.onMessage(room, seq, frame),
      epoch: (room, epoch) => this.onEpoch(room, epoch),
      lost: (room, _from, to) => this.onLost(room, to),
      presence: (room, user, state) => this.onPresence(room, user, state),
      redacted: (room, seq, epoch) => this.onRedacted(room, seq, epoch),
      health: () => { this.notifyIdle(); },
      control: (payload) => { this.out.emit(OUT_CONTROL, 0, '', (m) => { m.raw(payload, 0, payload.byteLength); }); },
    });
  }

  /**
   * Connects to Redis; resolves (never rejects) once the first attempt settled. A Redis that is
   * down now is retried in the background: the store turns healthy by itself.
   */
  start(): Promise<void> {
    return this.store.start().catch(() => { /* unavailable now: `healthy` stays false until it connects */ });
  }

  /** True when the loop must stop reading its ring for now (back-pressure). */
  get saturated(): boolean {
    return (this.batchesInFlight >= MAX_BATCHES_IN_FLIGHT && this.batchSize >= MAX_BATCH_RECORDS) || this.opsInFlight >= MAX_OPS_IN_FLIGHT;
  }

  /** Nothing in flight: no batch, no request, no ack waiting for delivery. */
  get idle(): boolean {
    if (this.batchesInFlight > 0 || this.batchSize > 0 || this.opsInFlight > 0) return false;
    for (const c of this.conns.values()) if (c.slots.length > 0 || c.waiting.length > 0) return false;
    return true;
  }

  /** Resolves when something in flight completed (or `ms` passed). */
  settled(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void { clearTimeout(t); resolve(); }
      this.idleWaiters.push(done);
    });
  }

  private notifyIdle(): void {
    const w = this.idleWaiters.splice(0);
    for (const f of w) f();
  }

  // ---- inbound records ----------------------------------------------------------------------

  /** Handles one inbound record at b[off, off+len): everything it needs is copied out before it returns. */
  handle(b: Uint8Array, off: number, len: number): void {
    const end = off + len;
    switch (b[off]) {
      case IN_FRAME: this.onFrame(b, off, end); return;
      case IN_CLOSE: {
        const c = this.conns.get(getU32(b, off + 1));
        if (c !== undefined) this.enqueue(c, { k: 'close' });
        return;
      }
      case IN_SERVER_PUB: this.onServerPub(b, off, end); return;
      case IN_REPLAY: this.onReplay(b, off, end); return;
      case IN_ADMIN: this.onAdmin(b, off, end); return;
      case IN_DRAIN: this.draining = true; return;
      case IN_CRASH:
        if (b[off + 1] === CRASH_EXIT) process.exit(70);
        if (b[off + 1] === CRASH_THROW) throw new Error('shard crash requested (test hook)');
        if (b[off + 1] === CRASH_HANG) for (;;) { /* test hook: a stuck shard */ }
        return;
      default:
        throw new Error(`unknown inbound record kind ${b[off]}`);
    }
  }

  private conn(id: number): CConn {
    let c = this.conns.get(id);
    if (c === undefined) {
      c = { id, rooms: new Set(), slots: [], waiting: [], busy: false, anon: false, user: '' };
      this.conns.set(id, c);
    }
    return c;
  }

  private onFrame(b: Uint8Array, off: number, end: number): void {
    const id = getU32(b, off + 4);
    const fs = off + IN_FRAME_BODY;
    // A join's identity info (records.ts) ends the frame early; cluster mode does not show info
    // yet (docs/CLUSTER.md §13): it is skipped, not parsed as part of the frame.
    const { userStart: ue, frameEnd: fe } = inFrameBounds(b, off, end, this.bounds);
    const f = this.frame;
    const c = this.conn(id);
    if (f.scan(b, fs, fe, this.opts.maxBodyDepth) !== 0) { this.enqueue(c, { k: 'err', code: f.error, msg: f.message, ref: f.ref }); return; }
    const room = asciiString(b, f.roomStart, f.roomEnd);
    const user = asciiString(b, ue, end);
    switch (f.type) {
      case T_JOIN: {
        const anon = (b[off + 2]! & IN_FRAME_ANON) !== 0;
        const since = isAbsent(f.since) ? null : f.since;
        const sinceEpoch = since === null || f.epochStart < 0 ? null : asciiString(b, f.epochStart, f.epochEnd);
        if (user !== '') c.user = user;
        this.enqueue(c, { k: 'join', room, user, anon, ref: f.ref, since, sinceEpoch, principal: anon ? `a${getU32(b, off + 12)}` : `u${user}`, replay: false });
        return;
      }
      case T_PUB: {
        const cid = f.cidStart < 0 ? null : asciiString(b, f.cidStart, f.cidEnd);
        this.enqueue(c, this.pubOp(room, user === '' ? c.user : user, f.ref, b, f.bodyStart, f.bodyEnd, cid));
        return;
      }
      case T_LEAVE: this.enqueue(c, { k: 'leave', room, ref: f.ref }); return;
      case T_READ: this.enqueue(c, { k: 'read', room, ref: f.ref, seq: f.seq }); return;
      case T_WHO: this.enqueue(c, { k: 'who', room, ref: f.ref }); return;
      case T_HIST: this.enqueue(c, { k: 'hist', room, ref: f.ref, before: f.before, after: f.after, limit: f.histLimit() }); return;
      default: this.enqueue(c, { k: 'err', code: E_INTERNAL, msg: 'unhandled frame type', ref: f.ref });
    }
  }

  /** A pub's msg frame, encoded once with the seq placeholder Redis fills in (CLUSTER.md §3). */
  private pubOp(room: string, user: string, ref: number, b: Uint8Array, bs: number, be: number, cid: string | null): Op & { k: 'pub' } {
    const ts = Date.now();
    this.aim(room);
    writeMsg(this.sz.start(), this.nb, 0, this.nbLen, SEQ_PLACEHOLDER, user, b, bs, be, ts, cid);
    const frame = new Uint8Array(this.sz.pos);
    writeMsg(new MsgWriter().reset(frame), this.nb, 0, this.nbLen, SEQ_PLACEHOLDER, user, b, bs, be, ts, cid);
    return { k: 'pub', room, user, ref, frame, seqOffset: findSeqSlot(frame), cid, ts, body: this.opts.events === true ? b.slice(bs, be) : null };
  }

  private onServerPub(b: Uint8Array, off: number, end: number): void {
    const { req, room, from, cid, bodyStart } = readServerPub(b, off);
    const op = this.pubOp(room, from, -1, b, bodyStart, end, cid);
    this.collect(op, { conn: null, ref: -1, req, from, ts: op.ts, slot: null, body: op.body });
  }

  private onReplay(b: Uint8Array, off: number, end: number): void {
    const { conn, user, room, anon } = readReplay(b, off, end);
    const c = this.conn(conn);
    if (user !== '') c.user = user;
    this.enqueue(c, { k: 'join', room, user, anon, ref: -1, since: null, sinceEpoch: null, principal: '', replay: true });
  }

  // ---- per-connection order -------------------------------------------------------------------

  private enqueue(c: CConn, op: Op): void {
    const free = op.k === 'pub' || op.k === 'err';
    if (c.busy || c.waiting.length > 0 || (!free && op.k !== 'close' && c.slots.length > 0)) {
      if (c.waiting.length >= MAX_QUEUED_PER_CONN && op.k !== 'close') {
        // The refusal waits its turn like any reply (per-connection order), as a small err op; only
        // past twice the bound (the client keeps sending into a full queue) it goes out at once.
        const refusal: Op = { k: 'err', code: E_OVERLOADED, msg: 'too many requests queued on this connection', ref: refOf(op) };
        if (c.waiting.length < 2 * MAX_QUEUED_PER_CONN) c.waiting.push(refusal);
        else this.slotNow(c, () => this.sendErr(c.id, refusal.code, refusal.msg, refusal.ref));
        return;
      }
      c.waiting.push(op);
      return;
    }
    this.admit(c, op);
    this.forgetIfIdle(c);
  }

  /** Runs the queued requests of `c` that may run now. */
  private pump(c: CConn): void {
    while (!c.busy && c.waiting.length > 0) {
      const op = c.waiting[0]!;
      if (op.k !== 'pub' && op.k !== 'err' && op.k !== 'close' && c.slots.length > 0) return;
      c.waiting.shift();
      this.admit(c, op);
    }
    this.forgetIfIdle(c);
  }

  /**
   * Drops the state of a connection with no rooms here and nothing in flight: the main thread
   * sends IN_CLOSE only to shards it has rooms on, so a connection that only ever got an error
   * from this shard would otherwise stay forever. It is made again by its next request.
   */
  private forgetIfIdle(c: CConn): void {
    if (!c.busy && c.waiting.length === 0 && c.slots.length === 0 && c.rooms.size === 0) this.conns.delete(c.id);
  }

  private admit(c: CConn, op: Op): void {
    switch (op.k) {
      case 'err': this.slotNow(c, () => this.sendErr(c.id, op.code, op.msg, op.ref)); return;
      case 'pub': {
        const r = this.rooms.get(op.room);
        const user = r?.members.get(c.id);
        if (r === undefined || user === undefined) { this.slotNow(c, () => this.sendErr(c.id, E_NOT_JOINED, `not joined to room ${op.room}`, op.ref)); return; }
        if (r.acks.length >= MAX_PENDING_ACKS_PER_ROOM) { this.slotNow(c, () => this.sendErr(c.id, E_OVERLOADED, `room ${op.room} has ${MAX_PENDING_ACKS_PER_ROOM} messages in flight; retry`, op.ref, 100)); return; }
        const slot: Slot = { write: null };
        c.slots.push(slot);
        this.collect(op, { conn: c, ref: op.ref, req: -1, from: op.user, ts: op.ts, slot, body: op.body });
        return;
      }
      default: {
        c.busy = true;
        this.opsInFlight++;
        this.run(c, op).catch((err: unknown) => {
          // A bug, not an outage (those are answered inside run): the request still gets its answer.
          if (op.k !== 'close') this.sendErr(c.id, E_INTERNAL, (err as Error).message, refOf(op));
        }).finally(() => {
          c.busy = false;
          this.opsInFlight--;
          this.notifyIdle();
          this.pump(c);
          this.launch();
        });
      }
    }
  }

  /** A reply that is ready now, in its connection's order. */
  private slotNow(c: CConn, write: () => void): void {
    if (c.slots.length === 0) { write(); return; }
    c.slots.push({ write });
  }

  private fillSlot(c: CConn, slot: Slot, write: () => void): void {
    slot.write = write;
    while (c.slots.length > 0 && c.slots[0]!.write !== null) c.slots.shift()!.write!();
    if (c.slots.length === 0) { this.pump(c); this.notifyIdle(); this.launch(); }
  }

  // ---- pub: collect, sequence, ack after local delivery ---------------------------------------

  private collect(op: Op & { k: 'pub' }, wait: PubWait): void {
    const b = this.batch;
    let inputs = b.inputs.get(op.room);
    if (inputs === undefined) { inputs = []; b.inputs.set(op.room, inputs); b.waits.set(op.room, []); }
    inputs.push({ user: op.user, cid: op.cid, ts: op.ts, frame: op.frame, seqOffset: op.seqOffset });
    b.waits.get(op.room)!.push(wait);
    this.batchSize++;
  }

  /** Sends the collected pubs to Redis (one batch) when fewer than MAX_BATCHES_IN_FLIGHT are out. */
  launch(): void {
    if (this.batchSize === 0 || this.batchesInFlight >= MAX_BATCHES_IN_FLIGHT) return;
    const b = this.batch;
    this.batch = { inputs: new Map(), waits: new Map() };
    this.batchSize = 0;
    this.batchesInFlight++;
    this.store.publishBatch(b.inputs).then(
      (out) => this.settle(b, out),
      (err: unknown) => {
        // Not an outage (publishBatch returns those per room): a reply that broke the script's contract.
        const e = err as Error;
        for (const ws of b.waits.values()) for (const w of ws) this.failPub(w, E_INTERNAL, `publish failed: ${e.message}`, -1);
      },
    ).finally(() => {
      this.batchesInFlight--;
      this.notifyIdle();
      this.launch();
    });
  }

  private settle(b: Batch, out: Map<string, RoomOutcome>): void {
    for (const [room, waits] of b.waits) {
      const o = out.get(room);
      if (o === undefined || o instanceof RedisUnavailableError) {
        const retry = o?.retryAfterMs ?? 1000;
        const why = o?.maybeApplied === true ? 'the cluster store did not answer in time; the message may have been stored: retry with the same cid' : 'the cluster store is unreachable; nothing was stored';
        for (const w of waits) this.failPub(w, E_UNAVAILABLE, why, retry);
        continue;
      }
      for (let i = 0; i < waits.length; i++) {
        const w = waits[i]!;
        const { seq, duplicate } = o.outcomes[i]!;
        if (!duplicate) {
          this.published++;
          // message.published once per message cluster-wide: from the node whose shard published it.
          if (w.body !== null) {
            this.events?.message({ name: room, epoch: o.epoch, users: { size: 0 } }, seq, w.from, w.ts, w.body, 0, w.body.byteLength);
            this.out.written();
          }
        }
        this.ackAfterDelivery(room, w, o.epoch, seq, duplicate);
      }
    }
  }

  private failPub(w: PubWait, code: number, msg: string, retryAfterMs: number): void {
    this.errors[code]!++;
    if (w.conn === null) {
      this.out.emit(OUT_SERVER_ERR, w.req, '', (m) => {
        m.mapHeader(retryAfterMs >= 0 ? 3 : 2).str('error').str(code === E_UNAVAILABLE ? 'unavailable' : 'internal').str('msg').str(msg);
        if (retryAfterMs >= 0) m.str('retryAfterMs').uint(retryAfterMs);
      });
      return;
    }
    const c = w.conn;
    this.fillSlot(c, w.slot!, () => { this.out.emit(OUT_SEND, c.id, '', (m) => writeErr(m, code, msg, w.ref, retryAfterMs)); });
  }

  /** The ack of seq `seq`: now for a duplicate (its msg went out before), else once this node delivered it. */
  private ackAfterDelivery(room: string, w: PubWait, epoch: string, seq: number, dup: boolean): void {
    if (w.conn === null) {
      this.out.emit(OUT_SERVER_ACK, w.req, '', (m) => writeServerAck(m, epoch, seq, dup));
      return;
    }
    const c = w.conn;
    const release = (): void => this.fillSlot(c, w.slot!, () => {
      this.aim(room);
      this.out.emit(OUT_SEND, c.id, '', (m) => writeAck(m, this.nb, this.nbLen, w.ref, seq, dup));
    });
    const r = this.rooms.get(room);
    if (dup || r === undefined || !r.members.has(c.id) || (r.epoch === epoch && r.seq >= seq)) { release(); return; }
    r.acks.push({ epoch, seq, release });
  }

  private releaseAcks(r: CRoom, all: boolean): void {
    const acks = r.acks;
    let n = 0;
    while (n < acks.length && (all || acks[n]!.epoch !== r.epoch || acks[n]!.seq <= r.seq)) n++;
    if (n === 0) return;
    for (const a of acks.splice(0, n)) a.release();
  }

  // ---- subscriber events ----------------------------------------------------------------------

  private onMessage(room: string, seq: number, frame: Buffer): void {
    const r = this.rooms.get(room);
    this.out.emit(OUT_PUBLISH, 0, room, (m) => { m.raw(frame, 0, frame.byteLength); });
    if (r === undefined) return;
    r.seq = seq;
    this.delivered += r.members.size;
    this.releaseAcks(r, false);
  }

  /** A new epoch (Redis lost the room): the members reload, as after a shard restart. */
  private onEpoch(room: string, epoch: string): void {
    const r = this.rooms.get(room);
    if (r === undefined) return;
    r.epoch = epoch;
    r.seq = 0;
    // Acks of the old epoch: their messages went with it (Redis's persistence decides; README).
    let n = 0;
    while (n < r.acks.length && r.acks[n]!.epoch !== epoch) n++;
    for (const a of r.acks.splice(0, n)) a.release();
    this.rejoinAll(r);
  }

  /** Messages up to `to` can no longer be delivered here (trimmed before this node read them): the members reload. */
  private onLost(room: string, to: number): void {
    const r = this.rooms.get(room);
    if (r === undefined) return;
    if (to > r.seq) r.seq = to;
    this.releaseAcks(r, false);
    this.rejoinAll(r);
  }

  /** An unsolicited `joined` (no ref) to every local member: the room's position moved without its messages. */
  private rejoinAll(r: CRoom): void {
    for (const conn of r.members.keys()) {
      this.aim(r.name);
      this.out.emit(OUT_JOINED, conn, r.name, (m) => writeJoined(m, this.nb, this.nbLen, -1, r.epoch, r.seq, 0, r.users.size, false, null));
    }
  }

  private onPresence(room: string, user: string, state: 'join' | 'leave'): void {
    if (!this.rooms.has(room)) return;
    this.aim(room);
    this.out.emit(OUT_PUBLISH, 0, room, (m) => writePresence(m, this.nb, this.nbLen, user, state));
  }

  /** A redaction from any node's API: the local members get the server frame single-node mode sends (workers/admin.ts). */
  private onRedacted(room: string, seq: number, epoch: string): void {
    const r = this.rooms.get(room);
    if (r === undefined || r.epoch !== epoch) return;
    this.aim(room);
    this.out.emit(OUT_PUBLISH, 0, room, (m) => { writeHead(m, 'redacted', this.nb, 0, this.nbLen, -1, 1); m.str('seq').uint(seq); });
  }

  // ---- requests that wait for Redis -----------------------------------------------------------

  private async run(c: CConn, op: Op): Promise<void> {
    switch (op.k) {
      case 'join': return this.join(c, op);
      case 'close': return this.close(c);
      case 'leave': return this.leave(c, op.room, op.ref);
      default: break;
    }
    if (op.k === 'pub' || op.k === 'err') return;
    const r = this.rooms.get(op.room);
    const user = r?.members.get(c.id);
    if (r === undefined || user === undefined) { this.sendErr(c.id, E_NOT_JOINED, `not joined to room ${op.room}`, op.ref); return; }
    try {
      switch (op.k) {
        case 'read': return await this.read(c, r, user, op.ref, op.seq);
        case 'hist': return await this.hist(c, r, op);
        case 'who': return await this.who(c, r, op.ref);
      }
    } catch (err) {
      if (!(err instanceof RedisUnavailableError)) throw err;
      this.sendErr(c.id, E_UNAVAILABLE, err.message, op.ref, err.retryAfterMs);
    }
  }

  private async join(c: CConn, op: Op & { k: 'join' }): Promise<void> {
    const o = this.opts;
    const known = this.rooms.has(op.room);
    if (!known && !op.replay) {
      if (this.rooms.size >= o.maxRoomsPerShard) {
        this.refuse(c, op.room, E_ROOM_LIMIT, `this shard holds its limit of ${o.maxRoomsPerShard} rooms`, op.ref, Math.min(o.roomTtlMs, 60_000) || 1000);
        return;
      }
      const wait = this.creation.take(op.principal, performance.now());
      if (wait > 0) { this.refuse(c, op.room, E_ROOM_LIMIT, 'creating rooms too fast', op.ref, wait); return; }
    }
    let res: JoinResult;
    try {
      res = await this.store.join(op.room, String(c.id), op.user, op.since, op.sinceEpoch);
    } catch (err) {
      if (err instanceof RedisUnavailableError) { this.refuse(c, op.room, E_UNAVAILABLE, err.message, op.ref, err.retryAfterMs); return; }
      throw err;
    }
    // No await from here on: `joined` leaves in the turn the join resolved (CLUSTER.md §4).
    let r = this.rooms.get(op.room);
    if (r === undefined) {
      r = { name: op.room, epoch: res.epoch, seq: res.seq, members: new Map(), users: new Map(), acks: [] };
      this.rooms.set(op.room, r);
    }
    c.anon = op.anon;
    if (!r.members.has(c.id)) {
      r.members.set(c.id, op.user);
      r.users.set(op.user, (r.users.get(op.user) ?? 0) + 1);
      c.rooms.add(op.room);
      this.memberships++;
    }
    const missed = res.missed;
    const page: PageWriter | null = missed === null ? null : (m) => {
      m.arrayHeader(missed.length);
      for (const x of missed) m.raw(x.frame, 0, x.frame.byteLength);
    };
    this.aim(op.room);
    this.out.emit(OUT_JOINED, c.id, op.room, (m) => writeJoined(m, this.nb, this.nbLen, op.ref, res.epoch, res.seq, res.unread, res.members.length, res.truncated, page));
    if (o.events === true && res.first && !op.replay) {
      this.events?.presence({ name: op.room, epoch: res.epoch, users: { size: res.members.length } }, op.user, 'join', c.id);
      this.out.written();
    }
  }

  /** Takes `conn` out of room `r` here (no Redis call); drops the room when it was the last local member. */
  private removeLocal(c: CConn, r: CRoom): string | null {
    const user = r.members.get(c.id);
    if (user === undefined) return null;
    r.members.delete(c.id);
    const n = (r.users.get(user) ?? 1) - 1;
    if (n === 0) r.users.delete(user); else r.users.set(user, n);
    c.rooms.delete(r.name);
    this.memberships--;
    if (r.members.size === 0) {
      this.releaseAcks(r, true);
      this.rooms.delete(r.name);
    }
    return user;
  }

  private async leave(c: CConn, room: string, ref: number): Promise<void> {
    const r = this.rooms.get(room);
    const user = r === undefined ? null : this.removeLocal(c, r);
    if (user === null) { this.sendErr(c.id, E_NOT_JOINED, `not joined to room ${room}`, ref); return; }
    // `left` once Redis dropped the presence entry (as `joined` follows the join's), so what the
    // member sees next (`who`, the API's `presence` and `rooms` on any node) no longer lists it;
    // also when Redis failed (the store retries the entry's removal). The main thread unsubscribes
    // before sending `left`, so no msg follows it.
    await this.leaveStore(room, c.id, user, r!.epoch, () => {
      this.aim(room);
      this.out.emit(OUT_LEFT, c.id, room, (m) => writeLeft(m, this.nb, this.nbLen, ref));
    });
  }

  /**
   * The Redis half of a leave (presence), then `done`; a failure leaves the entry to the store,
   * which retries its removal every housekeeping tick (ClusterStore.pendingLeaves).
   */
  private async leaveStore(room: string, conn: number, user: string, epoch: string, done?: () => void): Promise<void> {
    let left: number;
    try {
      left = await this.store.leave(room, String(conn), user);
    } catch {
      done?.();
      return;
    }
    done?.();
    if (this.opts.events === true && left === 0) {
      const users = await this.store.who(room).catch(() => null);
      this.events?.presence({ name: room, epoch, users: { size: users?.length ?? 1 } }, user, 'leave', conn);
      this.out.written();
    }
  }

  private async close(c: CConn): Promise<void> {
    const leaves: Promise<void>[] = [];
    for (const name of [...c.rooms]) {
      const r = this.rooms.get(name);
      if (r === undefined) { c.rooms.delete(name); continue; }
      const user = this.removeLocal(c, r);
      if (user !== null) leaves.push(this.leaveStore(name, c.id, user, r.epoch));
    }
    await Promise.all(leaves);
  }

  private async read(c: CConn, r: CRoom, user: string, ref: number, seq: number): Promise<void> {
    const cur = c.anon ? Math.min(seq, r.seq) : await this.store.read(r.name, user, seq);
    this.aim(r.name);
    this.out.emit(OUT_SEND, c.id, '', (m) => writeAck(m, this.nb, this.nbLen, ref, cur ?? 0));
  }

  private async hist(c: CConn, r: CRoom, op: Op & { k: 'hist' }): Promise<void> {
    const q = { limit: op.limit, ...(isAbsent(op.before) ? {} : { before: op.before }), ...(isAbsent(op.after) ? {} : { after: op.after }) };
    const msgs = await this.store.hist(r.name, q);
    const truncated = histTruncated(msgs, op.limit, r.seq, op.before, op.after, this.opts.maxHistBytes);
    this.aim(r.name);
    this.out.emit(OUT_SEND, c.id, '', (m) => writeHist(m, this.nb, this.nbLen, op.ref, truncated, (w) => {
      w.arrayHeader(msgs.length);
      for (const x of msgs) w.raw(x.frame, 0, x.frame.byteLength);
    }));
  }

  private async who(c: CConn, r: CRoom, ref: number): Promise<void> {
    const all = await this.store.who(r.name);
    const users = this.scratchUsers;
    const truncated = whoPage(all, this.opts.maxHistBytes, users);
    const list = [...users];
    users.length = 0;
    this.aim(r.name);
    this.out.emit(OUT_SEND, c.id, '', (m) => writeWho(m, this.nb, this.nbLen, ref, list, truncated));
  }

  // ---- the HTTP API's requests (workers/admin.ts in single-node mode) -------------------------

  private onAdmin(b: Uint8Array, off: number, end: number): void {
    const req = getU32(b, off + 1);
    const op = ADMIN_OPS[b[off + 5]!] ?? '';
    const args = parseAdminArgs(b, off, end);
    if (args === null) {
      this.adminReply(req, (m) => adminError(m, 'bad_request', 'arguments are not JSON'));
      return;
    }
    this.opsInFlight++;
    clusterAdmin({ store: this.store, out: this.out, rooms: this.rooms, maxHistBytes: this.opts.maxHistBytes, shard: this.opts.index }, req, op, args).catch((err: unknown) => {
      const e = err as Error;
      this.adminReply(req, (m) => adminError(m, err instanceof RedisUnavailableError ? 'unavailable' : 'internal', e.message));
    }).finally(() => { this.opsInFlight--; this.notifyIdle(); });
  }

  private adminReply(req: number, put: (m: MsgWriter) => void): void {
    this.out.emit(OUT_ADMIN_REPLY, req, '', put);
  }


  // ---- drain ----------------------------------------------------------------------------------

  /**
   * IN_DRAIN: waits (within `budgetMs`) for what is in flight, closes the store (the presence
   * entries of this node's connections are left, its heartbeat deleted), then answers OUT_DRAINED.
   */
  async drain(budgetMs: number): Promise<void> {
    const deadline = performance.now() + budgetMs;
    this.launch();
    while (!this.idle && performance.now() < deadline) await this.settled(Math.max(1, Math.min(50, deadline - performance.now())));
    await this.store.close();
    this.out.emit(OUT_DRAINED, -1, '', () => undefined);
    await this.out.idle();
  }

  // ---- writing --------------------------------------------------------------------------------

  /** Aims the room name bytes (`nb`) at `name`. */
  private aim(name: string): void {
    for (let i = 0; i < name.length; i++) this.nb[i] = name.charCodeAt(i);
    this.nbLen = name.length;
  }

  private sendErr(conn: number, code: number, msg: string, ref: number, retryAfterMs = -1): void {
    this.errors[code]!++;
    this.out.emit(OUT_SEND, conn, '', (m) => writeErr(m, code, msg, ref, retryAfterMs));
  }

  /** A refused join: OUT_REFUSED with the room, so the main thread drops it from the connection's rooms. */
  private refuse(c: CConn, room: string, code: number, msg: string, ref: number, retryAfterMs: number): void {
    this.errors[code]!++;
    this.out.emit(OUT_REFUSED, c.id, room, (m) => writeErr(m, code, msg, ref, retryAfterMs));
  }


}

function refOf(op: Op): number {
  return 'ref' in op ? op.ref : -1;
}


/**
 * `hist`'s `truncated` from a Redis page: some of the range asked for existed once (seq >= 1)
 * but the stream no longer has it, told apart from a page that maxHistBytes cut short.
 */
function histTruncated(msgs: readonly RedisMessage[], limit: number, seq: number, before: number, after: number, maxBytes: number): boolean {
  // After an anchor: truncated when the page does not start right after it (trimmed), full or not.
  if (!isAbsent(after)) return msgs.length > 0 ? msgs[0]!.seq > after + 1 : after + 1 <= seq;
  if (msgs.length >= limit || cutByBytes(msgs, maxBytes)) return false;
  const hi = isAbsent(before) ? seq : Math.min(before - 1, seq);
  const lo = Math.max(1, hi - limit + 1);
  return lo <= hi && (msgs.length === 0 || msgs[0]!.seq > lo);
}
