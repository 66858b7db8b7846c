/**
 * The connection router: every uWS WebSocket callback. The upgrade (./upgrade.ts: draining,
 * admission rate, maxConnections, open-mode `?user=`, the authenticate hook or the token gate),
 * the hello on open, each client frame (scan, rate limit, permissions, bans, routing into its room's shard
 * inbound ring, the main thread's join/leave bookkeeping, `refresh`) and the close (the shards
 * are told once each). It owns the connections map and the per-connection state (./conn.ts);
 * what it needs of the engine is its RouterHost.
 */
import type { Logger } from 'pino';
import { pack as packBody } from 'msgpackr';
import { EngineError, CLOSE_OTHER, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_BIG, KNOWN_CLOSE_CODES } from '../errors.js';
import { AuthError, type Identity } from '../auth/index.js';
import { AuthGate, parseRefresh, permits } from './auth-gate.js';
import type { BanTable } from './bans.js';
import type { ResolvedOptions } from '../options.js';
import {
  ClientFrame, E_BAD_FRAME, E_FORBIDDEN, E_INTERNAL, E_NOT_JOINED, E_OVERLOADED, E_RATE_LIMITED, E_SHUTTING_DOWN,
  E_TOO_MANY_ROOMS, E_UNAUTHORIZED, E_UNAVAILABLE, E_UNKNOWN_TYPE, T_JOIN, T_LEAVE, T_PUB, fnv1a, writeErr, writeHello, writeRefreshed,
  type Limits,
} from '../protocol/frames.js';
import { MsgWriter, asciiString } from '../protocol/msgpack.js';
import type { ShardLink } from './link.js';
import { nowMicros } from './outbound.js';
import type { SlowConsumerGuard } from './slow-consumers.js';
import { TokenBucketPolicy, monotonicMs } from './token-bucket.js';
import type { Conn, ConnCounters } from './conn.js';
import { UpgradePath } from './upgrade.js';
import { roomsAdd, roomsDelete, roomsHas, roomsOf, roomsSize } from './room-set.js';
import type { WebSocket, WebSocketBehavior } from './uws.js';

/** A connection that keeps hitting a limit is logged at most once per this interval. */
const LIMIT_LOG_MS = 10_000;
/** One pub in FANOUT_SAMPLE (a power of two) is stamped at receipt and timed to its fan-out. */
const FANOUT_SAMPLE = 16;
/** retryAfterMs of the `unavailable` answer to requests a store failure left unhandled. */
const STORE_RETRY_MS = 1000;

/** What the router needs of the engine. */
export interface RouterHost {
  readonly options: ResolvedOptions;
  readonly log: Logger;
  readonly links: readonly ShardLink[];
  /** Room bans (the HTTP API's kick): a banned user's join gets `forbidden`. */
  readonly bans: BanTable;
  /** Counted here, read by /metrics. */
  readonly counters: ConnCounters;
  /** Told of every close; its callback closes slow consumers through closeSlow(). */
  readonly guard: SlowConsumerGuard<Conn>;
  /** The shard a room lives on. */
  shardOf(room: string): number;
  /** close() began: upgrades get 503, frames `shutting_down`. */
  draining(): boolean;
  /** The shards are stopped: a close tells them nothing. */
  stopped(): boolean;
}

export class ConnectionRouter {
  /** Every open socket by its connection id. */
  readonly conns = new Map<number, WebSocket<Conn>>();
  /** Token auth (options.auth): set by Engine.listen(), null when off. */
  gate: AuthGate | null = null;
  /** The upgrade path (./upgrade.ts): admission, maxConnections, identity. */
  readonly upgrades: UpgradePath;
  /** The uWS `/ws` callbacks, bound once. */
  readonly handlers: Pick<WebSocketBehavior<Conn>, 'upgrade' | 'open' | 'message' | 'close'>;
  /** Scanner and scratch buffer shared by every frame (the main thread handles one at a time). */
  private readonly frame = new ClientFrame();
  private readonly scratch = new Uint8Array(64 * 1024);
  private readonly sw = new MsgWriter();
  private readonly limits: Limits;
  private readonly o: ResolvedOptions;
  /** Per-connection frame rate (ratePerSec, rateBurst) on the monotonic clock. */
  private readonly rate: TokenBucketPolicy;
  private fanoutCount = 0;

