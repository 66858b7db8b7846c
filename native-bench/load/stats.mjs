/**
 * Verdicts a stranger can trust (native-bench/README.md, "Verdicts"): bootstrap 95% intervals of
 * a ratio from the per-run values, pairs matched by run id (a failed run drops its pair, it does
 * not shift the later ones), "met" only when the whole interval clears the limit, and the number
 * of runs that would make an inconclusive verdict decidable. Deterministic: a seeded generator.
 * No I/O.
 */

/** mulberry32: a small seeded PRNG, so the same runs always give the same interval. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const finite = (x) => typeof x === 'number' && Number.isFinite(x);

export function median(xs) {
  const v = xs.filter(finite).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = (sorted.length - 1) * q;
  const lo = Math.floor(i);
  const hi = Math.ceil(i);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (i - lo);
}

/**
 * Pairs of (b, a) values matched by run id: b and a are arrays of { runId, value }. Runs missing
 * on either side, or with a non-finite or non-positive denominator, are left out.
 */
export function pairByRunId(b, a) {
  const byId = new Map();
  for (const x of a) if (finite(x.value)) byId.set(x.runId, x.value);
  const out = [];
  for (const x of b) {
    const y = byId.get(x.runId);
    if (finite(x.value) && finite(y) && y > 0) out.push({ runId: x.runId, b: x.value, a: y, ratio: x.value / y });
  }
  return out;
}

/**
 * Bootstrap of the median of the paired ratios: { point, lo, hi, n } (95% percentile interval),
 * or null with fewer than 2 pairs.
 */
export function pairedRatioInterval(pairs, { iters = 4000, seed = 1 } = {}) {
  const r = pairs.map((p) => p.ratio).filter(finite);
  if (r.length < 2) return r.length === 1 ? { point: r[0], lo: null, hi: null, n: 1 } : null;
  const rand = rng(seed);
  const meds = new Float64Array(iters);
  const s = new Array(r.length);
  for (let k = 0; k < iters; k++) {
    for (let i = 0; i < r.length; i++) s[i] = r[Math.floor(rand() * r.length)];
    meds[k] = median(s);
  }
  meds.sort();
  return { point: median(r), lo: quantile(meds, 0.025), hi: quantile(meds, 0.975), n: r.length };
}

/**
 * Fewest pairs a verdict may rest on: a percentile bootstrap of fewer runs cannot leave the range
 * of the runs themselves, so its interval is too narrow to trust.
 */
export const MIN_PAIRS = 5;

/**
 * Verdict of an interval against a limit. dir '>=' (the ratio must be at least limit) or '<='.
 * generatorBound: the load generator was at its own limit in one of the runs: no verdict.
 * Returns { verdict: 'met'|'not met'|'inconclusive'|'generator-bound'|'not measured', runsNeeded }.
 */
export function verdictOf(ci, limit, dir, { generatorBound = false } = {}) {
  if (generatorBound) return { verdict: 'generator-bound', runsNeeded: null };
  if (!ci || ci.lo === null || ci.hi === null) return { verdict: 'not measured', runsNeeded: ci ? MIN_PAIRS : null };
  if (ci.n < MIN_PAIRS) return { verdict: 'inconclusive', runsNeeded: Math.max(MIN_PAIRS, runsNeeded(ci, limit) ?? MIN_PAIRS), tooFew: true };
  const clears = dir === '>=' ? ci.lo >= limit : ci.hi <= limit;
  const fails = dir === '>=' ? ci.hi < limit : ci.lo > limit;
  if (clears) return { verdict: 'met', runsNeeded: null };
  if (fails) return { verdict: 'not met', runsNeeded: null };
  return { verdict: 'inconclusive', runsNeeded: runsNeeded(ci, limit) };
}

/**
 * Runs after which the interval would clear the limit if the point estimate stayed where it is:
 * the half-width shrinks as 1/sqrt(n), so n' = n * (half-width / distance)^2. null when the
 * point sits on the limit (no number of runs decides it).
 */
export function runsNeeded(ci, limit) {
  const d = Math.abs(ci.point - limit);
  if (!(d > 0)) return null;
  const half = ci.point >= limit ? ci.point - ci.lo : ci.hi - ci.point;
  return Math.max(ci.n + 1, Math.ceil(ci.n * (half / d) ** 2));
}

/** Fisher-Yates with the seeded generator: a point order that changes per run, reproducibly. */
export function shuffled(xs, seed) {
  const rand = rng(seed);
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** "0.96x [0.91, 1.02]" */
export function fmtInterval(ci, unit = 'x') {
  if (!ci || ci.point === null) return 'n/a';
  const f = (x) => (x === null ? '?' : x.toFixed(2));
  return ci.lo === null ? `${f(ci.point)}${unit} (1 pair)` : `${f(ci.point)}${unit} [${f(ci.lo)}, ${f(ci.hi)}]`;
}
