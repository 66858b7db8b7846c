/**
 * Prometheus exposition with prom-client. Nothing here runs on the hot path: every gauge and
 * counter is filled at scrape time from a snapshot the engine builds out of numbers it keeps
 * anyway (its own counters and the shards' shared-memory stats). The one exception is the
 * receipt-to-fan-out histogram, which the engine observes for a sample of publishes.
 *
 * Node's default process metrics are registered once per process (prom-client's event-loop
 * monitor cannot be stopped, so one per engine would leak in a process that makes many engines).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface ShardSnapshot {
  index: number;
  up: boolean;
  restarts: number;
  /** Restart budget spent: the shard is not restarted. */
  failed: boolean;
  /** Times the shard was terminated because its heartbeat stopped. */
  stalls: number;
  rooms: number;
  members: number;
  presentUsers: number;
  published: number;
  delivered: number;
  inboundDepth: number;
  outboundDepth: number;
  inboundHighWater: number;
  outboundHighWater: number;
  loopLagMs: number;
  heapUsed: number;
  overloaded: number;
  /** History bytes charged against historyBudgetBytes. */
  historyBytes: number;
  /** The shard's store can serve requests (cluster mode: Redis answers and pub/sub delivers; always true single-node). */
  storeHealthy: boolean;
}

export interface MetricsSnapshot {
  connections: number;
  opened: number;
  /** Closes by label: a close code, or `other` (the engine bounds the labels). */
  closedByCode: ReadonlyMap<string, number>;
  framesIn: number;
  /** err replies by wire code. */
  errors: ReadonlyMap<string, number>;
  slowConsumers: number;
  /** Upgrades refused by the admission rate (upgradeRatePerSec). */
  upgradesThrottled: number;
  mainLoopLagSeconds: number;
  shards: readonly ShardSnapshot[];
  /** Token auth's counters (engine/auth verifier.stats()); null or absent when token auth is off. */
  /** Webhook sender counters (engine/server/webhooks.ts stats()) and events shards dropped; null when off. */
  webhooks?: { queued: number; queuedBytes: number; inFlight: number; delivered: number; batches: number; attempts: number; failedAttempts: number;
    dropped: Readonly<Record<string, number>>; shardDropped: number } | null;
  auth?: { verified: number; refused: Readonly<Record<string, number>>; cache: { entries: number; bytes: number; hits: number; misses: number } } | null;
}

