/**
 * Reconnect delays with full jitter: delay(n) = min(cap, base + random(0, min(cap, base * 2^n))),
 * n being the count of consecutive failed connections. The random source is injectable so tests
 * can seed it. `seededRandom` is a small deterministic generator (mulberry32) for those tests.
 */
export type Random = () => number;

export interface BackoffOptions {
  baseMs: number;
  capMs: number;
  random: Random;
}

/** The delay before attempt `n` (0-based). Always within [min(cap, base), cap]. */
export function backoffDelay(n: number, o: BackoffOptions): number {
  const span = Math.min(o.capMs, o.baseMs * 2 ** Math.min(n, 52));
  return Math.min(o.capMs, o.baseMs + o.random() * span);
}

/** mulberry32: a seeded generator of floats in [0, 1). */
export function seededRandom(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
