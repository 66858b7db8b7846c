/**
 * The main thread: uWebSockets.js accepts every connection and does all socket I/O; each client
 * frame is validated, rate-limited and copied into its room's shard inbound ring inside the uWS
 * callback; shard output comes back through the outbound rings and becomes `send`/`publish`
 * calls on views of the ring (no copy). Owns connections, uWS topics, the shard supervisor and
 * shutdown. The only other module that touches uWS is ./uws.ts (loading it).
 */
import { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { createLogger } from './log.js';
import { pack as packBody } from 'msgpackr';
import { EngineError, CLOSE_GOING_AWAY, CLOSE_SLOW_CONSUMER, CLOSE_TOO_BIG } from '../errors.js';
import { type EngineOptions, type ResolvedOptions, resolveOptions } from '../options.js';
import {
  ClientFrame, E_BAD_FRAME, E_INTERNAL, E_NOT_JOINED, E_OVERLOADED, E_RATE_LIMITED, E_SHUTTING_DOWN,
  E_TOO_MANY_ROOMS, E_UNAVAILABLE, T_JOIN, T_LEAVE, T_PUB, fnv1a, fnv1aString, isValidCid, isValidRoom, isValidUser, writeErr, writeHello,
  type Limits,
} from '../protocol/frames.js';
import { MsgWriter, asciiString, skipValue } from '../protocol/msgpack.js';
import {
  CRASH_EXIT, CRASH_THROW, IN_CRASH, IN_DRAIN, IN_FRAME, IN_FRAME_BODY, IN_SERVER_PUB, OUT_DRAINED, OUT_JOINED, OUT_LEFT, OUT_REFUSED,
  OUT_BODY, OUT_PUBLISH, OUT_PUBLISH_ACK, OUT_SEND, OUT_SERVER_ACK, addrHash, getU32,
} from '../protocol/records.js';
import { RingReader } from '../ring/index.js';
import { S_UP } from '../metrics/shard-stats.js';
import { ShardLink } from './link.js';
import { type DataDirLock, StoreError, type StoreErrorCode, lockDataDir } from '../store-dir.js';
import { type EngineStats, errorCounts, metricsShard, shardStats } from './stats.js';
import { parseUserQuery } from '../protocol/identity.js';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Histogram } from 'prom-client';
import { EngineMetrics, type MetricsSnapshot } from '../metrics/prometheus.js';
import { loadUws, type HttpRequest, type HttpResponse, type TemplatedApp, type WebSocket, type us_listen_socket } from './uws.js';

/** Per-socket state, held by uWS as the socket's user data. */
interface Conn {
  id: number;
  connStr: string;
  user: string;
  /** No identity (`anon-<conn>`): the shard drops its cursors on leave and limits room creation by `addr`. */
  anon: boolean;
  /** A hash of the client address (the room-creation principal of an anonymous user). */
  addr: number;
  /** Rooms this connection joined (and has not left), as the main thread routed them. */
  rooms: Set<string>;
  tokens: number;
  lastRefill: number;
  closed: boolean;
  /** When this connection's last "limit hit" line was logged (at most one per LIMIT_LOG_MS). */
  lastLimitLog: number;
}

/** `dup`: the cid was published before (within the window); `seq` is that message's, and nothing new was stored. */
export interface PublishResult { seq: number; epoch: string; dup: boolean }

/** A shard's store error arrives as an Error whose message starts with the code (workers/shard.ts). */
function asStoreError(err: Error): StoreError | null {
  const m = /^(STORE_[A-Z_]+): ([\s\S]*)$/.exec(err.message);
  return m === null ? null : new StoreError(m[1] as StoreErrorCode, m[2]!);
}

/** retryAfterMs of the `unavailable` answer to requests a store failure left unhandled. */
const STORE_RETRY_MS = 1000;

