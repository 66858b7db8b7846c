/**
 * Derived multi-core throughput (native-bench/README.md, "Derived throughput"): from the CPU one
 * delivery costs on the main thread and on the shards, what shardchat should reach with N shards
 * on C cores, and which resource saturates first. No I/O.
 *
 * Model (three bounds on deliveries/s D; the smallest is the prediction, and names what
 * saturates first):
 * - main thread: one thread, at most one core: D * mainUs <= 1e6;
 * - busiest shard: a room's work all happens on the shard that owns it, one thread each; with
 *   rooms spread over min(N, rooms) shards the busiest does `share` of all shard work (1/N when
 *   even; `busiestShare` gives the measured share): D * shardUs * share <= 1e6;
 * - all cores: D * (mainUs + shardUs) <= C * 1e6.
 * It assumes the CPU per delivery stays what was measured (here, with both threads on one core),
 * which more cores change both ways: no more waiting for the core after a wake-up, but more
 * wake-ups (a shard that has its own core parks more often) and cache lines crossing cores.
 */

/**
 * @param {{mainUs: number, shardUs: number, rooms: number, busiestShare?: number}} cost
 *   per-delivery CPU in microseconds (= ms per 1k deliveries), rooms of the scenario, and the
 *   busiest shard's share of all shard CPU (1/N when even; measured from a run with N shards).
 * @returns {{perSec: number, bottleneck: string, bounds: Record<string, number>}}
 */
export function deriveScale(cost, shards, cores) {
  const { mainUs, shardUs, rooms } = cost;
  if (!(mainUs > 0) || !(shardUs >= 0) || !(cores >= 1) || !(shards >= 1)) return null;
  const used = Math.max(1, Math.min(shards, rooms));
  const share = cost.busiestShare ?? 1 / used;
  const bounds = {
    'main thread': 1e6 / mainUs,
    'busiest shard': shardUs > 0 ? 1e6 / (shardUs * share) : Infinity,
    'all cores': (cores * 1e6) / (mainUs + shardUs),
  };
  let bottleneck = 'main thread';
  for (const [k, v] of Object.entries(bounds)) if (v < bounds[bottleneck]) bottleneck = k;
  return { perSec: bounds[bottleneck], bottleneck, bounds };
}

const kps = (x) => (x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`);

/**
 * Markdown rows: for N = 1..maxN, derived on N+1 cores (and on `hereCores`), next to what was
 * measured with N shards (measured[N], or absent).
 */
export function scaleTable(cost, maxN, hereCores, measured = {}) {
  const rows = [`| shards N | derived on N+1 cores (saturates first) | derived on the ${hereCores} core(s) the server has here | measured here |`, '|---|---|---|---|'];
  for (let n = 1; n <= maxN; n++) {
    const a = deriveScale(cost, n, n + 1);
    const b = deriveScale(cost, n, hereCores);
    rows.push(`| ${n} | ${a ? `${kps(a.perSec)}/s (${a.bottleneck})` : 'n/a'} | ${b ? `${kps(b.perSec)}/s (${b.bottleneck})` : 'n/a'} | ${measured[n] ? `${kps(measured[n])}/s` : ''} |`);
  }
  return rows;
}
