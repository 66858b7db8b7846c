/**
 * The main thread: uWebSockets.js accepts every connection and does all socket I/O; each client
 * frame is validated, rate-limited and copied into its room's shard inbound ring inside the uWS
 * callback; shard output comes back through the outbound rings and becomes `send`/`publish`
 * calls on views of the ring (no copy). This facade wires the parts together and owns the
 * listener, server publishes, HTTP API requests to shards and the metrics snapshot; its parts
 * live beside it: ./connections.ts (the connection router: open, each frame, close; its upgrade
 * path in ./upgrade.ts, per-connection state in ./conn.ts), ./supervisor.ts (shard start, heartbeat, crash, back-off,
 * replay), ./outbound.ts (ring output to sockets), ./lifecycle.ts (the drain: close()'s sequence
 * and deadline), ./http.ts (/healthz, /readyz, /metrics and its own listener), ./auth-gate.ts
 * (token auth), ./api.ts (the HTTP API), ./static.ts (the chat page), ./slow-consumers.ts (the
 * 4008 bound), ./token-bucket.ts (rate limits), ./link.ts (one main <-> shard channel). The only
 * module that loads uWS is ./uws.ts.
 */
import { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { createLogger } from './log.js';
import { CHECKPOINT_BACKSTOP_PAGES, CHECKPOINT_DEFAULT_PAGES, CheckpointThread } from './checkpoints.js';
import { pack as packBody, unpack } from 'msgpackr';
import { EngineError, CLOSE_OTHER } from '../errors.js';
import { AuthGate } from './auth-gate.js';
import { BanTable } from './bans.js';
import { routeApi } from './api.js';
import { WebhookSender } from './webhooks.js';
import { eventFromShard } from './events.js';
import { S_EVENTS_DROPPED } from '../metrics/shard-stats.js';
import { type EngineOptions, type ResolvedOptions, resolveOptions } from '../options.js';
import { fnv1aString, isValidCid, isValidRoom, isValidUser } from '../protocol/frames.js';
import { skipValue } from '../protocol/msgpack.js';
import {
  ADMIN_OPS, CRASH_AFTER_PUBLISH, CRASH_EXIT, CRASH_HANG, CRASH_THROW, IN_ADMIN, IN_CRASH, IN_FRAME, IN_FRAME_BODY, IN_SERVER_PUB, getU32,
  type AdminOp,
} from '../protocol/records.js';
import { RingReader } from '../ring/index.js';
import { S_UP } from '../metrics/shard-stats.js';
import { ShardLink } from './link.js';
import { ShardSupervisor } from './supervisor.js';
import { roomsAdd, roomsDelete } from './room-set.js';
import { ConnectionRouter } from './connections.js';
import type { Conn, ConnCounters } from './conn.js';
import { OutboundDispatcher } from './outbound.js';
import { SlowConsumerGuard } from './slow-consumers.js';
import { monotonicMs } from './token-bucket.js';
import { DEFAULT_OPEN_TIMEOUT_MS, type DataDirLock, StoreError, type StoreErrorCode, lockDataDir } from '../store-dir.js';
import { type EngineStats, errorCounts, metricsShard, shardStats } from './stats.js';
import { routeStatic } from './static.js';
import { HttpSideRoutes } from './http.js';
import { type DrainHost, drain } from './lifecycle.js';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { EngineMetrics, type MetricsSnapshot } from '../metrics/prometheus.js';
import { loadUws, type TemplatedApp, type us_listen_socket } from './uws.js';


/** How long the start waits for every shard to run (plus the store's open budget on a durable store). */
const SHARD_START_MS = 10_000;

/** `dup`: the cid was published before (within the window); `seq` is that message's, and nothing new was stored. */
export interface PublishResult { seq: number; epoch: string; dup: boolean }

/** A shard's store error arrives as an Error whose message starts with the code (workers/shard.ts). */
function asStoreError(err: Error): StoreError | null {
  const m = /^(STORE_[A-Z_]+): ([\s\S]*)$/.exec(err.message);
  return m === null ? null : new StoreError(m[1] as StoreErrorCode, m[2]!);
}

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

export class Engine {
  readonly options: ResolvedOptions;
  readonly log: Logger;
  private readonly uws = loadUws();
  private readonly dataLock: DataDirLock | null;
  /** WAL checkpoints off the shards' commits (store sqlite, checkpointIntervalMs > 0); null otherwise. */
  private readonly checkpoints: CheckpointThread | null;
  /** Set once every shard ran; a store error before that fails ready() instead of restarting. */
  private shardsUp = false;
  private startError: StoreError | null = null;
  private app: TemplatedApp | null = null;
  private listenSocket: us_listen_socket | null = null;
  private boundPort = -1;
  private readonly links: ShardLink[];
  private readonly pool: Piscina;
  private readonly pending = new Map<number, { resolve: (r: PublishResult) => void; reject: (e: Error) => void; shard: number }>();
  private nextReq = 1;
  /** HTTP API requests waiting for their shard's OUT_ADMIN_REPLY (request ids shared with `pending`). */
  private readonly adminPending = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void; shard: number }>();
  private draining = false;
  private stopped = false;
  private closing: Promise<void> | null = null;
  private readonly started: Promise<void>;
  private sweeper: NodeJS.Timeout | null = null;
  private readonly supervisor: ShardSupervisor;
  private readonly outbound: OutboundDispatcher<Conn>;
  private readonly guard: SlowConsumerGuard<Conn>;
  /** Every WebSocket callback and the connections map (./connections.ts). */
  private readonly router: ConnectionRouter;
  private readonly metrics: EngineMetrics;
  /** /healthz, /readyz, /metrics (and its own listener). */
  private readonly http = new HttpSideRoutes(this.uws.mod, { links: () => this.links, draining: () => this.draining, metrics: () => this.metrics });
  /** Main-thread event-loop delay; made in listen(), so an engine that never listened holds none. */
  private loopDelay: IntervalHistogram | null = null;
  /** Room bans of the HTTP API's kick (maxBans entries). */
  readonly bans: BanTable;
  /** Webhook sender (options.webhooks); null when off, and then shards emit no events. */
  private readonly webhooks: WebhookSender | null;
  /** Counters the metrics module reads: closes by code (KNOWN_CLOSE_CODES, else CLOSE_OTHER), `err` replies by code, slow consumers closed. */
  readonly counters: ConnCounters = {
    opened: 0, closedByCode: new Map<number, number>(), errors: new Uint32Array(16), slowConsumers: 0, upgradesThrottled: 0,
    framesIn: 0,
  };

  constructor(opts: EngineOptions = {}, logger?: Logger) {
    this.options = resolveOptions(opts);
    this.log = logger ?? createLogger(this.options.logLevel, this.options.logPretty);
    const o = this.options;
    // The data directory's lock before any shard opens the store (throws a StoreError: locked, unwritable...).
    // In cluster mode Redis is the store: no data directory is locked or created.
    this.dataLock = o.store === 'sqlite' && o.cluster === null ? lockDataDir(o.dataDir) : null;
    this.checkpoints = o.store === 'sqlite' && o.cluster === null && o.checkpointIntervalMs > 0 ? new CheckpointThread(o.dataDir, o.checkpointIntervalMs, this.log) : null;
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
    this.bans = new BanTable(o.maxBans, monotonicMs);
    this.webhooks = o.webhooks === null ? null : new WebhookSender(o.webhooks, (reason, n, detail) => {
      this.log.warn({ event: 'webhook_dropped', reason, events: n, detail }, 'webhook events dropped');
    });
    this.guard = new SlowConsumerGuard<Conn>(o.maxBufferBytes, o.maxBufferBytes, (ws) => this.router.closeSlow(ws));
    this.router = new ConnectionRouter({
      options: o, log: this.log, links: this.links, bans: this.bans, counters: this.counters, guard: this.guard,
      shardOf: (room) => this.shardOf(room), draining: () => this.draining, stopped: () => this.stopped,
    });
    this.metrics = new EngineMetrics(() => this.metricsSnapshot());
    this.outbound = new OutboundDispatcher<Conn>({
      conns: this.router.conns,
      app: () => this.app,
      send: (ws, frame) => this.router.send(ws, frame),
      chargeReply: (ws, bytes) => this.router.chargeReply(ws, bytes),
      member: (ws, room, joined) => {
        const c = ws.getUserData();
        c.rooms = joined ? roomsAdd(c.rooms, room) : roomsDelete(c.rooms, room);
      },
      serverAck: (req, seq, epoch, dup) => {
        const p = this.pending.get(req);
        if (p) { this.pending.delete(req); p.resolve({ seq, epoch, dup }); }
      },
      serverError: (req, body) => {
        const p = this.pending.get(req);
        if (!p) return;
        this.pending.delete(req);
        let e: { error?: unknown; msg?: unknown; retryAfterMs?: unknown } = {};
        try { e = unpack(Buffer.from(body)) as typeof e; } catch { /* answered as internal below */ }
        const err = new EngineError(e.error === 'unavailable' ? 'SHARDCHAT_UNAVAILABLE' : 'SHARDCHAT_SHARD_RESTARTED', typeof e.msg === 'string' ? e.msg : 'publish failed');
        p.reject(typeof e.retryAfterMs === 'number' ? Object.assign(err, { retryAfterMs: e.retryAfterMs }) : err);
      },
      adminReply: (req, body) => {
        const p = this.adminPending.get(req);
        if (!p) return;
        this.adminPending.delete(req);
        // Copied out of the shared ring first: msgpackr cannot read strings from a SharedArrayBuffer view.
        try { p.resolve(unpack(Buffer.from(body))); } catch (e) { p.reject(e as Error); }
      },
      event: (room, body) => this.onEvent(room, body),
      control: (body) => this.onControl(body),
      stopped: () => this.stopped,
    }, this.guard, this.links, this.metrics.fanoutLatency, this.log);
    for (const link of this.links) link.afterWake = () => this.outbound.drainNow(link);
    this.supervisor = new ShardSupervisor(this.pool, this.links, { stallMs: o.shardStallMs, restartBudget: o.shardRestartBudget }, this.log, {
      taskOptions: () => ({
        historyLimit: o.historyLimit, maxHistBytes: o.maxHistBytes, roomTtlMs: o.roomTtlMs, maxBodyDepth: o.maxBodyDepth,
        historyBudgetBytes: o.historyBudgetBytes, maxRoomsPerShard: o.maxRoomsPerShard, roomCreateRate: o.roomCreateRate,
        roomCreateBurst: o.roomCreateBurst, maxCursorsPerRoom: o.maxCursorsPerRoom, maxCursorsPerShard: o.maxCursorsPerShard,
        store: o.store, dataDir: o.dataDir, fsync: o.fsync, historyMaxAgeMs: o.historyMaxAgeMs,
        autoCheckpointPages: this.checkpoints !== null ? CHECKPOINT_BACKSTOP_PAGES : CHECKPOINT_DEFAULT_PAGES,
        cidWindowMessages: o.cidWindowMessages, cidWindowMs: o.cidWindowMs,
        events: o.webhooks !== null,
        // Cluster mode: each shard's ClusterStore (Redis is the store; `store` is not used).
        cluster: o.cluster, drainBudgetMs: Math.max(0, Math.floor(o.drainTimeoutMs / 2)),
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
      replay: (link) => this.router.replay(link),
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
    // A durable store's first open may migrate the data directory (schema v4 -> v5 rebuilds
    // messages, ~1.6 s per million) while the sibling shards wait for its lock: shards on one
    // get the store's open budget on top of the 10 s. A migration that was cut short is rolled
    // back and would run again at every start, never finishing.
    const o = this.options;
    const durable = o.store === 'sqlite' && o.cluster === null;
    const limitMs = SHARD_START_MS + (durable ? DEFAULT_OPEN_TIMEOUT_MS : 0);
    const t0 = performance.now();
    let told = false;
    for (;;) {
      if (this.startError !== null) throw this.startError;
      if (this.links.every((l) => l.stats[S_UP] === 1)) {
        this.shardsUp = true;
        this.checkpoints?.start(); // every shard has opened (so created) the database
        for (const l of this.links) this.log.info({ event: 'shard_started', shard: l.index }, 'shard started');
        return;
      }
      const waited = performance.now() - t0;
      if (waited > limitMs) throw new EngineError('SHARDCHAT_LISTEN_FAILED', `shards did not start within ${Math.round(limitMs / 1000)} s`);
      if (durable && !told && waited > SHARD_START_MS) {
        told = true;
        this.log.warn({ event: 'shards_opening', dataDir: o.dataDir, waitedMs: Math.round(waited) },
          `shards are still opening ${o.dataDir} (a schema migration may be running: about 1.6 s per million stored messages); waiting up to ${Math.round(limitMs / 1000)} s`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  // ---- shards -------------------------------------------------------------------------------

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
        this.router.unhandledFrame(conn, b, off + IN_FRAME_BODY, off + r.length - b[off + 1]!, storeFailed);
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
    // A cluster shard marks records read when it takes them and answers later (from Redis
    // replies), so a crash can take answers of records it had read: the server publishes and API
    // requests it still owed are refused here, never left to hang. (Client requests it owed stay
    // unanswered: docs/CLUSTER.md §13.)
    if (this.options.cluster === null) return;
    const gone = (): EngineError => new EngineError('SHARDCHAT_SHARD_RESTARTED', `shard ${shard} restarted before answering this request; retry (a publish with the same cid is safe)`);
    for (const [req, p] of this.pending) if (p.shard === shard) { this.pending.delete(req); p.reject(gone()); }
    for (const [req, p] of this.adminPending) if (p.shard === shard) { this.adminPending.delete(req); p.reject(gone()); }
  }

  /** Starts listening; resolves when bound (`port` tells the port). */
  async listen(): Promise<number> {
    if (this.listenSocket) return this.boundPort;
    if (this.draining) throw new EngineError('SHARDCHAT_SHUTTING_DOWN', 'engine is closing');
    await this.started;
    const o = this.options;
    if (o.auth !== null && this.router.gate === null) this.router.gate = await AuthGate.create(o.auth);
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
      ...this.router.handlers,
    });
    this.http.routeHealth(app);
    const gate = this.router.gate;
    // /auth/check verifies a token as an upgrade does, so it shares the upgrades' admission rate.
    if (gate !== null) app.get('/auth/check', (res, req) => { if (!this.router.upgrades.throttled(res)) gate.check(res, req); });
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
      shards: st.shards.map(metricsShard), auth: this.router.gate?.stats() ?? null, checkpoints: this.checkpoints?.stats ?? null,
      webhooks: this.webhooks === null ? null : { ...this.webhooks.stats(), shardDropped: this.links.reduce((a, l) => a + l.stats[S_EVENTS_DROPPED]!, 0) },
    };
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
      this.adminPending.set(req, { resolve, reject, shard });
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
    this.tellNodes({ op: 'kick', room, user, banMs });
    return this.kickHere(room, user, banMs);
  }

  private kickHere(room: string, user: string, banMs: number): number {
    if (banMs > 0) this.bans.ban(room, user, banMs);
    return this.router.kick(room, user);
  }

  /**
   * Closes the connections of `user`, or the one named `conn` (its hello's conn), with `code`.
   * Returns how many (on this node; in cluster mode the other nodes are told of a `user` target
   * too; a `conn` names a connection of this node: conn ids are per node).
   */
  disconnect(target: { user?: string; conn?: string }, code: number, reason: string): number {
    if (target.user !== undefined) this.tellNodes({ op: 'disconnect', user: target.user, code, reason });
    return this.router.disconnect(target, code, reason);
  }

  /**
   * Cluster mode: a kick or disconnect goes to every other node over the control channel (shard 0
   * publishes it; each node's shard 0 hears it: onControl). Best effort, as Redis pub/sub is: a
   * node cut off from Redis at that moment is not told; a failure is logged.
   */
  private tellNodes(msg: Record<string, unknown>): void {
    if (this.options.cluster === null) return;
    this.admin(0, 'control', { ...msg, from: this.options.nodeId }).catch((err: Error) => {
      this.log.warn({ event: 'control_not_sent', op: msg.op, err: err.message }, 'kick/disconnect not told to the other nodes');
    });
  }

  /** A control message from the channel (OUT_CONTROL): applied here unless this node sent it. */
  private onControl(body: Uint8Array): void {
    let m: { op?: unknown; from?: unknown; room?: unknown; user?: unknown; conn?: unknown; banMs?: unknown; code?: unknown; reason?: unknown };
    try { m = JSON.parse(Buffer.from(body).toString('utf8')) as typeof m; } catch { return; }
    if (m.from === this.options.nodeId) return;
    const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
    try {
      if (m.op === 'kick' && typeof m.room === 'string' && typeof m.user === 'string') {
        this.kickHere(m.room, m.user, typeof m.banMs === 'number' ? m.banMs : 0);
      } else if (m.op === 'disconnect' && typeof m.user === 'string' && typeof m.code === 'number') {
        this.router.disconnect({ user: m.user }, m.code, str(m.reason) ?? 'disconnected by the server');
      }
    } catch (err) {
      this.log.warn({ event: 'control_failed', op: m.op, err: (err as Error).message }, 'kick/disconnect from another node not applied');
    }
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
    const shards = this.links.map(shardStats);
    const connections = this.router.conns.size;
    return {
      connections, connRooms: this.router.connRooms(),
      rooms: shards.reduce((a, s) => a + s.rooms, 0), members: shards.reduce((a, s) => a + s.members, 0),
      rateBuckets: connections, pendingPublishes: this.pending.size, draining: this.draining, shards,
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
      log: this.log, links: this.links, conns: this.router.conns, started: this.started,
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
        await this.checkpoints?.stop();
      },
      stopped: () => {
        // Every shard has closed its store: the directory is free for the next engine.
        this.dataLock?.release();
        this.app = null;
      },
    };
  }
}
