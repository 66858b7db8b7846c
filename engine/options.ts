/**
 * Engine options: defaults, validation (at once, naming the option), and the CLI/environment
 * mapping. Every option a user can set is in OPTION_SPECS, so `--help`, the environment
 * variables and the README table come from one list.
 */
import { availableParallelism, hostname } from 'node:os';
import { OptionError } from './errors.js';
import { parseRedisUrls } from '../workers/store/redis/keys.js';
import { validateClusterOptions, type ClusterOptionInput } from '../workers/store/redis/options.js';
import { AUTH_OPTION_SPECS, resolveAuthOptions, type AuthOptions, type ResolvedAuthOptions } from './auth/options.js';
import { WEBHOOK_OPTION_SPECS, resolveWebhookOptions, type ResolvedWebhookOptions, type WebhookOptions } from './server/webhook-options.js';

/** Webhook options as engine options (docs/API.md): `webhook` + the sender's option name. */
export interface WebhookEngineOptions {
  webhookUrl?: string; webhookSecret?: string; webhookBatchMax?: number; webhookBatchMaxBytes?: number; webhookBatchMs?: number;
  webhookQueueEntries?: number; webhookQueueBytes?: number; webhookTimeoutMs?: number; webhookRetryBaseMs?: number;
  webhookRetryMaxMs?: number; webhookRetryForMs?: number; webhookCloseTimeoutMs?: number;
}

export interface AuthRequest {
  url: string;
  query: string;
  headers: Record<string, string>;
}
/**
 * The user, and optionally the same permissions a token carries (docs/AUTH.md): `rooms`
 * (claim-shaped), `info`, `exp` (unix seconds; the connection is closed with 4401 then).
 */
export interface AuthResult { user: string; rooms?: unknown; info?: unknown; exp?: number }
/** Returns the user, or null to refuse the upgrade with HTTP 401. */
export type Authenticate = (req: AuthRequest) => AuthResult | null | Promise<AuthResult | null>;

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface EngineOptions extends AuthOptions, WebhookEngineOptions {
  port?: number;
  host?: string;
  shards?: number;
  historyLimit?: number;
  maxHistBytes?: number;
  roomTtlMs?: number;
  historyBudgetBytes?: number;
  maxRoomsPerShard?: number;
  roomCreateRate?: number;
  roomCreateBurst?: number;
  maxCursorsPerRoom?: number;
  maxCursorsPerShard?: number;
  /** 'memory' (the library's default): nothing survives a restart. 'sqlite' (the CLI's default): rooms are durable in dataDir. */
  store?: 'memory' | 'sqlite';
  dataDir?: string;
  fsync?: 'normal' | 'always';
  historyMaxAgeMs?: number;
  cidWindowMessages?: number;
  cidWindowMs?: number;
  maxFrameBytes?: number;
  maxRoomsPerConn?: number;
  ratePerSec?: number;
  rateBurst?: number;
  replyBytesPerToken?: number;
  maxBufferBytes?: number;
  maxConnections?: number;
  upgradeRatePerSec?: number;
  drainSpreadMs?: number;
  maxBodyDepth?: number;
  idleTimeoutSec?: number;
  drainTimeoutMs?: number;
  shardStallMs?: number;
  shardRestartBudget?: number;
  ringBytes?: number;
  metrics?: boolean;
  metricsPort?: number;
  metricsHost?: string;
  logLevel?: LogLevel;
  logPretty?: boolean;
  web?: boolean;
  authenticate?: Authenticate;
  /** Turns the HTTP API on (docs/API.md): the bearer key of `POST /api/v1/<method>`, at least 16 bytes. */
  apiKey?: string;
  apiMaxBodyBytes?: number;
  maxBans?: number;
  /**
   * Cluster mode (docs/CLUSTER.md): comma-separated redis:// or rediss:// URLs. Redis is then the
   * store (history, seq, cursors, presence); `store`, `dataDir`, `fsync` and `historyMaxAgeMs` are not used.
   */
  redis?: string;
  /** This node's id in cluster mode: 1..64 of [A-Za-z0-9_.-], unique among live nodes (default: hostname-pid). */
  nodeId?: string;
  redisHeartbeatTtlMs?: number;
  redisCommandTimeoutMs?: number;
  redisConnectTimeoutMs?: number;
  redisSubscribeTimeoutMs?: number;
  redisProbeIntervalMs?: number;
  redisProbeTimeoutMs?: number;
  redisMaxQueued?: number;
  redisMaxPendingPerRoom?: number;
  redisFillBatch?: number;
  redisRecentPerRoom?: number;
  redisBatchMax?: number;
}