  constructor(private readonly host: RouterHost) {
    const o = (this.o = host.options);
    this.limits = { maxFrame: o.maxFrameBytes, maxRooms: o.maxRoomsPerConn, ratePerSec: o.ratePerSec, burst: o.rateBurst, maxBuffer: o.maxBufferBytes };
    this.rate = new TokenBucketPolicy(o.ratePerSec, o.rateBurst, monotonicMs);
    this.upgrades = new UpgradePath({
      options: o, log: host.log, counters: host.counters,
      connections: () => this.conns.size, gate: () => this.gate, draining: () => host.draining(), rate: this.rate,
    });
    this.handlers = {
      upgrade: (res, req, ctx) => this.upgrades.onUpgrade(res, req, ctx),
      open: (ws) => this.onOpen(ws),
      message: (ws, msg, isBinary) => this.onMessage(ws, msg, isBinary),
      close: (ws, code) => this.onClose(ws, code),
    };
  }

  /** The rooms of every connection summed, as the main thread routed them (stats().connRooms). */
  connRooms(): number {
    let n = 0;
    for (const ws of this.conns.values()) n += roomsSize(ws.getUserData().rooms);
    return n;
  }


  private onOpen(ws: WebSocket<Conn>): void {
    const c = ws.getUserData();
    this.conns.set(c.id, ws);
    this.host.counters.opened++;
    if (c.identity !== null) this.armExpiry(ws, c.identity);
    const w = this.sw.reset(this.scratch);
    writeHello(w, c.connStr, c.user, this.limits);
    ws.send(this.scratch.subarray(0, w.pos), true);
  }

  /** Sends one frame; a connection whose unsent data passes maxBufferBytes is closed with 4008. */
  send(ws: WebSocket<Conn>, frame: Uint8Array): boolean {
    if (ws.send(frame, true) !== 1 && ws.getBufferedAmount() > this.o.maxBufferBytes) {
      this.closeSlow(ws);
      return false;
    }
    return true;
  }

  /**
   * A direct reply (`hist`, `who`, `joined` with `missed`) costs its connection one more token
   * per replyBytesPerToken bytes, taken when it is sent (the bucket may go down to -rateBurst):
   * one token would otherwise pull up to maxHistBytes. Smaller replies cost nothing extra.
   */
  chargeReply(ws: WebSocket<Conn>, bytes: number): void {
    const cost = Math.floor(bytes / this.o.replyBytesPerToken);
    if (cost > 0) this.rate.charge(ws.getUserData(), cost);
  }

  sendErr(ws: WebSocket<Conn>, code: number, msg: string, ref: number, retryAfterMs = -1): void {
    const w = this.sw.reset(this.scratch);
    writeErr(w, code, msg, ref, retryAfterMs);
    this.host.counters.errors[code]!++;
    this.send(ws, this.scratch.subarray(0, w.pos));
  }

