/**
 * Up-front checks of cluster mode's options, each failure a TypeError/RangeError naming the
 * option (the engine's options.ts can call this and wrap it in its OptionError). Pure.
 */
import { normalizeRedisUrl } from './keys.js';
import { isValidNodeId } from './presence.js';

export interface ClusterOptionInput {
  urls: readonly string[];
  node: string;
  heartbeatTtlMs?: number;
  maxHistBytes?: number;
  limits?: { historyLimit?: number; cidWindowMs?: number; cidWindowMessages?: number; roomTtlMs?: number; maxBatch?: number };
  connection?: { commandTimeoutMs?: number; connectTimeoutMs?: number; maxQueued?: number; reconnectMinMs?: number; reconnectMaxMs?: number };
  subscriber?: { probeIntervalMs?: number; probeTimeoutMs?: number; subscribeTimeoutMs?: number; maxPendingPerRoom?: number; fillBatch?: number; recentPerRoom?: number };
}

function int(name: string, v: number | undefined, min: number, max: number): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`options.${name} must be an integer ${min}..${max} (got ${String(v)})`);
}

export function validateClusterOptions(o: ClusterOptionInput): void {
  if (!Array.isArray(o.urls) || o.urls.length === 0) throw new TypeError('options.redis needs at least one redis:// URL');
  const seen = new Set<string>();
  for (const u of o.urls) {
    let n: string;
    try {
      n = normalizeRedisUrl(u);
    } catch (err) {
      throw new TypeError(`options.redis: ${(err as Error).message}`);
    }
    if (seen.has(n)) throw new TypeError(`options.redis lists ${u} twice`);
    seen.add(n);
  }
  if (typeof o.node !== 'string' || !isValidNodeId(o.node)) throw new TypeError(`options.nodeId must be 1..64 of [A-Za-z0-9_.-] (got ${JSON.stringify(o.node)})`);
  int('redisHeartbeatTtlMs', o.heartbeatTtlMs, 100, 3_600_000);
  int('maxHistBytes', o.maxHistBytes, 1, 2 ** 31);
  const l = o.limits ?? {};
  int('historyLimit', l.historyLimit, 0, 10_000_000);
  int('cidWindowMs', l.cidWindowMs, 1, 7 * 86_400_000);
  int('cidWindowMessages', l.cidWindowMessages, 1, 10_000_000);
  int('roomTtlMs', l.roomTtlMs, 0, 365 * 86_400_000);
  int('redisBatchMax', l.maxBatch, 1, 10_000);
  const c = o.connection ?? {};
  int('redisCommandTimeoutMs', c.commandTimeoutMs, 1, 60_000);
  int('redisConnectTimeoutMs', c.connectTimeoutMs, 1, 60_000);
  int('redisMaxQueued', c.maxQueued, 1, 1_000_000);
  int('redisReconnectMinMs', c.reconnectMinMs, 1, 60_000);
  int('redisReconnectMaxMs', c.reconnectMaxMs, c.reconnectMinMs ?? 1, 600_000);
  const s = o.subscriber ?? {};
  int('redisProbeIntervalMs', s.probeIntervalMs, 10, 600_000);
  int('redisProbeTimeoutMs', s.probeTimeoutMs, 10, 600_000);
  int('redisSubscribeTimeoutMs', s.subscribeTimeoutMs, 1, 60_000);
  int('redisMaxPendingPerRoom', s.maxPendingPerRoom, 1, 1_000_000);
  int('redisFillBatch', s.fillBatch, 1, 100_000);
  int('redisRecentPerRoom', s.recentPerRoom, 0, 100_000);
}