/**
 * What each shard's ClusterStore is made from (workers/store/redis ClusterStoreOptions, plain data
 * so it crosses to the worker): the shard adds `.s<index>` to `node`.
 */
export interface ClusterConfig extends ClusterOptionInput {
  urls: string[];
  node: string;
  heartbeatTtlMs: number;
  maxHistBytes: number;
  limits: { historyLimit: number; cidWindowMs: number; cidWindowMessages: number; roomTtlMs: number; maxBatch: number };
  connection: { commandTimeoutMs: number; connectTimeoutMs: number; maxQueued: number };
  subscriber: {
    probeIntervalMs: number; probeTimeoutMs: number; subscribeTimeoutMs: number; connectTimeoutMs: number;
    maxPendingPerRoom: number; fillBatch: number; recentPerRoom: number;
  };
}

/** The default node id: hostname-pid, cut to the node id alphabet and to 56 characters (room for `.s<shard>`). */
export function defaultNodeId(): string {
  const host = hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 48) || 'node';
  return `${host}-${process.pid}`.slice(0, 56);
}

export type ResolvedOptions = Required<Omit<EngineOptions, 'authenticate' | 'apiKey' | keyof AuthOptions | keyof WebhookEngineOptions>> & {
  /** Webhooks (docs/API.md): null when webhookUrl is not given. */
  webhooks: ResolvedWebhookOptions | null;
  authenticate: Authenticate | null;
  /** The HTTP API's key; null = the API is off. */
  apiKey: string | null;
  /** Token auth (docs/AUTH.md): null when no key option was given. */
  auth: ResolvedAuthOptions | null;
  /** Cluster mode: the shards' ClusterStore settings; null without `redis` (single node). */
  cluster: ClusterConfig | null;
};

interface Spec {
  key: keyof EngineOptions;
  flag: string;
  env: string;
  kind: 'int' | 'string' | 'level' | 'bool' | 'enum';
  /** The values of an 'enum'. */
  values?: readonly string[];
  /** The default when started from the command line, where it differs from the library's. */
  cliDef?: string;
  min?: number;
  max?: number;
  pow2?: boolean;
  help: string;
  def: () => number | string | boolean;
}