  private onMessage(ws: WebSocket<Conn>, msg: ArrayBuffer, isBinary: boolean): void {
    const c = ws.getUserData();
    const o = this.o;
    if (msg.byteLength > o.maxFrameBytes) { ws.end(CLOSE_TOO_BIG, 'frame too big'); return; }
    this.host.counters.framesIn++;
    const f = this.frame;
    const u8 = new Uint8Array(msg);
    const err = isBinary ? f.scan(u8, 0, u8.byteLength, o.maxBodyDepth) : E_BAD_FRAME;
    // Every frame costs a token, valid or not.
    const wait = this.rate.take(c);
    const now = c.last;
    const ref = err === 0 || f.ref >= 0 ? f.ref : -1;
    if (wait > 0) {
      this.limitHit(c, 'rate_limited', now);
      this.sendErr(ws, E_RATE_LIMITED, 'rate limit exceeded', isBinary ? ref : -1, wait);
      return;
    }
    if (!isBinary) { this.sendErr(ws, E_BAD_FRAME, 'frames must be binary MessagePack', -1); return; }
    if (err !== 0) {
      if (err === E_UNKNOWN_TYPE && this.gate !== null && c.identity !== null && this.refresh(ws, this.gate, c.identity, u8)) return;
      this.sendErr(ws, err, f.message, f.ref);
      return;
    }
    if (this.host.draining()) { this.sendErr(ws, E_SHUTTING_DOWN, 'engine is shutting down', f.ref); return; }
    if (c.identity !== null && c.identity.rooms !== null && !permits(c.identity, f.type, asciiString(u8, f.roomStart, f.roomEnd))) {
      this.sendErr(ws, E_FORBIDDEN, `your token does not allow this in room ${asciiString(u8, f.roomStart, f.roomEnd)}`, f.ref);
      return;
    }
    const shard = fnv1a(u8, f.roomStart, f.roomEnd) % this.host.links.length;
    const link = this.host.links[shard]!;
    if (link.failed) { this.sendErr(ws, E_INTERNAL, `shard ${shard} failed; its rooms are unavailable until the engine restarts`, f.ref); return; }
    if (f.type === T_JOIN) {
      const room = asciiString(u8, f.roomStart, f.roomEnd);
      if (this.host.bans.size > 0) {
        const left = this.host.bans.remaining(room, c.user);
        if (left > 0) { this.sendErr(ws, E_FORBIDDEN, `banned from room ${room}`, f.ref, left); return; }
      }
      const added = !roomsHas(c.rooms, room);
      if (added) {
        if (roomsSize(c.rooms) >= o.maxRoomsPerConn) { this.limitHit(c, 'too_many_rooms', now); this.sendErr(ws, E_TOO_MANY_ROOMS, `at most ${o.maxRoomsPerConn} rooms per connection`, f.ref); return; }
        c.rooms = roomsAdd(c.rooms, room);
      }
      if (!link.writeFrame(c.id, c.user, u8, 0, c.anon, c.addr, c.identity?.infoBytes ?? null)) {
        if (added) c.rooms = roomsDelete(c.rooms, room);
        this.sendErr(ws, E_OVERLOADED, 'shard queue full', f.ref, 50);
      }
      return;
    }
    if (f.type === T_LEAVE) {
      const room = asciiString(u8, f.roomStart, f.roomEnd);
      if (!roomsHas(c.rooms, room)) { this.sendErr(ws, E_NOT_JOINED, `not joined to room ${room}`, f.ref); return; }
      if (link.writeFrame(c.id, null, u8, 0)) c.rooms = roomsDelete(c.rooms, room);
      else this.sendErr(ws, E_OVERLOADED, 'shard queue full', f.ref, 50);
      return;
    }
    // One pub in FANOUT_SAMPLE is stamped for the receipt-to-fan-out histogram.
    const stamp = f.type === T_PUB && o.metrics && (++this.fanoutCount & (FANOUT_SAMPLE - 1)) === 0 ? (nowMicros() || 1) : 0;
    if (!link.writeFrame(c.id, null, u8, stamp)) this.sendErr(ws, E_OVERLOADED, 'shard queue full', f.ref, 50);
  }

  /** Closes the connection with 4401 when its identity expires without a `refresh`. */
  private armExpiry(ws: WebSocket<Conn>, identity: Identity): void {
    const c = ws.getUserData();
    this.gate?.arm(c, identity, () => { if (!c.closed) ws.end(CLOSE_TOKEN_EXPIRED, 'token expired'); });
    if (this.gate === null && Number.isFinite(identity.exp)) {
      // A hook identity with exp: same close, no clock tolerance.
      const wait = identity.exp * 1000 - Date.now();
      c.expiryTimer = setTimeout(() => { if (!c.closed) ws.end(CLOSE_TOKEN_EXPIRED, 'token expired'); }, Math.min(Math.max(0, wait), 2 ** 31 - 1));
      c.expiryTimer.unref();
    }
  }

  /**
   * A `refresh` frame (docs/PROTOCOL.md): a new token for the same user replaces the
   * connection's permissions and expiry; answered `refreshed` {exp, ref} or `err` unauthorized.
   * Returns false when the frame is not a refresh (it stays unknown_type).
   */
  private refresh(ws: WebSocket<Conn>, gate: AuthGate, current: Identity, u8: Uint8Array): boolean {
    const r = parseRefresh(u8);
    if (r === null) return false;
    const c = ws.getUserData();
    gate.refresh(r.token, current).then(
      (next) => {
        if (c.closed) return;
        c.identity = next;
        this.armExpiry(ws, next);
        const w = this.sw.reset(this.scratch);
        writeRefreshed(w, Math.floor(next.exp), r.ref);
        this.send(ws, this.scratch.subarray(0, w.pos));
      },
      (e: unknown) => {
        if (c.closed) return;
        const reason = e instanceof AuthError ? e.reason : 'invalid';
        this.sendErr(ws, E_UNAUTHORIZED, `refresh refused: token ${reason}`, r.ref);
      },
    );
    return true;
  }

