/**
 * A bounded cache of verified tokens: token string -> Identity, least recently used first out,
 * bounded by entries and by the bytes of the token strings it holds, and an entry never outlives
 * its token's `exp`. Pure apart from the clock passed in.
 *
 * It is keyed by the whole token, so a hit is exactly a token that verified before. What it
 * trades away: a key removed from the key set (rotation, revocation) keeps accepting the tokens
 * it already verified until they expire (docs/AUTH.md, "Token cache").
 */
import type { Identity } from './identity.js';

export interface TokenCacheStats {
  entries: number;
  bytes: number;
  hits: number;
  misses: number;
  evictions: number;
}

export class TokenCache {
  // A Map iterates in insertion order; re-inserting on a hit makes the first key the LRU one.
  private readonly map = new Map<string, Identity>();
  private bytes = 0;
  private hits = 0;
  private misses = 0;
  private evictions = 0;

  constructor(readonly maxEntries: number, readonly maxBytes: number) {
    if (!Number.isInteger(maxEntries) || maxEntries < 0) throw new RangeError(`TokenCache maxEntries must be an integer >= 0, got ${maxEntries}`);
    if (!Number.isInteger(maxBytes) || maxBytes < 0) throw new RangeError(`TokenCache maxBytes must be an integer >= 0, got ${maxBytes}`);
  }

  /** The cached identity for `token`, or undefined (absent, or expired at `nowSec`: then dropped). */
  get(token: string, nowSec: number): Identity | undefined {
    const id = this.map.get(token);
    if (id === undefined) { this.misses++; return undefined; }
    if (id.exp <= nowSec) {
      this.delete(token);
      this.misses++;
      return undefined;
    }
    this.map.delete(token);
    this.map.set(token, id);
    this.hits++;
    return id;
  }

  /** Caches a verified identity; a token that could never fit, or is already expired, is not kept. */
  set(token: string, id: Identity, nowSec: number): void {
    if (id.exp <= nowSec || token.length > this.maxBytes || this.maxEntries === 0) return;
    if (this.map.has(token)) this.delete(token);
    while (this.map.size >= this.maxEntries || this.bytes + token.length > this.maxBytes) {
      const oldest = this.map.keys().next().value as string;
      this.delete(oldest);
      this.evictions++;
    }
    this.map.set(token, id);
    this.bytes += token.length;
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }

  stats(): TokenCacheStats {
    return { entries: this.map.size, bytes: this.bytes, hits: this.hits, misses: this.misses, evictions: this.evictions };
  }

  private delete(token: string): void {
    if (this.map.delete(token)) this.bytes -= token.length;
  }
}