export const OPTION_SPECS: readonly Spec[] = [
  { key: 'port', flag: 'port', env: 'SHARDCHAT_PORT', kind: 'int', min: 0, max: 65535, help: 'TCP port (0 = any free port)', def: () => 9001 },
  { key: 'host', flag: 'host', env: 'SHARDCHAT_HOST', kind: 'string', help: 'address to listen on', def: () => '0.0.0.0' },
  { key: 'shards', flag: 'shards', env: 'SHARDCHAT_SHARDS', kind: 'int', min: 1, max: 256, help: 'shard worker threads (default: cores - 1, at least 1)', def: () => Math.max(1, availableParallelism() - 1) },
  { key: 'historyLimit', flag: 'history-limit', env: 'SHARDCHAT_HISTORY_LIMIT', kind: 'int', min: 0, max: 1_000_000, help: 'messages of history kept per room', def: () => 1000 },
  { key: 'maxHistBytes', flag: 'max-hist-bytes', env: 'SHARDCHAT_MAX_HIST_BYTES', kind: 'int', min: 4096, max: 64 << 20, help: 'largest hist reply or joined.missed in bytes (fewer messages come back past it)', def: () => 1 << 20 },
  { key: 'roomTtlMs', flag: 'room-ttl-ms', env: 'SHARDCHAT_ROOM_TTL_MS', kind: 'int', min: 0, max: 2 ** 31 - 1, help: 'how long an empty room keeps its history and cursors', def: () => 300_000 },
  { key: 'historyBudgetBytes', flag: 'history-budget-bytes', env: 'SHARDCHAT_HISTORY_BUDGET_BYTES', kind: 'int', min: 1 << 20, max: 2 ** 40, help: 'history bytes one shard keeps across its rooms (oldest messages of the least recently published rooms go first)', def: () => 64 << 20 },
  { key: 'maxRoomsPerShard', flag: 'max-rooms-per-shard', env: 'SHARDCHAT_MAX_ROOMS_PER_SHARD', kind: 'int', min: 1, max: 100_000_000, help: 'rooms one shard holds (a join that would create one more gets room_limit)', def: () => 100_000 },
  { key: 'roomCreateRate', flag: 'room-create-rate', env: 'SHARDCHAT_ROOM_CREATE_RATE', kind: 'int', min: 1, max: 1e9, help: 'rooms a user (anonymous: a client address) may create per second per shard', def: () => 2 },
  { key: 'roomCreateBurst', flag: 'room-create-burst', env: 'SHARDCHAT_ROOM_CREATE_BURST', kind: 'int', min: 1, max: 1e9, help: 'room creations a user (anonymous: a client address) may make at once per shard', def: () => 100 },
  { key: 'maxCursorsPerRoom', flag: 'max-cursors-per-room', env: 'SHARDCHAT_MAX_CURSORS_PER_ROOM', kind: 'int', min: 0, max: 100_000_000, help: 'read cursors of named users who left, kept per room (least recently left evicted)', def: () => 10_000 },
  { key: 'maxCursorsPerShard', flag: 'max-cursors-per-shard', env: 'SHARDCHAT_MAX_CURSORS_PER_SHARD', kind: 'int', min: 0, max: 100_000_000, help: 'read cursors of named users who left, kept per shard across its rooms', def: () => 100_000 },
  { key: 'store', flag: 'store', env: 'SHARDCHAT_STORE', kind: 'enum', values: ['memory', 'sqlite'], cliDef: 'sqlite', help: 'where rooms live: sqlite = durable in --data-dir (the CLI default), memory = lost on restart (the library default)', def: () => 'memory' },
  { key: 'dataDir', flag: 'data-dir', env: 'SHARDCHAT_DATA_DIR', kind: 'string', help: 'directory of the durable store (store sqlite); one engine at a time', def: () => './shardchat-data' },
  { key: 'fsync', flag: 'fsync', env: 'SHARDCHAT_FSYNC', kind: 'enum', values: ['normal', 'always'], help: 'normal = an ack survives a crash of the process; always = also a power loss (slower)', def: () => 'normal' },
  { key: 'historyMaxAgeMs', flag: 'history-max-age-ms', env: 'SHARDCHAT_HISTORY_MAX_AGE_MS', kind: 'int', min: 0, max: 2 ** 53 - 1, help: 'stored messages older than this are trimmed (0 = no age limit; store sqlite)', def: () => 0 },
  { key: 'cidWindowMessages', flag: 'cid-window-messages', env: 'SHARDCHAT_CID_WINDOW_MESSAGES', kind: 'int', min: 0, max: 1_000_000, help: 'a repeated pub cid is recognised among the room\'s last N messages...', def: () => 1000 },
  { key: 'cidWindowMs', flag: 'cid-window-ms', env: 'SHARDCHAT_CID_WINDOW_MS', kind: 'int', min: 0, max: 2 ** 31 - 1, help: '...that are also at most this old', def: () => 600_000 },
  { key: 'maxFrameBytes', flag: 'max-frame-bytes', env: 'SHARDCHAT_MAX_FRAME_BYTES', kind: 'int', min: 256, max: 1 << 20, help: 'largest client WebSocket message (close 1009 above)', def: () => 65536 },
  { key: 'maxRoomsPerConn', flag: 'max-rooms', env: 'SHARDCHAT_MAX_ROOMS', kind: 'int', min: 1, max: 100_000, help: 'rooms one connection may join (too_many_rooms above)', def: () => 100 },
  { key: 'ratePerSec', flag: 'rate-per-sec', env: 'SHARDCHAT_RATE_PER_SEC', kind: 'int', min: 1, max: 1e9, help: 'token bucket refill per connection (frames/s)', def: () => 10 },
  { key: 'rateBurst', flag: 'rate-burst', env: 'SHARDCHAT_RATE_BURST', kind: 'int', min: 1, max: 1e9, help: 'token bucket size per connection', def: () => 50 },
  { key: 'replyBytesPerToken', flag: 'reply-bytes-per-token', env: 'SHARDCHAT_REPLY_BYTES_PER_TOKEN', kind: 'int', min: 1024, max: 1 << 30, help: 'a hist/who/joined reply costs one more rate token per this many bytes', def: () => 65536 },
  { key: 'maxBufferBytes', flag: 'max-buffer-bytes', env: 'SHARDCHAT_MAX_BUFFER_BYTES', kind: 'int', min: 1024, max: 1 << 30, help: 'unsent bytes per connection before close 4008', def: () => 1 << 20 },
  { key: 'maxConnections', flag: 'max-connections', env: 'SHARDCHAT_MAX_CONNECTIONS', kind: 'int', min: 1, max: 10_000_000, help: 'open connections (HTTP 503 at upgrade above)', def: () => 50_000 },
  { key: 'upgradeRatePerSec', flag: 'upgrade-rate-per-sec', env: 'SHARDCHAT_UPGRADE_RATE_PER_SEC', kind: 'int', min: 0, max: 10_000_000, help: 'new connections admitted per second, burst the same (HTTP 503 + Retry-After above; 0 = unlimited)', def: () => 10_000 },
  { key: 'maxBodyDepth', flag: 'max-body-depth', env: 'SHARDCHAT_MAX_BODY_DEPTH', kind: 'int', min: 32, max: 1000, help: 'nesting levels allowed in a body (the body is level 1)', def: () => 32 },
  { key: 'idleTimeoutSec', flag: 'idle-timeout-sec', env: 'SHARDCHAT_IDLE_TIMEOUT_SEC', kind: 'int', min: 0, max: 960, help: 'close a silent connection after this (pings are sent automatically; 0 = never)', def: () => 60 },
  { key: 'drainTimeoutMs', flag: 'drain-timeout-ms', env: 'SHARDCHAT_DRAIN_TIMEOUT_MS', kind: 'int', min: 0, max: 3_600_000, help: 'drain deadline on shutdown', def: () => 10_000 },
  { key: 'shardStallMs', flag: 'shard-stall-ms', env: 'SHARDCHAT_SHARD_STALL_MS', kind: 'int', min: 0, max: 3_600_000, help: 'terminate and restart a shard whose heartbeat stops this long (0 = never; else at least 1000)', def: () => 10_000 },
  { key: 'shardRestartBudget', flag: 'shard-restart-budget', env: 'SHARDCHAT_SHARD_RESTART_BUDGET', kind: 'int', min: 1, max: 1000, help: 'shard restarts allowed within 60 s before the shard is reported failed', def: () => 5 },
  { key: 'drainSpreadMs', flag: 'drain-spread-ms', env: 'SHARDCHAT_DRAIN_SPREAD_MS', kind: 'int', min: 0, max: 3_600_000, help: 'spread the 1001 closes of a drain over this window (within the drain deadline; 0 = all at once)', def: () => 0 },
  { key: 'ringBytes', flag: 'ring-bytes', env: 'SHARDCHAT_RING_BYTES', kind: 'int', min: 1 << 16, max: 1 << 30, pow2: true, help: 'bytes of each ring (power of two)', def: () => 8 << 20 },
  { key: 'metrics', flag: 'metrics', env: 'SHARDCHAT_METRICS', kind: 'bool', help: 'serve /metrics and time fan-outs (false: neither)', def: () => true },
  { key: 'metricsPort', flag: 'metrics-port', env: 'SHARDCHAT_METRICS_PORT', kind: 'int', min: -1, max: 65535, help: 'serve /metrics on its own port (-1 = on the main port; 0 = any free port)', def: () => -1 },
  { key: 'metricsHost', flag: 'metrics-host', env: 'SHARDCHAT_METRICS_HOST', kind: 'string', help: 'address of the separate /metrics listener', def: () => '127.0.0.1' },
  { key: 'logLevel', flag: 'log-level', env: 'LOG_LEVEL', kind: 'level', help: 'fatal|error|warn|info|debug|trace|silent', def: () => 'info' },
  { key: 'web', flag: 'web', env: 'SHARDCHAT_WEB', kind: 'bool', help: 'serve the chat page at GET / (false: not)', def: () => true },
  { key: 'apiMaxBodyBytes', flag: 'api-max-body-bytes', env: 'SHARDCHAT_API_MAX_BODY_BYTES', kind: 'int', min: 1024, max: 64 << 20, help: 'largest HTTP API request body (HTTP 413 above)', def: () => 1 << 20 },
  { key: 'maxBans', flag: 'max-bans', env: 'SHARDCHAT_MAX_BANS', kind: 'int', min: 1, max: 10_000_000, help: 'room bans (kick with banSec) kept; past it the oldest is forgotten', def: () => 100_000 },
  { key: 'redis', flag: 'redis', env: 'SHARDCHAT_REDIS_URL', kind: 'string', help: 'cluster mode: comma-separated redis:// URLs (rooms spread over them); Redis is then the store and --store is not used (docs/CLUSTER.md)', def: () => '' },
  { key: 'nodeId', flag: 'node-id', env: 'SHARDCHAT_NODE_ID', kind: 'string', help: 'cluster mode: this node\'s id, 1..64 of [A-Za-z0-9_.-], unique among live nodes (default: hostname-pid)', def: defaultNodeId },
  { key: 'redisHeartbeatTtlMs', flag: 'redis-heartbeat-ttl-ms', env: 'SHARDCHAT_REDIS_HEARTBEAT_TTL_MS', kind: 'int', min: 100, max: 3_600_000, help: 'cluster mode: a node silent this long has its presence entries swept', def: () => 15_000 },
  { key: 'redisCommandTimeoutMs', flag: 'redis-command-timeout-ms', env: 'SHARDCHAT_REDIS_COMMAND_TIMEOUT_MS', kind: 'int', min: 1, max: 60_000, help: 'cluster mode: one Redis command\'s deadline (then err unavailable)', def: () => 800 },
  { key: 'redisConnectTimeoutMs', flag: 'redis-connect-timeout-ms', env: 'SHARDCHAT_REDIS_CONNECT_TIMEOUT_MS', kind: 'int', min: 1, max: 60_000, help: 'cluster mode: a Redis connect\'s deadline', def: () => 800 },
  { key: 'redisSubscribeTimeoutMs', flag: 'redis-subscribe-timeout-ms', env: 'SHARDCHAT_REDIS_SUBSCRIBE_TIMEOUT_MS', kind: 'int', min: 1, max: 60_000, help: 'cluster mode: a room\'s SUBSCRIBE deadline (a join; then err unavailable)', def: () => 800 },
  { key: 'redisProbeIntervalMs', flag: 'redis-probe-interval-ms', env: 'SHARDCHAT_REDIS_PROBE_INTERVAL_MS', kind: 'int', min: 10, max: 600_000, help: 'cluster mode: probe a subscriber connection silent this long', def: () => 2_000 },
  { key: 'redisProbeTimeoutMs', flag: 'redis-probe-timeout-ms', env: 'SHARDCHAT_REDIS_PROBE_TIMEOUT_MS', kind: 'int', min: 10, max: 600_000, help: 'cluster mode: no probe echo within this = a dead subscription (reconnect + resync)', def: () => 1_000 },
  { key: 'redisMaxQueued', flag: 'redis-max-queued', env: 'SHARDCHAT_REDIS_MAX_QUEUED', kind: 'int', min: 1, max: 1_000_000, help: 'cluster mode: Redis commands waiting for replies per connection (then err unavailable)', def: () => 10_000 },
  { key: 'redisMaxPendingPerRoom', flag: 'redis-max-pending-per-room', env: 'SHARDCHAT_REDIS_MAX_PENDING_PER_ROOM', kind: 'int', min: 1, max: 1_000_000, help: 'cluster mode: out-of-order messages buffered per room while a gap is filled', def: () => 1024 },
  { key: 'redisFillBatch', flag: 'redis-fill-batch', env: 'SHARDCHAT_REDIS_FILL_BATCH', kind: 'int', min: 1, max: 100_000, help: 'cluster mode: messages per gap-fill read', def: () => 500 },
  { key: 'redisRecentPerRoom', flag: 'redis-recent-per-room', env: 'SHARDCHAT_REDIS_RECENT_PER_ROOM', kind: 'int', min: 0, max: 100_000, help: 'cluster mode: delivered messages kept per followed room for joins', def: () => 64 },
  { key: 'redisBatchMax', flag: 'redis-batch-max', env: 'SHARDCHAT_REDIS_BATCH_MAX', kind: 'int', min: 1, max: 10_000, help: 'cluster mode: messages per sequencer script call', def: () => 256 },
  { key: 'logPretty', flag: 'log-pretty', env: 'SHARDCHAT_LOG_PRETTY', kind: 'bool', help: 'human-readable log lines instead of JSON', def: () => false },
];

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const KNOWN = new Set<string>([...OPTION_SPECS.map((s) => s.key), ...AUTH_OPTION_SPECS.map((s) => s.key), 'authenticate', 'apiKey', ...WEBHOOK_OPTION_SPECS.map((s) => s.engineKey)]);

