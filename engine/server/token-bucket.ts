/**
 * Token buckets, pure: a policy (rate, burst, clock) and a small state object per bucket, so a
 * connection carries two numbers rather than an object with a closure. Time comes from an
 * injected clock that must be monotonic: the default is performance.now(), which a step of the
 * wall clock (NTP, an operator, a VM resume) does not move. Should a clock ever go backwards,
 * the bucket treats it as no time passed rather than as a debt.
 */

/** Milliseconds from a monotonic origin. */
export type Clock = () => number;

export const monotonicMs: Clock = () => performance.now();

export interface BucketState {
  tokens: number;
  /** Clock reading of the last refill. */
  last: number;
}

export class TokenBucketPolicy {
  constructor(
    readonly ratePerSec: number,
    readonly burst: number,
    readonly clock: Clock = monotonicMs,
  ) {
    if (!(ratePerSec > 0) || !(burst > 0)) throw new RangeError(`token bucket needs ratePerSec > 0 and burst > 0, got ${ratePerSec}, ${burst}`);
  }

  /** A full bucket. */
  full(): BucketState {
    return { tokens: this.burst, last: this.clock() };
  }

  /** Adds what the time since the last refill earned, up to burst. */
  refill(b: BucketState): void {
    const now = this.clock();
    const elapsed = now - b.last;
    b.last = now;
    if (elapsed > 0) b.tokens = Math.min(this.burst, b.tokens + (elapsed * this.ratePerSec) / 1000);
  }

  /**
   * Refills, then takes `cost` tokens if the bucket holds them. Returns 0 when taken, else the
   * milliseconds until it will hold them (nothing taken).
   */
  take(b: BucketState, cost = 1): number {
    this.refill(b);
    if (b.tokens >= cost) { b.tokens -= cost; return 0; }
    return Math.max(1, Math.ceil(((cost - b.tokens) * 1000) / this.ratePerSec));
  }

  /**
   * Takes `cost` tokens whatever the bucket holds (it may go negative, down to -limit): for work
   * whose size is known only after it was done, paid for by the requests that follow.
   */
  charge(b: BucketState, cost: number, limit = this.burst): void {
    this.refill(b);
    b.tokens = Math.max(-limit, b.tokens - cost);
  }
}
