/**
 * The numbers `engine.stats()` and `/metrics` show, read from the links (ring depths, the
 * shards' shared-memory slots) and the main thread's counters. Pure reads: no I/O.
 */
import { ERR_NAMES } from '../protocol/frames.js';
import { SHARD_STAT_NAMES, S_ERR_BASE, S_MEMBERS, S_ROOMS, S_UP } from '../metrics/shard-stats.js';
import type { ShardSnapshot } from '../metrics/prometheus.js';
import type { ShardLink } from './link.js';

export interface ShardStats {
  index: number;
  up: boolean;
  restarts: number;
  failed: boolean;
  stalls: number;
  rooms: number;
  members: number;
  inboundDepth: number;
  outboundDepth: number;
  inboundHighWater: number;
  outboundHighWater: number;
  overloaded: number;
  backlog: number;
  [k: string]: number | boolean;
}

export interface EngineStats {
  connections: number;
  /** Sum of the connections' room sets as the main thread knows them. */
  connRooms: number;
  rooms: number;
  members: number;
  rateBuckets: number;
  pendingPublishes: number;
  draining: boolean;
  shards: ShardStats[];
}

/** One shard's numbers: the link's own, then every shared-memory slot the shard publishes. */
export function shardStats(l: ShardLink): ShardStats {
  const s: ShardStats = {
    index: l.index, up: l.up && l.stats[S_UP] === 1, restarts: l.restarts, failed: l.failed, stalls: l.stalls,
    rooms: l.stats[S_ROOMS]!, members: l.stats[S_MEMBERS]!,
    inboundDepth: l.writer.depth(), outboundDepth: l.reader.depth(),
    inboundHighWater: l.inboundHighWater, outboundHighWater: l.outboundHighWater,
    overloaded: l.overloaded, backlog: l.backlogLength(),
  };
  for (const [slot, name] of Object.entries(SHARD_STAT_NAMES)) if (!(name in s)) s[name] = l.stats[Number(slot)]!;
  // Counters include earlier (crashed) incarnations: they never go backwards.
  s.published = Number(s.published) + l.deadPublished;
  s.delivered = Number(s.delivered) + l.deadDelivered;
  return s;
}

/** err replies by wire code: the main thread's, every shard's, and those of crashed shard incarnations. */
export function errorCounts(mainErrors: Uint32Array, links: readonly ShardLink[]): Map<string, number> {
  const errors = new Map<string, number>();
  for (let code = 1; code < ERR_NAMES.length; code++) {
    let n = mainErrors[code]!;
    for (const l of links) n += l.stats[S_ERR_BASE + code]! + l.deadErrors[code]!;
    if (n > 0) errors.set(ERR_NAMES[code]!, n);
  }
  return errors;
}

export function metricsShard(s: ShardStats): ShardSnapshot {
  return {
    index: s.index, up: s.up, restarts: s.restarts, failed: s.failed, stalls: s.stalls, rooms: s.rooms, members: s.members,
    presentUsers: Number(s.presentUsers), published: Number(s.published), delivered: Number(s.delivered),
    inboundDepth: s.inboundDepth, outboundDepth: s.outboundDepth, inboundHighWater: s.inboundHighWater,
    outboundHighWater: s.outboundHighWater, loopLagMs: Number(s.loopLagMs), heapUsed: Number(s.heapUsed),
    overloaded: s.overloaded, historyBytes: Number(s.historyBytes), storeHealthy: s.up && Number(s.storeHealthy) === 1,
  };
}