export function resolveOptions(opts: EngineOptions = {}): ResolvedOptions {
  if (opts === null || typeof opts !== 'object') throw new OptionError('(options)', 'must be an object');
  for (const k of Object.keys(opts)) {
    if (!KNOWN.has(k)) throw new OptionError(k, 'is not an option of shardchat');
  }
  const out: Record<string, unknown> = {};
  for (const s of OPTION_SPECS) {
    const v = (opts as Record<string, unknown>)[s.key];
    out[s.key] = v === undefined ? s.def() : check(s, v);
  }
  const auth = opts.authenticate;
  if (auth !== undefined && typeof auth !== 'function') throw new OptionError('authenticate', 'must be a function');
  out.authenticate = auth ?? null;
  out.auth = resolveAuthOptions(opts);
  const apiKey = opts.apiKey;
  if (apiKey !== undefined && (typeof apiKey !== 'string' || Buffer.byteLength(apiKey) < 16)) throw new OptionError('apiKey', 'must be a string of at least 16 bytes');
  out.apiKey = apiKey ?? null;
  out.webhooks = webhookOptions(opts);
  if (out.auth !== null && auth !== undefined) {
    throw new OptionError('authenticate', 'cannot be combined with token auth (jwtSecret, jwtSecretFile, jwtPublicKeyFile, jwksUrl): give one identity source');
  }
  const r = out as ResolvedOptions;
  if (r.maxHistBytes * 4 > r.ringBytes) {
    throw new OptionError('maxHistBytes', `must be at most ringBytes / 4 (${r.ringBytes / 4}), got ${r.maxHistBytes}`);
  }
  if (r.shardStallMs !== 0 && r.shardStallMs < 1000) {
    throw new OptionError('shardStallMs', `must be 0 (never) or at least 1000 (two shard ticks), got ${r.shardStallMs}`);
  }
  if (r.maxFrameBytes * 4 > r.ringBytes) {
    throw new OptionError('maxFrameBytes', `must be at most ringBytes / 4 (${r.ringBytes / 4}), got ${r.maxFrameBytes}`);
  }
  r.cluster = clusterConfig(r);
  return r;
}

