/**
 * The limit on creating rooms: a token bucket per principal (a named user's id; for anonymous
 * users, a hash of the client address the main thread saw at upgrade), so reconnecting does not
 * refill it. Buckets live in an LRU table of at most `maxEntries` principals; the least recently
 * used goes when it is full (a principal evicted that way starts again with a full bucket, which
 * takes `maxEntries` other principals creating rooms in between). Each shard keeps its own table.
 */

interface Bucket {
  tokens: number;
  last: number;
}

export class CreationLimiter {
  private readonly table = new Map<string, Bucket>();

  constructor(readonly ratePerSec: number, readonly burst: number, readonly maxEntries: number) {}

  get size(): number {
    return this.table.size;
  }

  /** Takes one token for `principal`: 0 when granted, else the milliseconds until one is back. */
  take(principal: string, now: number): number {
    let b = this.table.get(principal);
    if (b === undefined) {
      b = { tokens: this.burst, last: now };
      if (this.table.size >= this.maxEntries) this.table.delete(this.table.keys().next().value!);
    } else {
      this.table.delete(principal); // re-inserted below: Map order is the LRU order
      b.tokens = Math.min(this.burst, b.tokens + (Math.max(0, now - b.last) * this.ratePerSec) / 1000);
      b.last = now;
    }
    this.table.set(principal, b);
    if (b.tokens < 1) return Math.max(1, Math.ceil(((1 - b.tokens) * 1000) / this.ratePerSec));
    b.tokens -= 1;
    return 0;
  }
}
