/**
 * The main thread: uWebSockets.js accepts every connection and does all socket I/O; each client
 * frame is validated, rate-limited and copied into its room's shard inbound ring inside the uWS
 * callback; shard output comes back through the outbound rings and becomes `send`/`publish`
 * calls on views of the ring (no copy). This facade owns connections, uWS topics, routing,
 * server publishes and the metrics snapshot; its parts live beside it: ./supervisor.ts (shard
 * start, heartbeat, crash, back-off, replay), ./outbound.ts (ring output to sockets),
 * ./lifecycle.ts (the drain: close()'s sequence and deadline), ./http.ts (/healthz, /readyz,
 * /metrics and its own listener), ./static.ts (the chat page), ./slow-consumers.ts (the 4008
 * bound), ./token-bucket.ts (rate limits), ./link.ts (one main <-> shard channel). The only
 * module that loads uWS is ./uws.ts.
 */
import { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { createLogger } from './log.js';
import { pack as packBody, unpack } from 'msgpackr';
import { EngineError, CLOSE_OTHER, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_BIG, KNOWN_CLOSE_CODES } from '../errors.js';
import { AuthError, identityFromHook, refusal, type Identity } from '../auth/index.js';
import { AuthGate, answerProtocol, parseRefresh, permits, type ExpirySlot } from './auth-gate.js';
import { BanTable } from './bans.js';
import { routeApi } from './api.js';
import { WebhookSender } from './webhooks.js';
import { eventFromShard } from './events.js';
import { S_EVENTS_DROPPED } from '../metrics/shard-stats.js';
import { type EngineOptions, type ResolvedOptions, resolveOptions } from '../options.js';
import {
  ClientFrame, E_BAD_FRAME, E_FORBIDDEN, E_INTERNAL, E_NOT_JOINED, E_OVERLOADED, E_RATE_LIMITED, E_SHUTTING_DOWN,
  E_TOO_MANY_ROOMS, E_UNAUTHORIZED, E_UNAVAILABLE, E_UNKNOWN_TYPE, T_JOIN, T_LEAVE, T_PUB, fnv1a, fnv1aString, isValidCid, isValidRoom, isValidUser, writeErr, writeHello,
  writeRefreshed,
  type Limits,
} from '../protocol/frames.js';
import { MsgWriter, asciiString, skipValue } from '../protocol/msgpack.js';
import {
  ADMIN_OPS, CRASH_AFTER_PUBLISH, CRASH_EXIT, CRASH_HANG, CRASH_THROW, IN_ADMIN, IN_CRASH, IN_FRAME, IN_FRAME_BODY, IN_SERVER_PUB, addrHash, getU32,
  type AdminOp,
} from '../protocol/records.js';
import { RingReader } from '../ring/index.js';
import { S_UP } from '../metrics/shard-stats.js';
import { ShardLink } from './link.js';
import { ShardSupervisor } from './supervisor.js';
import { OutboundDispatcher, nowMicros } from './outbound.js';
import { SlowConsumerGuard } from './slow-consumers.js';
import { type BucketState, TokenBucketPolicy, monotonicMs } from './token-bucket.js';
import { type DataDirLock, StoreError, type StoreErrorCode, lockDataDir } from '../store-dir.js';
import { type EngineStats, errorCounts, metricsShard, shardStats } from './stats.js';
import { checkUserQuery } from '../protocol/identity.js';
import { routeStatic } from './static.js';
import { HttpSideRoutes } from './http.js';
import { type DrainHost, drain } from './lifecycle.js';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { EngineMetrics, type MetricsSnapshot } from '../metrics/prometheus.js';
import { loadUws, type HttpRequest, type HttpResponse, type TemplatedApp, type WebSocket, type us_listen_socket } from './uws.js';

/** Per-socket state, held by uWS as the socket's user data. */
interface Conn extends ExpirySlot {
  /** The token's (or authenticate hook's) identity: permissions and expiry; null in open mode. */
  identity: Identity | null;
  id: number;
  connStr: string;
  user: string;
  /** No identity (`anon-<conn>`): the shard drops its cursors on leave and limits room creation by `addr`. */
  anon: boolean;
  /** A hash of the client address (the room-creation principal of an anonymous user). */
  addr: number;
  /** Rooms this connection joined (and has not left), as the main thread routed them. */
  rooms: Set<string>;
  /** uWS topics the socket is subscribed to (kept by SlowConsumerGuard). */
  topics: Set<string>;
  /** The frame-rate token bucket (policy: Engine.rate). */
  bucket: BucketState;
  closed: boolean;
  /** When (monotonic ms) this connection's last "limit hit" line was logged (at most one per LIMIT_LOG_MS). */
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

/**
 * uWS holds an incoming message until its last byte, up to its maxPayloadLength, and drops the
 * socket (no close frame; close handler code 1006) as soon as a frame header announces more.
 * So what one connection can make it hold is maxFrameBytes + FRAME_SLACK; a message in between
 * reaches onMessage and gets 1009 with a close frame.
 */
export const FRAME_SLACK = 4096;
/** How often recently published-to connections are re-checked against maxBufferBytes (see SlowConsumerGuard). */
const SLOW_SWEEP_MS = 100;
/** Young-generation cap of a shard worker (see the Piscina options). */
const SHARD_YOUNG_GEN_MB = 4;
/** A connection that keeps hitting a limit is logged at most once per this interval. */
const LIMIT_LOG_MS = 10_000;
/** One pub in FANOUT_SAMPLE (a power of two) is stamped at receipt and timed to its fan-out. */
const FANOUT_SAMPLE = 16;

export class Engine {
  readonly options: ResolvedOptions;
  readonly log: Logger;
  private readonly uws = loadUws();
  private readonly dataLock: DataDirLock | null;
  /** Set once every shard ran; a store error before that fails ready() instead of restarting. */
  private shardsUp = false;
  private startError: StoreError | null = null;
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
  /** HTTP API requests waiting for their shard's OUT_ADMIN_REPLY (request ids shared with `pending`). */
  private readonly adminPending = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>();
  private draining = false;
  private stopped = false;
  private closing: Promise<void> | null = null;
  private readonly started: Promise<void>;
  private sweeper: NodeJS.Timeout | null = null;
  private readonly supervisor: ShardSupervisor;
  private readonly outbound: OutboundDispatcher<Conn>;
  private readonly guard: SlowConsumerGuard<Conn>;
  /** Per-connection frame rate (ratePerSec, rateBurst) on the monotonic clock. */
  private readonly rate: TokenBucketPolicy;
  /** New connections a second (upgradeRatePerSec; null = unlimited), one bucket for the engine. */
  private readonly admission: TokenBucketPolicy | null;
  private readonly admitted: BucketState;
  private fanoutCount = 0;
  private readonly metrics: EngineMetrics;
  /** /healthz, /readyz, /metrics (and its own listener). */
  private readonly http = new HttpSideRoutes(this.uws.mod, { links: () => this.links, draining: () => this.draining, metrics: () => this.metrics });
  /** Main-thread event-loop delay; made in listen(), so an engine that never listened holds none. */
  private loopDelay: IntervalHistogram | null = null;
  /** Upgrades waiting on an async authenticate hook: they count against maxConnections. */
  private authPending = 0;
  /** Token auth (options.auth): made in listen(), null when off. */
  private gate: AuthGate | null = null;
  /** Room bans of the HTTP API's kick (maxBans entries). */
  readonly bans: BanTable;
  /** Webhook sender (options.webhooks); null when off, and then shards emit no events. */
  private readonly webhooks: WebhookSender | null;
  /** Counters the metrics module reads: closes by code (KNOWN_CLOSE_CODES, else CLOSE_OTHER), `err` replies by code, slow consumers closed. */
  readonly counters = {
    opened: 0, closedByCode: new Map<number, number>(), errors: new Uint32Array(16), slowConsumers: 0, upgradesThrottled: 0,
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
    this.rate = new TokenBucketPolicy(o.ratePerSec, o.rateBurst, monotonicMs);
    this.admission = o.upgradeRatePerSec === 0 ? null : new TokenBucketPolicy(o.upgradeRatePerSec, o.upgradeRatePerSec, monotonicMs);
    this.admitted = this.admission?.full() ?? { tokens: 0, last: 0 };
    this.bans = new BanTable(o.maxBans, monotonicMs);
    this.webhooks = o.webhooks === null ? null : new WebhookSender(o.webhooks, (reason, n, detail) => {
      this.log.warn({ event: 'webhook_dropped', reason, events: n, detail }, 'webhook events dropped');
    });
    this.guard = new SlowConsumerGuard<Conn>(o.maxBufferBytes, o.maxBufferBytes, (ws) => this.closeSlow(ws));
    this.metrics = new EngineMetrics(() => this.metricsSnapshot());
    this.outbound = new OutboundDispatcher<Conn>({
      conns: this.conns,
      app: () => this.app,
      send: (ws, frame) => this.send(ws, frame),
      chargeReply: (ws, bytes) => this.chargeReply(ws, bytes),
      member: (ws, room, joined) => {
        const rooms = ws.getUserData().rooms;
        if (joined) rooms.add(room); else rooms.delete(room);
      },
      serverAck: (req, seq, epoch, dup) => {
        const p = this.pending.get(req);
        if (p) { this.pending.delete(req); p.resolve({ seq, epoch, dup }); }
      },
      adminReply: (req, body) => {
        const p = this.adminPending.get(req);
        if (!p) return;
        this.adminPending.delete(req);
        // Copied out of the shared ring first: msgpackr cannot read strings from a SharedArrayBuffer view.
        try { p.resolve(unpack(Buffer.from(body))); } catch (e) { p.reject(e as Error); }
      },
      event: (room, body) => this.onEvent(room, body),
      stopped: () => this.stopped,
    }, this.guard, this.links, this.metrics.fanoutLatency, this.log);
    this.supervisor = new ShardSupervisor(this.pool, this.links, { stallMs: o.shardStallMs, restartBudget: o.shardRestartBudget }, this.log, {
      taskOptions: () => ({
        historyLimit: o.historyLimit, maxHistBytes: o.maxHistBytes, roomTtlMs: o.roomTtlMs, maxBodyDepth: o.maxBodyDepth,
        historyBudgetBytes: o.historyBudgetBytes, maxRoomsPerShard: o.maxRoomsPerShard, roomCreateRate: o.roomCreateRate,
        roomCreateBurst: o.roomCreateBurst, maxCursorsPerRoom: o.maxCursorsPerRoom, maxCursorsPerShard: o.maxCursorsPerShard,
        store: o.store, dataDir: o.dataDir, fsync: o.fsync, historyMaxAgeMs: o.historyMaxAgeMs,
        cidWindowMessages: o.cidWindowMessages, cidWindowMs: o.cidWindowMs,
        events: o.webhooks !== null,
      }),
      crashCause: (err) => {
        const storeErr = asStoreError(err);
        if (storeErr === null) return 'crash';
        // A data directory a shard cannot open at start (corrupt, newer schema...) fails createEngine: no fresh start.
        if (!this.shardsUp) { this.startError ??= storeErr; return 'fatal'; }
        return 'store';
      },
      deliverAll: (link) => this.outbound.deliverAll(link),
      failUnhandled: (inbound, shard, handledUpTo, storeFailed) => this.failUnhandled(inbound, shard, handledUpTo, storeFailed),
      replay: (link) => this.replay(link),
      pump: (link, gen) => { void this.outbound.pump(link, gen); },
      draining: () => this.draining,
      stopped: () => this.stopped,
    });
    this.supervisor.startAll();
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

  /** Replays the memberships of a restarted shard's rooms (the main thread's view of them). */
  private replay(link: ShardLink): void {
    for (const ws of this.conns.values()) {
      const c = ws.getUserData();
      for (const room of c.rooms) if (this.shardOf(room) === link.index) link.replay(c.id, c.user, room, c.anon);
    }
  }

  /**
   * Answers every request left unhandled in a dead shard's inbound ring with `internal`
   * (`unavailable` after a store failure: nothing of the batch was kept). Records the shard had
   * already answered (its output published, but it died before marking them read: up to
   * `handledUpTo`) are skipped, so no request is answered twice.
   */
  private failUnhandled(inbound: SharedArrayBuffer, shard: number, handledUpTo: number | null, storeFailed: boolean): void {
    const r = new RingReader(inbound);
    while (r.next() >= 0) {
      if (handledUpTo !== null && ((handledUpTo - r.peekPosition) | 0) >= 0) { r.release(); continue; }
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
      } else if (b[off] === IN_ADMIN) {
        const req = getU32(b, off + 1);
        const p = this.adminPending.get(req);
        if (p) { this.adminPending.delete(req); p.reject(new EngineError('SHARDCHAT_SHARD_RESTARTED', `shard ${shard} restarted before handling this request; retry`)); }
      }
      r.release();
    }
  }

  // ---- sockets ------------------------------------------------------------------------------

  /** Starts listening; resolves when bound (`port` tells the port). */
  async listen(): Promise<number> {
    if (this.listenSocket) return this.boundPort;
    if (this.draining) throw new EngineError('SHARDCHAT_SHUTTING_DOWN', 'engine is closing');
    await this.started;
    const o = this.options;
    if (o.auth !== null && this.gate === null) this.gate = await AuthGate.create(o.auth);
    const app = this.uws.mod.App();
    this.app = app;
    app.ws<Conn>('/ws', {
      maxPayloadLength: o.maxFrameBytes + FRAME_SLACK,
      // No uWS limit: one firing inside the C++ fan-out would drop the socket without a close
      // frame. SlowConsumerGuard keeps every buffer bounded and closes with 4008 instead.
      maxBackpressure: 0,
      closeOnBackpressureLimit: 0,
      idleTimeout: o.idleTimeoutSec === 0 ? 0 : Math.max(8, o.idleTimeoutSec),
      sendPingsAutomatically: true,
      upgrade: (res, req, ctx) => this.onUpgrade(res, req, ctx),
      open: (ws) => this.onOpen(ws),
      message: (ws, msg, isBinary) => this.onMessage(ws, msg, isBinary),
      close: (ws, code) => this.onClose(ws, code),
    });
    this.http.routeHealth(app);
    const gate = this.gate;
    // /auth/check verifies a token as an upgrade does, so it shares the upgrades' admission rate.
    if (gate !== null) app.get('/auth/check', (res, req) => { if (!this.throttled(res)) gate.check(res, req); });
    if (o.apiKey !== null) routeApi(app, this, o.apiKey, o.apiMaxBodyBytes, this.log);
    if (o.metrics && o.metricsPort === -1) this.http.routeMetrics(app);
    if (o.web) routeStatic(app);
    app.any('/*', (res) => { res.writeStatus('404 Not Found').end('not found'); });
    await new Promise<void>((resolve, reject) => {
      app.listen(o.host, o.port, (ls) => {
        if (!ls) { reject(new EngineError('SHARDCHAT_LISTEN_FAILED', `cannot listen on ${o.host}:${o.port}`)); return; }
        this.listenSocket = ls;
        this.boundPort = this.uws.mod.us_socket_local_port(ls);
        resolve();
      });
    });
    if (o.metrics && o.metricsPort >= 0) await this.http.listenMetrics(o.metricsHost, o.metricsPort);
    this.loopDelay = monitorEventLoopDelay({ resolution: 10 });
    this.loopDelay.enable();
    this.sweeper = setInterval(() => this.guard.timerSweep(), SLOW_SWEEP_MS);
    this.log.info({ event: 'listening', host: o.host, port: this.boundPort, shards: this.links.length, uws: this.uws.from }, 'listening');
    return this.boundPort;
  }

  /** Port of the separate /metrics listener, or -1 when /metrics is on the main port. */
  get metricsPort(): number {
    return this.http.metricsPort;
  }

  /** The numbers /metrics shows, read from the same places as stats(). */
  metricsSnapshot(): MetricsSnapshot {
    const st = this.stats();
    const lag = this.loopDelay === null ? 0 : this.loopDelay.percentile(99) / 1e9;
    this.loopDelay?.reset();
    return {
      connections: st.connections, opened: this.counters.opened,
      closedByCode: new Map([...this.counters.closedByCode].map(([code, n]) => [code === CLOSE_OTHER ? 'other' : String(code), n])),
      framesIn: this.counters.framesIn, errors: errorCounts(this.counters.errors, this.links),
      slowConsumers: this.counters.slowConsumers, upgradesThrottled: this.counters.upgradesThrottled, mainLoopLagSeconds: Number.isFinite(lag) ? lag : 0,
      shards: st.shards.map(metricsShard), auth: this.gate?.stats() ?? null,
      webhooks: this.webhooks === null ? null : { ...this.webhooks.stats(), shardDropped: this.links.reduce((a, l) => a + l.stats[S_EVENTS_DROPPED]!, 0) },
    };
  }

  /** Takes an admission token (upgradeRatePerSec); without one, answers 503 + Retry-After and returns true. */
  private throttled(res: HttpResponse): boolean {
    if (this.admission === null) return false;
    const wait = this.admission.take(this.admitted);
    if (wait <= 0) return false;
    this.counters.upgradesThrottled++;
    res.writeStatus('503 Service Unavailable').writeHeader('retry-after', String(Math.ceil(wait / 1000))).writeHeader('content-type', 'text/plain').end('too many new connections; retry after Retry-After seconds');
    return true;
  }

  private onUpgrade(res: HttpResponse, req: HttpRequest, ctx: unknown): void {
    if (this.draining) { res.writeStatus('503 Service Unavailable').end('shutting down'); return; }
    if (this.throttled(res)) return;
    if (this.conns.size + this.authPending >= this.options.maxConnections) { res.writeStatus('503 Service Unavailable').end('too many connections'); return; }
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const query = req.getQuery() ?? '';
    if (this.gate !== null) { this.upgradeWithToken(this.gate, res, key, protocol, extensions, query, ctx); return; }
    const auth = this.options.authenticate;
    if (auth === null) {
      const q = checkUserQuery(query);
      if (q.error !== undefined) { res.writeStatus('400 Bad Request').writeHeader('content-type', 'text/plain').end(q.error); return; }
      this.upgrade(res, q.user, null, key, answerProtocol(protocol), extensions, ctx);
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
      // Anything but { user: valid id, rooms?, info?, exp? } (null, undefined, a bad id, a bad
      // rooms list) refuses the upgrade with 401.
      let identity: Identity | null = null;
      if (result !== null && typeof result === 'object') {
        try {
          identity = identityFromHook(result as { user: string }, this.options.auth?.maxInfoBytes);
        } catch (e) {
          if (!(e instanceof AuthError)) throw e;
          this.log.warn({ event: 'auth_error', err: e.detail }, 'authenticate returned a bad identity');
        }
      }
      res.cork(() => {
        if (identity === null) { res.writeStatus('401 Unauthorized').end('unauthorized'); return; }
        if (this.draining) { res.writeStatus('503 Service Unavailable').end('shutting down'); return; }
        if (this.conns.size >= this.options.maxConnections) { res.writeStatus('503 Service Unavailable').end('too many connections'); return; }
        this.upgrade(res, identity.user, identity, key, answerProtocol(protocol), extensions, ctx);
      });
    })();
  }

  /** Token auth: `?user=` names no one; the token's `sub` is the user (docs/AUTH.md). */
  private upgradeWithToken(gate: AuthGate, res: HttpResponse, key: string, protocol: string, extensions: string, query: string, ctx: unknown): void {
    let aborted = false;
    res.onAborted(() => { aborted = true; });
    this.authPending++;
    void (async () => {
      let answer: { identity: Identity; protocol: string } | AuthError;
      try {
        answer = await gate.verifyUpgrade(protocol, query);
      } catch (e) {
        answer = e instanceof AuthError ? e : new AuthError('invalid', (e as Error).message);
      } finally {
        this.authPending--;
      }
      if (aborted) return;
      res.cork(() => {
        if (answer instanceof AuthError) {
          const r = refusal(answer);
          res.writeStatus(r.status).writeHeader('content-type', 'application/json').end(r.body);
          return;
        }
        if (this.draining) { res.writeStatus('503 Service Unavailable').end('shutting down'); return; }
        if (this.conns.size >= this.options.maxConnections) { res.writeStatus('503 Service Unavailable').end('too many connections'); return; }
        // Answer the one protocol extractToken chose (`shardchat.v1`), never the bearer entry.
        this.upgrade(res, answer.identity.user, answer.identity, key, answer.protocol, extensions, ctx);
      });
    })();
  }

  private upgrade(res: HttpResponse, user: string | null, identity: Identity | null, key: string, protocol: string, extensions: string, ctx: unknown): void {
    const id = this.nextConn++;
    if (this.nextConn > 0xffffffff) this.nextConn = 1;
    const connStr = `c${id.toString(36)}`;
    const data: Conn = {
      id, connStr, user: user ?? `anon-${connStr}`, anon: user === null, identity, expiryTimer: null,
      addr: addrHash(Buffer.from(res.getRemoteAddressAsText()).toString('latin1')), rooms: new Set(), topics: new Set(),
      bucket: this.rate.full(), closed: false, lastLimitLog: -Infinity,
    };
    res.upgrade(data, key, protocol, extensions, ctx as never);
  }

  private onOpen(ws: WebSocket<Conn>): void {
    const c = ws.getUserData();
    this.conns.set(c.id, ws);
    this.counters.opened++;
    if (c.identity !== null) this.armExpiry(ws, c.identity);
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

  /**
   * A direct reply (`hist`, `who`, `joined` with `missed`) costs its connection one more token
   * per replyBytesPerToken bytes, taken when it is sent (the bucket may go down to -rateBurst):
   * one token would otherwise pull up to maxHistBytes. Smaller replies cost nothing extra.
   */
  private chargeReply(ws: WebSocket<Conn>, bytes: number): void {
    const cost = Math.floor(bytes / this.options.replyBytesPerToken);
    if (cost > 0) this.rate.charge(ws.getUserData().bucket, cost);
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
    const wait = this.rate.take(c.bucket);
    const now = c.bucket.last;
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
    if (this.draining) { this.sendErr(ws, E_SHUTTING_DOWN, 'engine is shutting down', f.ref); return; }
    if (c.identity !== null && c.identity.rooms !== null && !permits(c.identity, f.type, asciiString(u8, f.roomStart, f.roomEnd))) {
      this.sendErr(ws, E_FORBIDDEN, `your token does not allow this in room ${asciiString(u8, f.roomStart, f.roomEnd)}`, f.ref);
      return;
    }
    const shard = fnv1a(u8, f.roomStart, f.roomEnd) % this.links.length;
    const link = this.links[shard]!;
    if (link.failed) { this.sendErr(ws, E_INTERNAL, `shard ${shard} failed; its rooms are unavailable until the engine restarts`, f.ref); return; }
    if (f.type === T_JOIN) {
      const room = asciiString(u8, f.roomStart, f.roomEnd);
      if (this.bans.size > 0) {
        const left = this.bans.remaining(room, c.user);
        if (left > 0) { this.sendErr(ws, E_FORBIDDEN, `banned from room ${room}`, f.ref, left); return; }
      }
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
    AuthGate.disarm(c);
    const key = KNOWN_CLOSE_CODES.has(code) ? code : CLOSE_OTHER;
    this.counters.closedByCode.set(key, (this.counters.closedByCode.get(key) ?? 0) + 1);
    this.conns.delete(c.id);
    this.guard.closed(ws);
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
    if (this.links[shard]!.failed) return Promise.reject(new EngineError('SHARDCHAT_SHARD_FAILED', `shard ${shard} failed (restart budget spent); its rooms are unavailable until the engine restarts`));
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

  /**
   * Asks shard `shard` an HTTP API question (workers/admin.ts); resolves with its decoded reply.
   * Rejects with EngineError when the shard failed, its queue is full, or the engine closes.
   */
  admin(shard: number, op: AdminOp, args: Record<string, unknown>): Promise<unknown> {
    if (this.draining) return Promise.reject(new EngineError('SHARDCHAT_SHUTTING_DOWN', 'engine is closing'));
    const link = this.links[shard];
    if (link === undefined) return Promise.reject(new RangeError(`no shard ${shard}`));
    if (link.failed) return Promise.reject(new EngineError('SHARDCHAT_SHARD_FAILED', `shard ${shard} failed (restart budget spent)`));
    const req = this.nextReq++;
    if (this.nextReq > 0xffffffff) this.nextReq = 1;
    return new Promise<unknown>((resolve, reject) => {
      this.adminPending.set(req, { resolve, reject });
      if (!link.writeAdmin(req, ADMIN_OPS.indexOf(op), Buffer.from(JSON.stringify(args)))) {
        this.adminPending.delete(req);
        reject(new EngineError('SHARDCHAT_OVERLOADED', `shard ${shard} queue is full; retry`));
      }
    });
  }

  /**
   * Removes every connection of `user` from `room` (each gets an unsolicited `left`, as if it
   * had left) and, when `banMs` > 0, refuses that user's joins of it with `forbidden` until the
   * ban ends. Resolves with the number of connections removed.
   */
  kick(room: string, user: string, banMs = 0): number {
    if (banMs > 0) this.bans.ban(room, user, banMs);
    const leave = packBody({ t: 'leave', room }) as Uint8Array;
    const link = this.links[this.shardOf(room)]!;
    let n = 0;
    for (const ws of this.conns.values()) {
      const c = ws.getUserData();
      if (c.user !== user || !c.rooms.has(room) || c.closed) continue;
      if (!link.writeFrame(c.id, null, leave, 0)) throw new EngineError('SHARDCHAT_OVERLOADED', 'shard queue full; retry');
      c.rooms.delete(room);
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

  /** A shard's OUT_EVENT (only with webhooks on): decoded and queued to the webhook sender. */
  private onEvent(room: string, body: Uint8Array): void {
    if (this.webhooks === null) return;
    try {
      this.webhooks.emit(eventFromShard(room, body));
    } catch (err) {
      this.log.error({ event: 'webhook_event_bad', err: (err as Error).message }, 'shard event cannot be sent');
    }
  }

  /** The shard count (rooms are spread over them by shardOf). */
  get shardCount(): number {
    return this.links.length;
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

  /**
   * Test hook: makes shard `index` throw from its task ('throw'), exit its worker ('exit'), loop
   * forever ('hang'), or exit right after publishing the output of its next published message,
   * before marking that input read ('after-publish').
   */
  _crashShard(index: number, mode: 'throw' | 'exit' | 'hang' | 'after-publish'): void {
    const link = this.links[index];
    if (!link) throw new RangeError(`no shard ${index}`);
    const code = { throw: CRASH_THROW, exit: CRASH_EXIT, hang: CRASH_HANG, 'after-publish': CRASH_AFTER_PUBLISH }[mode];
    link.control(Uint8Array.of(IN_CRASH, code));
  }

  /**
   * Drains and stops: refuses new upgrades (503) and requests (`shutting_down`), lets every
   * shard handle what it has queued and deliver it, closes every socket with 1001, stops the
   * workers (./lifecycle.ts). Resolves when nothing of the engine is left running. Safe to call twice.
   */
  close(): Promise<void> {
    return (this.closing ??= drain(this.drainHost()));
  }

  /** The engine as the drain sees it (./lifecycle.ts runs the sequence; the state stays here). */
  private drainHost(): DrainHost<Conn> {
    return {
      log: this.log, links: this.links, conns: this.conns, started: this.started,
      drainTimeoutMs: this.options.drainTimeoutMs, drainSpreadMs: this.options.drainSpreadMs,
      beginDrain: () => { this.draining = true; },
      deliverAll: (link) => this.outbound.deliverAll(link),
      stopShards: () => {
        this.stopped = true;
        this.supervisor.stop();
        if (this.sweeper) { clearInterval(this.sweeper); this.sweeper = null; }
      },
      closeListeners: () => {
        if (this.listenSocket) { this.uws.mod.us_listen_socket_close(this.listenSocket); this.listenSocket = null; }
        const metricsApp = this.http.closeMetrics();
        return [this.app, metricsApp].filter((a): a is TemplatedApp => a !== null);
      },
      stopLoopDelay: () => { this.loopDelay?.disable(); this.loopDelay = null; },
      rejectPending: () => {
        for (const [req, p] of this.pending) { this.pending.delete(req); p.reject(new EngineError('SHARDCHAT_SHUTTING_DOWN', 'engine closed before the shard answered')); }
        for (const [req, p] of this.adminPending) { this.adminPending.delete(req); p.reject(new EngineError('SHARDCHAT_SHUTTING_DOWN', 'engine closed before the shard answered')); }
      },
      destroyPool: async () => {
        // The webhook sender flushes what the drain produced (within its own deadline) first.
        if (this.webhooks !== null) await this.webhooks.close();
        await this.pool.destroy();
      },
      stopped: () => {
        // Every shard has closed its store: the directory is free for the next engine.
        this.dataLock?.release();
        this.app = null;
      },
    };
  }
}