const HARD_PAYLOAD_CAP = 16 << 20;
/** How often connections are checked against maxBufferBytes (see slowConsumerSweep). */
const SLOW_SWEEP_MS = 100;
const OUT_BATCH = 2048;
/** Young-generation cap of a shard worker (see the Piscina options). */
const SHARD_YOUNG_GEN_MB = 4;
/** A connection that keeps hitting a limit is logged at most once per this interval. */
const LIMIT_LOG_MS = 10_000;
/** One pub in FANOUT_SAMPLE (a power of two) is stamped at receipt and timed to its fan-out. */
const FANOUT_SAMPLE = 16;
/** Main-thread microseconds mod 2^32 (both ends of the measurement are on the main thread). */
const nowMicros = (): number => (performance.now() * 1000) >>> 0;
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class Engine {
  readonly options: ResolvedOptions;
  readonly log: Logger;
  private readonly uws = loadUws();
  private readonly dataLock: DataDirLock | null;
  /** Set once every shard ran; a store error before that fails ready() instead of restarting. */
  private shardsUp = false;
  private startError: StoreError | null = null;
  /** When each shard last failed on its store, and the delayed restarts pending. */
  private readonly storeFailedAt = new Map<number, number>();
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private app: TemplatedApp | null = null;
  private listenSocket: us_listen_socket | null = null;
  private boundPort = -1;
  private readonly links: ShardLink[];
  private readonly pool: Piscina;
  private readonly conns = new Map<number, WebSocket<Conn>>();
  private nextConn = 1;
  private readonly frame = new ClientFrame();
  private readonly scratch = new Uint8Array(64 * 1024);
  private readonly sw = new MsgWriter();
  private readonly limits: Limits;
  private readonly pending = new Map<number, { resolve: (r: PublishResult) => void; reject: (e: Error) => void; shard: number }>();
  private nextReq = 1;
  private draining = false;
  private stopped = false;
  private closing: Promise<void> | null = null;
  private readonly started: Promise<void>;
  private sweeper: NodeJS.Timeout | null = null;
  private fanoutCount = 0;
  private readonly fanoutLatency: Histogram;
  private readonly metrics: EngineMetrics;
  private metricsSocket: us_listen_socket | null = null;
  /** Main-thread event-loop delay; made in listen(), so an engine that never listened holds none. */
  private loopDelay: IntervalHistogram | null = null;
  /** Upgrades waiting on an async authenticate hook: they count against maxConnections. */
  private authPending = 0;
  /** Counters the metrics module reads: closes by code, `err` replies by code, slow consumers closed. */
  readonly counters = {
    opened: 0, closedByCode: new Map<number, number>(), errors: new Uint32Array(16), slowConsumers: 0,
    framesIn: 0,
  };

  constructor(opts: EngineOptions = {}, logger?: Logger) {
    this.options = resolveOptions(opts);
    this.log = logger ?? createLogger(this.options.logLevel, this.options.logPretty);
    const o = this.options;
    this.limits = { maxFrame: o.maxFrameBytes, maxRooms: o.maxRoomsPerConn, ratePerSec: o.ratePerSec, burst: o.rateBurst, maxBuffer: o.maxBufferBytes };
    // The data directory's lock before any shard opens the store (throws a StoreError: locked, unwritable...).
    this.dataLock = o.store === 'sqlite' ? lockDataDir(o.dataDir) : null;
    this.links = Array.from({ length: o.shards }, (_, i) => new ShardLink(i, o.ringBytes));
    this.pool = new Piscina({
      filename: new URL('../../workers/shard.js', import.meta.url).href,
      minThreads: o.shards,
      maxThreads: o.shards,
      concurrentTasksPerWorker: 1,
      idleTimeout: Infinity,
      atomics: 'disabled',
      // A shard allocates little per message (pooled history, views), so a small young
      // generation costs it nothing, while V8's default lets new space grow to 16 MiB per
      // semi-space under a burst of joins and keep it: RSS that idle connections then pay for.
      resourceLimits: { maxYoungGenerationSizeMb: SHARD_YOUNG_GEN_MB },
    });
    this.pool.on('error', (err: Error) => this.log.error({ event: 'pool_error', err: err.message }, 'worker pool error'));
    this.metrics = new EngineMetrics(() => this.metricsSnapshot());
    this.fanoutLatency = this.metrics.fanoutLatency;
    for (const link of this.links) this.startShard(link);
    this.started = this.waitShardsUp();
  }

  /** The shard a room lives on: FNV-1a of its bytes modulo the shard count (stable). */
  shardOf(room: string): number {
    return fnv1aString(room) % this.links.length;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Resolves once every shard runs. */
  ready(): Promise<void> {
    return this.started;
  }

  private async waitShardsUp(): Promise<void> {
    for (let i = 0; i < 2000; i++) {
      if (this.startError !== null) throw this.startError;
      if (this.links.every((l) => l.stats[S_UP] === 1)) {
        this.shardsUp = true;
        for (const l of this.links) this.log.info({ event: 'shard_started', shard: l.index }, 'shard started');
        return;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new EngineError('SHARDCHAT_LISTEN_FAILED', 'shards did not start within 10 s');
  }

  // ---- shards -------------------------------------------------------------------------------

  private startShard(link: ShardLink): void {
    const o = this.options;
    const gen = link.generation;
    link.up = true;
    const task = this.pool.run({
      index: link.index, inbound: link.inbound, outbound: link.outbound, stats: link.statsSab,
      historyLimit: o.historyLimit, maxHistBytes: o.maxHistBytes, roomTtlMs: o.roomTtlMs, maxBodyDepth: o.maxBodyDepth,
      historyBudgetBytes: o.historyBudgetBytes, maxRoomsPerShard: o.maxRoomsPerShard, roomCreateRate: o.roomCreateRate,
      roomCreateBurst: o.roomCreateBurst, maxCursorsPerRoom: o.maxCursorsPerRoom, maxCursorsPerShard: o.maxCursorsPerShard,
      store: o.store, dataDir: o.dataDir, fsync: o.fsync, historyMaxAgeMs: o.historyMaxAgeMs,
      cidWindowMessages: o.cidWindowMessages, cidWindowMs: o.cidWindowMs,
    });
    link.task = task;
    task.then(
      () => { if (link.generation === gen) link.up = false; },
      (err: Error) => this.onShardCrash(link, gen, err),
    );
    void this.pump(link, gen);
  }

  private onShardCrash(link: ShardLink, gen: number, err: Error): void {
    if (link.generation !== gen) return;
    link.up = false;
    // A worker that exited never ran its cleanup: mark it down so /readyz is 503 until the new one runs.
    link.stats[S_UP] = 0;
    if (this.stopped) return;
    const storeErr = asStoreError(err);
    // A data directory the shard cannot open at start (corrupt, newer schema...) fails createEngine: no fresh start.
    if (storeErr !== null && !this.shardsUp) { this.startError ??= storeErr; return; }
    this.log.error({ event: 'shard_crashed', shard: link.index, err: err.message }, 'shard crashed');
    // Deliver everything the dead shard published, then answer what it never handled.
    link.reader.drain(this.onOut, Infinity, this.flushAcks);
    const oldInbound = link.inbound;
    const oldReader = link.reader;
    link.fresh();
    oldReader.wake(); // ends the old generation's pump
    link.restarts++;
    this.failUnhandled(oldInbound, link.index, storeErr !== null);
    // A store that fails again soon after (a disk that stays full) restarts the shard after a pause, not in a loop.
    const now = Date.now();
    const last = storeErr === null ? undefined : this.storeFailedAt.get(link.index);
    if (storeErr !== null) this.storeFailedAt.set(link.index, now);
    if (last !== undefined && now - last < 10 * STORE_RETRY_MS) {
      const timer = setTimeout(() => { this.restartTimers.delete(timer); if (!this.stopped) this.restartShard(link); }, STORE_RETRY_MS);
      this.restartTimers.add(timer);
    } else this.restartShard(link);
  }

  private restartShard(link: ShardLink): void {
    this.startShard(link);
    // Replay memberships so rooms come back, told by a `joined` (a new epoch, or with a durable store the same one and its seq).
    for (const ws of this.conns.values()) {
      const c = ws.getUserData();
      for (const room of c.rooms) if (this.shardOf(room) === link.index) link.replay(c.id, c.user, room, c.anon);
    }
    if (this.draining) link.control(Uint8Array.of(IN_DRAIN));
    this.log.warn({ event: 'shard_restarted', shard: link.index, restarts: link.restarts }, 'shard restarted');
  }

  /** Answers every request left unhandled in a dead shard's inbound ring with `internal` (`unavailable` after a store failure). */
  private failUnhandled(inbound: SharedArrayBuffer, shard: number, storeFailed: boolean): void {
    const r = new RingReader(inbound);
    while (r.next() >= 0) {
      const b = r.bytes; const off = r.offset;
      if (b[off] === IN_FRAME) {
        const conn = getU32(b, off + 4);
        const ws = this.conns.get(conn);
        if (ws !== undefined) {
          const f = this.frame;
          f.scan(b, off + IN_FRAME_BODY, off + r.length - b[off + 1]!, this.options.maxBodyDepth);
          // The main thread forgot the room when it queued this leave; the shard never handled
          // it, so the socket is still subscribed: keep the room, so the replay below rejoins it
          // and the client's retried leave works.
          if (f.error === 0 && f.type === T_LEAVE) ws.getUserData().rooms.add(asciiString(b, f.roomStart, f.roomEnd));
          if (storeFailed) this.sendErr(ws, E_UNAVAILABLE, 'the store could not commit this request (nothing of it was kept); retry', f.ref, STORE_RETRY_MS);
          else this.sendErr(ws, E_INTERNAL, 'shard restarted before handling this request; retry', f.ref);
        }
      } else if (b[off] === IN_SERVER_PUB) {
        const req = getU32(b, off + 1);
        const p = this.pending.get(req);
        if (p) { this.pending.delete(req); p.reject(new EngineError('SHARDCHAT_SHARD_RESTARTED', `shard ${shard} restarted before handling this publish; retry`)); }
      }
      r.release();
    }
  }

  /**
   * Moves shard output to sockets until the link's generation changes or the engine stops. It
   * parks as soon as the ring is empty rather than polling once per event-loop turn: polling
   * keeps the loop from blocking in epoll, so each turn reads only the few sockets that happen
   * to be ready and a closed loop of clients splits into many small cohorts, each fanned out with
   * its own write per subscriber. Parked, the loop waits for sockets or for the shard's notify
   * (one per output batch), and each turn's fan-out carries what the turn gathered. Measured in
   * fanout-10x100: 0.87x plain uWS's throughput and 1.07x its main-thread CPU per delivery,
   * against 0.80x and 1.20x polling for 64 idle turns (native-bench, 5 runs each).
   */
  private async pump(link: ShardLink, gen: number): Promise<void> {
    const reader = link.reader;
    while (!this.stopped && link.generation === gen) {
      const depth = reader.depth();
      if (depth > link.outboundHighWater) link.outboundHighWater = depth;
      const n = reader.drain(this.onOut, OUT_BATCH, this.flushAcks);
      if (n === OUT_BATCH) { await yieldToLoop(); continue; }
      if (reader.hasNext()) continue;
      await reader.waitForData();
    }
  }

  // Acks of this drain batch, sent once the batch's publishes are in (flushAcks). Each sender's
  // ack then leaves in the same write as every message of the batch its rooms got: uWS's send
  // first drains the socket's queued pub/sub messages into the cork. Sent at once instead, the ack
  // would cost the sender a write of its own before the end-of-turn pub/sub drain. The views point
  // into the outbound ring, valid until the batch's read counter is published (after the flush).
  private readonly ackConns: number[] = [];
  private readonly ackFrames: Uint8Array[] = [];
  private ackWs: WebSocket<Conn> | null = null;
  private ackFrame: Uint8Array | null = null;
  private readonly sendAck = (): void => { this.send(this.ackWs!, this.ackFrame!); };

  /** Sends the queued acks, each corked with its socket's queued pub/sub messages. */
  private readonly flushAcks = (): void => {
    const ids = this.ackConns;
    if (ids.length === 0) return;
    const frames = this.ackFrames;
    for (let i = 0; i < ids.length; i++) {
      const ws = this.conns.get(ids[i]!);
      if (ws === undefined) continue; // closed since (a slow consumer closed mid-batch, say)
      this.ackWs = ws; this.ackFrame = frames[i]!;
      ws.cork(this.sendAck);
    }
    this.ackWs = this.ackFrame = null;
    ids.length = 0;
    frames.length = 0;
  };

  /** The connection a direct reply record is for; queued acks leave first, so a connection's replies keep the shard's order. */
  private replyTo(b: Uint8Array, off: number): WebSocket<Conn> | undefined {
    this.flushAcks();
    return this.conns.get(getU32(b, off + 4));
  }

  private observeFanout(stamp: number): void {
    // Receipt-to-fan-out latency of the sampled pubs (the ones that carry a stamp).
    if (stamp !== 0) this.fanoutLatency.observe((((nowMicros() - stamp) >>> 0) / 1e6));
  }

  private readonly onOut = (b: Uint8Array, off: number, len: number): void => {
    // Layout (protocol/records.ts): [0] kind, [1] roomLen, [4] id, [8..] body, room at the end.
    const end = off + len;
    const rs = end - b[off + 1]!;
    switch (b[off]) {
      case OUT_PUBLISH: {
        this.app?.publish(b.subarray(rs, end), b.subarray(off + OUT_BODY, rs), true);
        this.observeFanout(getU32(b, off + 4));
        return;
      }
      case OUT_PUBLISH_ACK: {
        const p = off + OUT_BODY;
        const ms = p + 8;
        const me = ms + getU32(b, p + 4);
        const id = getU32(b, off + 4);
        this.app?.publish(b.subarray(rs, end), b.subarray(ms, me), true);
        if (this.conns.has(id)) { this.ackConns.push(id); this.ackFrames.push(b.subarray(me, rs)); }
        this.observeFanout(getU32(b, p));
        return;
      }
      case OUT_SEND: {
        const ws = this.replyTo(b, off);
        if (ws !== undefined) this.send(ws, b.subarray(off + OUT_BODY, rs));
        return;
      }
      case OUT_REFUSED: {
        // The shard refused a join (room_limit): the connection is not in that room after all.
        const ws = this.replyTo(b, off);
        if (ws === undefined) return;
        ws.getUserData().rooms.delete(asciiString(b, rs, end));
        this.send(ws, b.subarray(off + OUT_BODY, rs));
        return;
      }
      case OUT_JOINED: {
        const ws = this.replyTo(b, off);
        if (ws === undefined) return;
        if (this.send(ws, b.subarray(off + OUT_BODY, rs))) ws.subscribe(b.subarray(rs, end));
        return;
      }
      case OUT_LEFT: {
        const ws = this.replyTo(b, off);
        if (ws === undefined) return;
        ws.unsubscribe(b.subarray(rs, end));
        this.send(ws, b.subarray(off + OUT_BODY, rs));
        return;
      }
      case OUT_SERVER_ACK: {
        const req = getU32(b, off + 4);
        const p = off + OUT_BODY;
        const seq = getU32(b, p) * 0x100000000 + getU32(b, p + 4);
        const epochEnd = p + 9 + b[p + 8]!;
        const epoch = asciiString(b, p + 9, epochEnd);
        const pending = this.pending.get(req);
        if (pending) { this.pending.delete(req); pending.resolve({ seq, epoch, dup: b[epochEnd] === 1 }); }
        return;
      }
      case OUT_DRAINED:
        for (const l of this.links) if (l.reader.bytes === b) l.drained = true;
        return;
      default:
        this.log.error({ event: 'bad_outbound_record', kind: b[off] }, 'unknown outbound record');
    }
  };

  // ---- sockets ------------------------------------------------------------------------------

  /** Starts listening; resolves when bound (`port` tells the port). */
  async listen(): Promise<number> {
    if (this.listenSocket) return this.boundPort;
    if (this.draining) throw new EngineError('SHARDCHAT_SHUTTING_DOWN', 'engine is closing');
    await this.started;
    const o = this.options;
    const app = this.uws.mod.App();
    this.app = app;
    app.ws<Conn>('/ws', {
      maxPayloadLength: Math.max(HARD_PAYLOAD_CAP, o.maxFrameBytes * 2),
      // uWS drops what exceeds maxBackpressure; shardchat closes with 4008 at maxBufferBytes
      // first (slowConsumerSweep). The higher uWS limit, closing without a close frame, is only
      // a backstop for a buffer that grows by more than the headroom between two sweeps.
      maxBackpressure: o.maxBufferBytes * 2 + (16 << 20),
      closeOnBackpressureLimit: 1,
      idleTimeout: o.idleTimeoutSec === 0 ? 0 : Math.max(8, o.idleTimeoutSec),
      sendPingsAutomatically: true,
      upgrade: (res, req, ctx) => this.onUpgrade(res, req, ctx),
      open: (ws) => this.onOpen(ws),
      message: (ws, msg, isBinary) => this.onMessage(ws, msg, isBinary),
      close: (ws, code) => this.onClose(ws, code),
    });
    app.get('/healthz', (res) => { res.writeStatus('200 OK').writeHeader('content-type', 'text/plain').end('ok'); });
    app.get('/readyz', (res) => {
      const ready = !this.draining && this.links.every((l) => l.up && l.stats[S_UP] === 1);
      res.writeStatus(ready ? '200 OK' : '503 Service Unavailable').writeHeader('content-type', 'text/plain').end(ready ? 'ready' : 'not ready');
    });
    if (o.metrics && o.metricsPort === -1) this.routeMetrics(app);
    app.any('/*', (res) => { res.writeStatus('404 Not Found').end('not found'); });
    await new Promise<void>((resolve, reject) => {
      app.listen(o.host, o.port, (ls) => {
        if (!ls) { reject(new EngineError('SHARDCHAT_LISTEN_FAILED', `cannot listen on ${o.host}:${o.port}`)); return; }
        this.listenSocket = ls;
        this.boundPort = this.uws.mod.us_socket_local_port(ls);
        resolve();
      });
    });
    if (o.metrics && o.metricsPort >= 0) await this.listenMetrics();
    this.loopDelay = monitorEventLoopDelay({ resolution: 10 });
    this.loopDelay.enable();
    this.sweeper = setInterval(() => this.slowConsumerSweep(), SLOW_SWEEP_MS);
    this.log.info({ event: 'listening', host: o.host, port: this.boundPort, shards: this.links.length, uws: this.uws.from }, 'listening');
    return this.boundPort;
  }

  /** Port of the separate /metrics listener, or -1 when /metrics is on the main port. */
  get metricsPort(): number {
    return this.metricsSocket ? this.uws.mod.us_socket_local_port(this.metricsSocket) : -1;
  }

  private routeMetrics(app: TemplatedApp): void {
    app.get('/metrics', (res) => {
      let aborted = false;
      res.onAborted(() => { aborted = true; });
      this.metrics.text().then(
        (text) => { if (!aborted) res.cork(() => { res.writeHeader('content-type', this.metrics.contentType).end(text); }); },
        (e: Error) => { if (!aborted) res.cork(() => { res.writeStatus('500 Internal Server Error').end(e.message); }); },
      );
    });
  }

  private async listenMetrics(): Promise<void> {
    const o = this.options;
    const app = this.uws.mod.App();
    this.routeMetrics(app);
    app.any('/*', (res) => { res.writeStatus('404 Not Found').end('not found'); });
    await new Promise<void>((resolve, reject) => {
      app.listen(o.metricsHost, o.metricsPort, (ls) => {
        if (!ls) { reject(new EngineError('SHARDCHAT_LISTEN_FAILED', `cannot listen for metrics on ${o.metricsHost}:${o.metricsPort}`)); return; }
        this.metricsSocket = ls;
        resolve();
      });
    });
  }

  /** The numbers /metrics shows, read from the same places as stats(). */
  metricsSnapshot(): MetricsSnapshot {
    const st = this.stats();
    const lag = this.loopDelay === null ? 0 : this.loopDelay.percentile(99) / 1e9;
    this.loopDelay?.reset();
    return {
      connections: st.connections, opened: this.counters.opened, closedByCode: this.counters.closedByCode,
      framesIn: this.counters.framesIn, errors: errorCounts(this.counters.errors, this.links),
      slowConsumers: this.counters.slowConsumers, mainLoopLagSeconds: Number.isFinite(lag) ? lag : 0,
      shards: st.shards.map(metricsShard),
    };
  }

  private onUpgrade(res: HttpResponse, req: HttpRequest, ctx: unknown): void {
    if (this.draining) { res.writeStatus('503 Service Unavailable').end('shutting down'); return; }
    if (this.conns.size + this.authPending >= this.options.maxConnections) { res.writeStatus('503 Service Unavailable').end('too many connections'); return; }
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const query = req.getQuery() ?? '';
    const auth = this.options.authenticate;
    if (auth === null) {
      const user = parseUserQuery(query);
      if (user === false) { res.writeStatus('400 Bad Request').end('invalid user'); return; }
      this.upgrade(res, user, key, protocol, extensions, ctx);
      return;
    }
    const headers: Record<string, string> = {};
    req.forEach((k, v) => { headers[k] = v; });
    const url = req.getUrl();
    let aborted = false;
    res.onAborted(() => { aborted = true; });
    this.authPending++;
    void (async () => {
      let result: unknown = null;
      try {
        result = await auth({ url, query, headers });
      } catch (e) {
        this.log.warn({ event: 'auth_error', err: (e as Error).message }, 'authenticate threw');
      } finally {
        this.authPending--;
      }
      if (aborted) return;
      // Anything but { user: valid id } (null, undefined, a bad id) refuses the upgrade with 401.
      const claimed = result !== null && typeof result === 'object' ? (result as { user?: unknown }).user : undefined;
      const user = isValidUser(claimed) ? claimed : null;
      res.cork(() => {
        if (user === null) { res.writeStatus('401 Unauthorized').end('unauthorized'); return; }
        if (this.draining) { res.writeStatus('503 Service Unavailable').end('shutting down'); return; }
        if (this.conns.size >= this.options.maxConnections) { res.writeStatus('503 Service Unavailable').end('too many connections'); return; }
        this.upgrade(res, user, key, protocol, extensions, ctx);
      });
    })();
  }

  private upgrade(res: HttpResponse, user: string | null, key: string, protocol: string, extensions: string, ctx: unknown): void {
    const id = this.nextConn++;
    if (this.nextConn > 0xffffffff) this.nextConn = 1;
    const connStr = `c${id.toString(36)}`;
    const data: Conn = {
      id, connStr, user: user ?? `anon-${connStr}`, anon: user === null,
      addr: addrHash(Buffer.from(res.getRemoteAddressAsText()).toString('latin1')), rooms: new Set(), tokens: this.options.rateBurst,
      lastRefill: Date.now(), closed: false, lastLimitLog: 0,
    };
    res.upgrade(data, key, protocol, extensions, ctx as never);
  }

  private onOpen(ws: WebSocket<Conn>): void {
    const c = ws.getUserData();
    this.conns.set(c.id, ws);
    this.counters.opened++;
    const w = this.sw.reset(this.scratch);
    writeHello(w, c.connStr, c.user, this.limits);
    ws.send(this.scratch.subarray(0, w.pos), true);
  }

  /** Sends one frame; a connection whose unsent data passes maxBufferBytes is closed with 4008. */
  private send(ws: WebSocket<Conn>, frame: Uint8Array): boolean {
    if (ws.send(frame, true) !== 1 && ws.getBufferedAmount() > this.options.maxBufferBytes) {
      this.closeSlow(ws);
      return false;
    }
    return true;
  }

  private sendErr(ws: WebSocket<Conn>, code: number, msg: string, ref: number, retryAfterMs = -1): void {
    const w = this.sw.reset(this.scratch);
    writeErr(w, code, msg, ref, retryAfterMs);
    this.counters.errors[code]!++;
    this.send(ws, this.scratch.subarray(0, w.pos));
  }

  private onMessage(ws: WebSocket<Conn>, msg: ArrayBuffer, isBinary: boolean): void {
    const c = ws.getUserData();
    const o = this.options;
    if (msg.byteLength > o.maxFrameBytes) { ws.end(CLOSE_TOO_BIG, 'frame too big'); return; }
    this.counters.framesIn++;
    const f = this.frame;
    const u8 = new Uint8Array(msg);
    const err = isBinary ? f.scan(u8, 0, u8.byteLength, o.maxBodyDepth) : E_BAD_FRAME;
    // Every frame costs a token, valid or not.
    const now = Date.now();
    c.tokens = Math.min(o.rateBurst, c.tokens + ((now - c.lastRefill) * o.ratePerSec) / 1000);
    c.lastRefill = now;
    const ref = err === 0 || f.ref >= 0 ? f.ref : -1;
    if (c.tokens < 1) {
      this.limitHit(c, 'rate_limited', now);
      this.sendErr(ws, E_RATE_LIMITED, 'rate limit exceeded', isBinary ? ref : -1, Math.ceil(((1 - c.tokens) * 1000) / o.ratePerSec));
      return;
    }
    c.tokens -= 1;
    if (!isBinary) { this.sendErr(ws, E_BAD_FRAME, 'frames must be binary MessagePack', -1); return; }
    if (err !== 0) { this.sendErr(ws, err, f.message, f.ref); return; }
    if (this.draining) { this.sendErr(ws, E_SHUTTING_DOWN, 'engine is shutting down', f.ref); return; }
    const shard = fnv1a(u8, f.roomStart, f.roomEnd) % this.links.length;
    const link = this.links[shard]!;
    if (f.type === T_JOIN) {
      const room = asciiString(u8, f.roomStart, f.roomEnd);
      const added = !c.rooms.has(room);
      if (added) {
        if (c.rooms.size >= o.maxRoomsPerConn) { this.limitHit(c, 'too_many_rooms', now); this.sendErr(ws, E_TOO_MANY_ROOMS, `at most ${o.maxRoomsPerConn} rooms per connection`, f.ref); return; }
        c.rooms.add(room);
      }
      if (!link.writeFrame(c.id, c.user, u8, 0, c.anon, c.addr)) {
        if (added) c.rooms.delete(room);
        this.sendErr(ws, E_OVERLOADED, 'shard queue full', f.ref, 50);
      }
      return;
    }
    if (f.type === T_LEAVE) {
      const room = asciiString(u8, f.roomStart, f.roomEnd);
      if (!c.rooms.has(room)) { this.sendErr(ws, E_NOT_JOINED, `not joined to room ${room}`, f.ref); return; }
      if (link.writeFrame(c.id, null, u8, 0)) c.rooms.delete(room);
      else this.sendErr(ws, E_OVERLOADED, 'shard queue full', f.ref, 50);
      return;
    }
    // One pub in FANOUT_SAMPLE is stamped for the receipt-to-fan-out histogram.
    const stamp = f.type === T_PUB && o.metrics && (++this.fanoutCount & (FANOUT_SAMPLE - 1)) === 0 ? (nowMicros() || 1) : 0;
    if (!link.writeFrame(c.id, null, u8, stamp)) this.sendErr(ws, E_OVERLOADED, 'shard queue full', f.ref, 50);
  }

  /**
   * Closes, with 4008, every connection whose unsent data held by uWS passes maxBufferBytes.
   * Publishes fan out in C++ without telling JavaScript which subscriber fell behind, so the
   * check is a sweep: O(connections) every SLOW_SWEEP_MS, about 30 ns a connection.
   */
  private slowConsumerSweep(): void {
    const max = this.options.maxBufferBytes;
    for (const ws of this.conns.values()) {
      if (ws.getBufferedAmount() > max) this.closeSlow(ws);
    }
  }

  private closeSlow(ws: WebSocket<Conn>): void {
    const c = ws.getUserData();
    if (c.closed) return;
    this.counters.slowConsumers++;
    this.log.warn({ event: 'slow_consumer', conn: c.connStr, user: c.user, buffered: ws.getBufferedAmount() }, 'closing slow consumer');
    ws.end(CLOSE_SLOW_CONSUMER, 'slow consumer');
  }

  private limitHit(c: Conn, limit: string, now: number): void {
    if (now - c.lastLimitLog < LIMIT_LOG_MS) return;
    c.lastLimitLog = now;
    this.log.warn({ event: 'limit_hit', limit, conn: c.connStr, user: c.user }, 'connection hit a limit');
  }

  private onClose(ws: WebSocket<Conn>, code: number): void {
    const c = ws.getUserData();
    c.closed = true;
    this.counters.closedByCode.set(code, (this.counters.closedByCode.get(code) ?? 0) + 1);
    this.conns.delete(c.id);
    if (this.stopped) { c.rooms.clear(); return; }
    let told = 0n;
    for (const room of c.rooms) {
      const s = this.shardOf(room);
      const bit = 1n << BigInt(s);
      if ((told & bit) === 0n) { told |= bit; this.links[s]!.close(c.id); }
    }
    c.rooms.clear();
  }

  // ---- library API --------------------------------------------------------------------------

  /**
   * Publishes `body` to `room` from server code, as user `from` (default "server"). Resolves with
   * the message's seq and the room's epoch once the shard has assigned them (and, with a durable
   * store, committed). With `cid`, a repeat within the window resolves with the first one's seq and `dup: true`.
   */
  publish(room: string, body: unknown, opts: { from?: string; cid?: string } = {}): Promise<PublishResult> {
    if (this.draining) return Promise.reject(new EngineError('SHARDCHAT_SHUTTING_DOWN', 'engine is closing'));
    if (!isValidRoom(room)) return Promise.reject(new EngineError('SHARDCHAT_BAD_ROOM', `room must be 1..128 bytes of [A-Za-z0-9_.:@-], got ${JSON.stringify(room)}`));
    const from = opts.from ?? 'server';
    if (!isValidUser(from)) return Promise.reject(new EngineError('SHARDCHAT_BAD_BODY', `from must be 1..64 bytes of [A-Za-z0-9_.@-], got ${JSON.stringify(from)}`));
    const cid = opts.cid ?? '';
    if (opts.cid !== undefined && !isValidCid(opts.cid)) return Promise.reject(new EngineError('SHARDCHAT_BAD_BODY', `cid must be 1..64 bytes of [A-Za-z0-9_.:@-], got ${JSON.stringify(opts.cid)}`));
    let bytes: Uint8Array;
    try {
      bytes = packBody(body);
    } catch (e) {
      return Promise.reject(new EngineError('SHARDCHAT_BAD_BODY', `body cannot be encoded: ${(e as Error).message}`));
    }
    const end = skipValue(bytes, 0, bytes.byteLength, 1, this.options.maxBodyDepth);
    if (end !== bytes.byteLength) return Promise.reject(new EngineError('SHARDCHAT_BAD_BODY', `body must be plain MessagePack data nested at most ${this.options.maxBodyDepth} levels`));
    if (bytes.byteLength > this.options.maxFrameBytes) return Promise.reject(new EngineError('SHARDCHAT_BAD_BODY', `body of ${bytes.byteLength} bytes exceeds maxFrameBytes ${this.options.maxFrameBytes}`));
    const shard = this.shardOf(room);
    const req = this.nextReq++;
    if (this.nextReq > 0xffffffff) this.nextReq = 1;
    return new Promise<PublishResult>((resolve, reject) => {
      this.pending.set(req, { resolve, reject, shard });
      if (!this.links[shard]!.writeServerPub(req, room, from, bytes, cid)) {
        this.pending.delete(req);
        reject(new EngineError('SHARDCHAT_OVERLOADED', `shard ${shard} queue is full; retry`));
      }
    });
  }

  stats(): EngineStats {
    let connRooms = 0;
    for (const ws of this.conns.values()) connRooms += ws.getUserData().rooms.size;
    const shards = this.links.map(shardStats);
    return {
      connections: this.conns.size, connRooms,
      rooms: shards.reduce((a, s) => a + s.rooms, 0), members: shards.reduce((a, s) => a + s.members, 0),
      rateBuckets: this.conns.size, pendingPublishes: this.pending.size, draining: this.draining, shards,
    };
  }

  /** Test hook: makes shard `index` throw from its task ('throw') or exit its worker ('exit'). */
  _crashShard(index: number, mode: 'throw' | 'exit'): void {
    const link = this.links[index];
    if (!link) throw new RangeError(`no shard ${index}`);
    link.control(Uint8Array.of(IN_CRASH, mode === 'exit' ? CRASH_EXIT : CRASH_THROW));
  }

  /**
   * Drains and stops: refuses new upgrades (503) and requests (`shutting_down`), lets every
   * shard handle what it has queued and deliver it, closes every socket with 1001, stops the
   * workers. Resolves when nothing of the engine is left running. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= this.drain();
    return this.closing;
  }

  private async drain(): Promise<void> {
    const started = Date.now();
    this.draining = true;
    this.log.info({ event: 'drain_started', connections: this.conns.size }, 'drain started');
    await this.started.catch(() => undefined);
    for (const l of this.links) l.control(Uint8Array.of(IN_DRAIN));
    const deadline = started + this.options.drainTimeoutMs;
    // Deliver as the shards drain (the pumps do too; this also catches a shard whose task has
    // already resolved after writing OUT_DRAINED), until every shard has answered IN_DRAIN.
    for (;;) {
      for (const l of this.links) l.reader.drain(this.onOut, Infinity, this.flushAcks);
      // A shard that is not running (it failed to open its store at start) has nothing to drain.
      if (this.links.every((l) => l.drained || !l.up) || Date.now() >= deadline) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const forced = !this.links.every((l) => l.drained);
    this.stopped = true;
    if (this.sweeper) { clearInterval(this.sweeper); this.sweeper = null; }
    for (const timer of this.restartTimers) clearTimeout(timer);
    this.restartTimers.clear();
    for (const ws of [...this.conns.values()]) ws.end(CLOSE_GOING_AWAY, 'server shutting down');
    if (this.listenSocket) { this.uws.mod.us_listen_socket_close(this.listenSocket); this.listenSocket = null; }
    if (this.metricsSocket) { this.uws.mod.us_listen_socket_close(this.metricsSocket); this.metricsSocket = null; }
    this.loopDelay?.disable();
    this.loopDelay = null;
    for (const l of this.links) l.reader.wake();
    for (const [req, p] of this.pending) { this.pending.delete(req); p.reject(new EngineError('SHARDCHAT_SHUTTING_DOWN', 'engine closed before the shard answered')); }
    await this.pool.destroy();
    await Promise.allSettled(this.links.map((l) => l.task));
    for (const l of this.links) l.stop();
    // Every shard has closed its store: the directory is free for the next engine.
    this.dataLock?.release();
    this.app = null;
    if (forced) this.log.warn({ event: 'drain_forced', ms: Date.now() - started }, 'drain deadline passed; stopped what was left');
    this.log.info({ event: 'drain_finished', ms: Date.now() - started, forced }, 'drain finished');
  }
}