  closeSlow(ws: WebSocket<Conn>): void {
    const c = ws.getUserData();
    if (c.closed) return;
    this.host.counters.slowConsumers++;
    this.host.log.warn({ event: 'slow_consumer', conn: c.connStr, user: c.user, buffered: ws.getBufferedAmount() }, 'closing slow consumer');
    ws.end(CLOSE_SLOW_CONSUMER, 'slow consumer');
  }

  private limitHit(c: Conn, limit: string, now: number): void {
    if (now - c.lastLimitLog < LIMIT_LOG_MS) return;
    c.lastLimitLog = now;
    this.host.log.warn({ event: 'limit_hit', limit, conn: c.connStr, user: c.user }, 'connection hit a limit');
  }

  private onClose(ws: WebSocket<Conn>, code: number): void {
    const c = ws.getUserData();
    c.closed = true;
    AuthGate.disarm(c);
    const key = KNOWN_CLOSE_CODES.has(code) ? code : CLOSE_OTHER;
    this.host.counters.closedByCode.set(key, (this.host.counters.closedByCode.get(key) ?? 0) + 1);
    this.conns.delete(c.id);
    this.host.guard.closed(ws);
    if (this.host.stopped()) { c.rooms = null; return; }
    let told = 0n;
    for (const room of roomsOf(c.rooms)) {
      const s = this.host.shardOf(room);
      const bit = 1n << BigInt(s);
      if ((told & bit) === 0n) { told |= bit; this.host.links[s]!.close(c.id); }
    }
    c.rooms = null;
  }

  /** Removes every connection of `user` from `room` (each gets an unsolicited `left`, as if it had left). Returns how many. */
  kick(room: string, user: string): number {
    const leave = packBody({ t: 'leave', room }) as Uint8Array;
    const link = this.host.links[this.host.shardOf(room)]!;
    let n = 0;
    for (const ws of this.conns.values()) {
      const c = ws.getUserData();
      if (c.user !== user || !roomsHas(c.rooms, room) || c.closed) continue;
      if (!link.writeFrame(c.id, null, leave, 0)) throw new EngineError('SHARDCHAT_OVERLOADED', 'shard queue full; retry');
      c.rooms = roomsDelete(c.rooms, room);
      n++;
    }
    return n;
  }

  /** Closes the connections of `user`, or the one named `conn` (its hello's conn), with `code`. Returns how many. */
  disconnect(target: { user?: string; conn?: string }, code: number, reason: string): number {
    let n = 0;
    for (const ws of this.conns.values()) {
      const c = ws.getUserData();
      if (c.closed || (target.user !== undefined && c.user !== target.user) || (target.conn !== undefined && c.connStr !== target.conn)) continue;
      ws.end(code, reason);
      n++;
    }
    return n;
  }

  /** Replays the memberships of a restarted shard's rooms (the main thread's view of them). */
  replay(link: ShardLink): void {
    for (const ws of this.conns.values()) {
      const c = ws.getUserData();
      // The identity's info now (a refresh may have changed it since the join: the replay shows the newer one).
      for (const room of roomsOf(c.rooms)) if (this.host.shardOf(room) === link.index) link.replay(c.id, c.user, room, c.anon, c.identity?.infoBytes ?? null);
    }
  }

  /**
   * A client frame a dead shard left unhandled (`body` .. `end` in its inbound ring), from
   * connection `conn`: answered `internal` (`unavailable` after a store failure: nothing of the
   * batch was kept). Nothing happens when the connection is gone.
   */
  unhandledFrame(conn: number, b: Uint8Array, body: number, end: number, storeFailed: boolean): void {
    const ws = this.conns.get(conn);
    if (ws === undefined) return;
    const f = this.frame;
    f.scan(b, body, end, this.o.maxBodyDepth);
    // The main thread forgot the room when it queued this leave; the shard never handled
    // it, so the socket is still subscribed: keep the room, so the replay below rejoins it
    // and the client's retried leave works.
    if (f.error === 0 && f.type === T_LEAVE) { const c = ws.getUserData(); c.rooms = roomsAdd(c.rooms, asciiString(b, f.roomStart, f.roomEnd)); }
    if (storeFailed) this.sendErr(ws, E_UNAVAILABLE, 'the store could not commit this request (nothing of it was kept); retry', f.ref, STORE_RETRY_MS);
    else this.sendErr(ws, E_INTERNAL, 'shard restarted before handling this request; retry', f.ref);
  }
}