let processRegistry: Registry | null = null;
function processMetrics(): Registry {
  if (processRegistry === null) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export class EngineMetrics {
  readonly registry = new Registry();
  readonly fanoutLatency: Histogram;
  private snap: MetricsSnapshot | null = null;
  private readonly take: () => MetricsSnapshot;

  constructor(snapshot: () => MetricsSnapshot) {
    const r = this.registry;
    this.take = snapshot;
    // Every collect() of one scrape reads the same snapshot, taken in text().
    const get = (): MetricsSnapshot => (this.snap ??= snapshot());
    const perShard = (name: string, help: string, pick: (s: ShardSnapshot) => number, counter = false): void => {
      const cfg = {
        name, help, labelNames: ['shard'] as const, registers: [r],
        collect(this: Gauge<'shard'> | Counter<'shard'>) {
          this.reset();
          for (const s of get().shards) {
            if (this instanceof Gauge) this.set({ shard: String(s.index) }, pick(s));
            else this.inc({ shard: String(s.index) }, pick(s));
          }
        },
      };
      if (counter) new Counter(cfg); else new Gauge(cfg);
    };
    new Gauge({ name: 'shardchat_connections', help: 'Open WebSocket connections', registers: [r],
      collect() { this.set(get().connections); } });
    new Counter({ name: 'shardchat_connections_opened_total', help: 'WebSocket connections opened', registers: [r],
      collect() { this.reset(); this.inc(get().opened); } });
    new Counter({ name: 'shardchat_connections_closed_total', help: 'WebSocket connections closed, by close code', labelNames: ['code'], registers: [r],
      collect() { this.reset(); for (const [code, n] of get().closedByCode) this.inc({ code }, n); } });
    new Counter({ name: 'shardchat_messages_received_total', help: 'Client frames received', registers: [r],
      collect() { this.reset(); this.inc(get().framesIn); } });
    new Counter({ name: 'shardchat_errors_total', help: 'err replies sent, by code', labelNames: ['code'], registers: [r],
      collect() { this.reset(); for (const [code, n] of get().errors) this.inc({ code }, n); } });
    new Counter({ name: 'shardchat_rate_limited_total', help: 'Frames refused by the rate limit', registers: [r],
      collect() { this.reset(); this.inc(get().errors.get('rate_limited') ?? 0); } });
    new Counter({ name: 'shardchat_overloaded_total', help: 'Requests refused because a shard queue was full', registers: [r],
      collect() { this.reset(); this.inc(get().errors.get('overloaded') ?? 0); } });
    new Counter({ name: 'shardchat_slow_consumers_total', help: 'Connections closed with 4008 (slow consumer)', registers: [r],
      collect() { this.reset(); this.inc(get().slowConsumers); } });
    new Counter({ name: 'shardchat_upgrades_throttled_total', help: 'Upgrades refused with 503 + Retry-After by the admission rate (upgradeRatePerSec)', registers: [r],
      collect() { this.reset(); this.inc(get().upgradesThrottled); } });
    // Token auth (docs/AUTH.md): present only when it is on.
    new Counter({ name: 'shardchat_auth_verified_total', help: 'Tokens accepted (upgrade, refresh, /auth/check)', registers: [r],
      collect() { this.reset(); const a = get().auth; if (a) this.inc(a.verified); } });
    new Counter({ name: 'shardchat_auth_refused_total', help: 'Tokens refused, by reason', labelNames: ['reason'], registers: [r],
      collect() { this.reset(); const a = get().auth; if (a) for (const [reason, n] of Object.entries(a.refused)) this.inc({ reason }, n); } });
    new Gauge({ name: 'shardchat_auth_token_cache_entries', help: 'Verified tokens cached', registers: [r],
      collect() { this.set(get().auth?.cache.entries ?? 0); } });
    new Gauge({ name: 'shardchat_auth_token_cache_bytes', help: 'Bytes of token strings cached', registers: [r],
      collect() { this.set(get().auth?.cache.bytes ?? 0); } });
    new Counter({ name: 'shardchat_auth_token_cache_hits_total', help: 'Token verifications answered by the cache', registers: [r],
      collect() { this.reset(); this.inc(get().auth?.cache.hits ?? 0); } });
    new Counter({ name: 'shardchat_auth_token_cache_misses_total', help: 'Token verifications the cache could not answer', registers: [r],
      collect() { this.reset(); this.inc(get().auth?.cache.misses ?? 0); } });
    // Webhooks (docs/API.md): present only when they are on.
    new Gauge({ name: 'shardchat_webhook_queue_events', help: 'Webhook events waiting to be sent', registers: [r],
      collect() { this.set(get().webhooks?.queued ?? 0); } });
    new Gauge({ name: 'shardchat_webhook_queue_bytes', help: 'Bytes of webhook events waiting to be sent', registers: [r],
      collect() { this.set(get().webhooks?.queuedBytes ?? 0); } });
    new Counter({ name: 'shardchat_webhook_events_total', help: 'Webhook events by outcome (delivered, dropped_<reason>)', labelNames: ['outcome'], registers: [r],
      collect() {
        this.reset();
        const w = get().webhooks;
        if (!w) return;
        this.inc({ outcome: 'delivered' }, w.delivered);
        for (const [reason, n] of Object.entries(w.dropped)) this.inc({ outcome: `dropped_${reason}` }, n);
        this.inc({ outcome: 'dropped_shard_ring' }, w.shardDropped);
      } });
    new Counter({ name: 'shardchat_webhook_requests_total', help: 'Webhook POSTs by result', labelNames: ['result'], registers: [r],
      collect() {
        this.reset();
        const w = get().webhooks;
        if (!w) return;
        this.inc({ result: 'ok' }, w.batches);
        this.inc({ result: 'failed' }, w.failedAttempts);
      } });
    new Gauge({ name: 'shardchat_event_loop_lag_seconds', help: 'Event-loop lag, main thread and each shard', labelNames: ['thread'], registers: [r],
      collect() {
        this.reset();
        const s = get();
        this.set({ thread: 'main' }, s.mainLoopLagSeconds);
        for (const sh of s.shards) this.set({ thread: `shard-${sh.index}` }, sh.loopLagMs / 1000);
      } });
    new Gauge({ name: 'shardchat_ring_depth_bytes', help: 'Bytes queued in a ring', labelNames: ['shard', 'direction'], registers: [r],
      collect() {
        this.reset();
        for (const s of get().shards) {
          this.set({ shard: String(s.index), direction: 'inbound' }, s.inboundDepth);
          this.set({ shard: String(s.index), direction: 'outbound' }, s.outboundDepth);
        }
      } });
    new Gauge({ name: 'shardchat_ring_high_water_bytes', help: 'Most bytes seen queued in a ring', labelNames: ['shard', 'direction'], registers: [r],
      collect() {
        this.reset();
        for (const s of get().shards) {
          this.set({ shard: String(s.index), direction: 'inbound' }, s.inboundHighWater);
          this.set({ shard: String(s.index), direction: 'outbound' }, s.outboundHighWater);
        }
      } });
    perShard('shardchat_shard_up', '1 while the shard runs', (s) => (s.up ? 1 : 0));
    perShard('shardchat_store_healthy', '1 while the shard\'s store serves requests (cluster mode: Redis answers and pub/sub delivers; /readyz is 503 while any is 0)', (s) => (s.storeHealthy ? 1 : 0));
    perShard('shardchat_rooms', 'Rooms with state, per shard', (s) => s.rooms);
    perShard('shardchat_members', 'Room memberships (connection x room), per shard', (s) => s.members);
    perShard('shardchat_present_users', 'Presence entries (user x room), per shard', (s) => s.presentUsers);
    perShard('shardchat_worker_heap_used_bytes', 'V8 heap used by the shard worker', (s) => s.heapUsed);
    perShard('shardchat_history_bytes', 'History bytes a shard keeps (charged against historyBudgetBytes)', (s) => s.historyBytes);
    perShard('shardchat_shard_restarts_total', 'Shard restarts after a crash', (s) => s.restarts, true);
    perShard('shardchat_shard_failed', '1 once the shard spent its restart budget (it is not restarted)', (s) => (s.failed ? 1 : 0));
    perShard('shardchat_shard_stalls_total', 'Shards terminated because their heartbeat stopped (a stuck loop)', (s) => s.stalls, true);
    perShard('shardchat_messages_published_total', 'Messages given a seq, per shard', (s) => s.published, true);
    perShard('shardchat_messages_delivered_total', 'Deliveries made by fan-out (members at each publish), per shard', (s) => s.delivered, true);
    perShard('shardchat_shard_overloaded_total', 'Requests refused because this shard queue was full', (s) => s.overloaded, true);
    this.fanoutLatency = new Histogram({
      name: 'shardchat_publish_fanout_seconds',
      help: 'Main-thread receipt of a pub to its publish call (sampled, 1 in 16)',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [r],
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text: this engine's metrics and the process's. */
  async text(): Promise<string> {
    this.snap = this.take();
    const [mine, proc] = await Promise.all([this.registry.metrics(), processMetrics().metrics()]);
    return `${mine}\n${proc}`;
  }
}