/** Cluster mode's settings from the resolved options, checked by the store's own validation (null without `redis`). */
function clusterConfig(r: ResolvedOptions): ClusterConfig | null {
  if (r.redis === '') return null;
  let urls: string[];
  try {
    urls = parseRedisUrls(r.redis);
  } catch (e) {
    throw new OptionError('redis', (e as Error).message.replace(/^redis: /, ''));
  }
  const c: ClusterConfig = {
    urls, node: r.nodeId, heartbeatTtlMs: r.redisHeartbeatTtlMs, maxHistBytes: r.maxHistBytes,
    limits: { historyLimit: r.historyLimit, cidWindowMs: r.cidWindowMs, cidWindowMessages: r.cidWindowMessages, roomTtlMs: r.roomTtlMs, maxBatch: r.redisBatchMax },
    connection: { commandTimeoutMs: r.redisCommandTimeoutMs, connectTimeoutMs: r.redisConnectTimeoutMs, maxQueued: r.redisMaxQueued },
    subscriber: {
      probeIntervalMs: r.redisProbeIntervalMs, probeTimeoutMs: r.redisProbeTimeoutMs, subscribeTimeoutMs: r.redisSubscribeTimeoutMs,
      connectTimeoutMs: r.redisConnectTimeoutMs, maxPendingPerRoom: r.redisMaxPendingPerRoom, fillBatch: r.redisFillBatch, recentPerRoom: r.redisRecentPerRoom,
    },
  };
  try {
    validateClusterOptions(c);
    // Each shard's store runs as `<nodeId>.s<index>`: that must be a node id too.
    validateClusterOptions({ ...c, node: `${r.nodeId}.s${r.shards - 1}` });
  } catch (e) {
    const m = /^options\.(\w+)/.exec((e as Error).message);
    const key = m?.[1] ?? 'redis';
    throw new OptionError(key, (e as Error).message.replace(/^options\.\w+:? ?/, '').replace(/\.s\d+"/, `" (with .s${r.shards - 1} added per shard)`));
  }
  return c;
}

function webhookOptions(opts: EngineOptions): ResolvedWebhookOptions | null {
  const given = WEBHOOK_OPTION_SPECS.filter((s) => (opts as Record<string, unknown>)[s.engineKey] !== undefined);
  if (given.length === 0) return null;
  if (opts.webhookUrl === undefined) throw new OptionError(given[0]!.engineKey, 'needs webhookUrl (webhooks are off without it)');
  const w: Record<string, unknown> = {};
  for (const s of given) w[s.key] = (opts as Record<string, unknown>)[s.engineKey];
  return resolveWebhookOptions(w as unknown as WebhookOptions);
}

function check(s: Spec, v: unknown): unknown {
  switch (s.kind) {
    case 'string':
      if (typeof v !== 'string' || v.length === 0) throw new OptionError(s.key, `must be a non-empty string, got ${JSON.stringify(v)}`);
      return v;
    case 'bool':
      if (typeof v !== 'boolean') throw new OptionError(s.key, `must be true or false, got ${JSON.stringify(v)}`);
      return v;
    case 'enum':
      if (typeof v !== 'string' || !s.values!.includes(v)) throw new OptionError(s.key, `must be one of ${s.values!.join(', ')}, got ${JSON.stringify(v)}`);
      return v;
    case 'level':
      if (typeof v !== 'string' || !LEVELS.has(v)) throw new OptionError(s.key, `must be one of ${[...LEVELS].join(', ')}, got ${JSON.stringify(v)}`);
      return v;
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v)) throw new OptionError(s.key, `must be an integer, got ${JSON.stringify(v)}`);
      if (v < s.min! || v > s.max!) {
        const e = new RangeError(`options.${s.key} must be between ${s.min} and ${s.max}, got ${v}`);
        throw Object.assign(e, { code: 'SHARDCHAT_INVALID_OPTION', option: s.key });
      }
      if (s.pow2 && (v & (v - 1)) !== 0) throw new OptionError(s.key, `must be a power of two, got ${v}`);
      return v;
  }
}

/** Options from `--flag value` / `--flag=value` arguments and environment variables (flags win). */
export function optionsFromArgs(argv: readonly string[], env: NodeJS.ProcessEnv): { options: EngineOptions; help: boolean } {
  const options: Record<string, unknown> = {};
  for (const s of CLI_SPECS) {
    const e = env[s.env];
    if (e !== undefined && e !== '') options[s.key] = parse(s, e, s.env);
  }
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') { help = true; continue; }
    if (!a.startsWith('--')) throw new OptionError(a, 'is not a recognised argument (see --help)');
    const eqAt = a.indexOf('=');
    const name = eqAt >= 0 ? a.slice(2, eqAt) : a.slice(2);
    const spec = CLI_SPECS.find((s) => s.flag === name);
    if (!spec) throw new OptionError(`--${name}`, 'is not an option (see --help)');
    const value = eqAt >= 0 ? a.slice(eqAt + 1) : argv[++i];
    if (value === undefined) throw new OptionError(spec.key, `needs a value (--${spec.flag} VALUE)`);
    options[spec.key] = parse(spec, value, `--${spec.flag}`);
  }
  // The command line's own defaults (durable by default): see README, "Durable rooms". In cluster
  // mode Redis is the store: no sqlite default (the CLI then creates no data directory).
  const cluster = options.redis !== undefined;
  for (const s of OPTION_SPECS) {
    if (s.cliDef !== undefined && options[s.key] === undefined && !(cluster && s.key === 'store')) options[s.key] = s.cliDef;
  }
  return { options: options as EngineOptions, help };
}

/** What the CLI and the environment can set: OPTION_SPECS, then the token-auth options. */
type CliSpec = Pick<Spec, 'flag' | 'env' | 'kind' | 'help'> & { key: string; def: () => number | string | boolean | null };
const CLI_SPECS: readonly CliSpec[] = [
  ...OPTION_SPECS,
  ...AUTH_OPTION_SPECS.map((s) => ({ key: s.key, flag: s.flag, env: s.env, kind: s.kind, help: s.help, def: () => s.def })),
  ...WEBHOOK_OPTION_SPECS.map((s) => ({ key: s.engineKey, flag: s.flag, env: s.env, kind: s.kind, help: s.help, def: () => s.def })),
  { key: 'apiKey', flag: 'api-key', env: 'SHARDCHAT_API_KEY', kind: 'string', help: 'turns the HTTP API on: its bearer key (at least 16 bytes)', def: () => null },
];

function parse(s: CliSpec, raw: string, where: string): unknown {
  if (s.kind === 'bool') {
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    throw new OptionError(s.key, `(${where}) must be true or false, got ${JSON.stringify(raw)}`);
  }
  if (s.kind !== 'int') return raw;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isInteger(n)) throw new OptionError(s.key, `(${where}) must be an integer, got ${JSON.stringify(raw)}`);
  return n;
}

export function helpText(): string {
  const lines = ['Usage: shardchat [options]', '', 'Every option can also be set by its environment variable; flags win.', ''];
  for (const s of CLI_SPECS) {
    const cliDef = (s as { cliDef?: string }).cliDef;
    const d = s.def();
    const def = cliDef !== undefined ? `${cliDef}; library: ${String(d)}` : d === null ? null : String(d);
    lines.push(`  --${s.flag.padEnd(18)} ${s.env.padEnd(28)} ${s.help}${def === null ? '' : ` (default: ${def})`}`);
  }
  lines.push('', '  --help, -h           print this and exit');
  return lines.join('\n');
}
