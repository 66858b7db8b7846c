/**
 * Unit: the token bucket (engine/server/token-bucket.ts) with an injected clock: refill, burst
 * cap, retry-after, charging work after the fact, and a clock that steps backwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenBucketPolicy, monotonicMs } from '../engine/server/token-bucket.js';

function clocked(rate: number, burst: number): { p: TokenBucketPolicy; at: (ms: number) => void } {
  let now = 1000;
  return { p: new TokenBucketPolicy(rate, burst, () => now), at: (ms: number) => { now = ms; } };
}

test('a full bucket gives burst tokens, then one per 1000/rate ms; retry-after says when', () => {
  const { p, at } = clocked(10, 5);
  const b = p.full();
  for (let i = 0; i < 5; i++) assert.equal(p.take(b), 0, `token ${i}`);
  assert.equal(p.take(b), 100, 'empty: the next token is 100 ms away at 10/s');
  at(1050);
  assert.equal(p.take(b), 50);
  at(1100);
  assert.equal(p.take(b), 0);
  at(1_000_000);
  for (let i = 0; i < 5; i++) assert.equal(p.take(b), 0);
  assert.ok(p.take(b) > 0, 'a long idle time refills to burst, not beyond');
});

test('a clock that steps backwards costs nothing: no debt, the bucket goes on from the new reading', () => {
  const { p, at } = clocked(10, 50);
  const b = p.full();
  for (let i = 0; i < 10; i++) assert.equal(p.take(b), 0);
  at(1000 - 3_600_000); // one hour back
  for (let i = 0; i < 40; i++) assert.equal(p.take(b), 0, `frame ${i} after the step`);
  assert.equal(p.take(b), 100);
  at(1000 - 3_600_000 + 100);
  assert.equal(p.take(b), 0, 'refill resumes from the stepped reading');
});

test('charge takes tokens for work done (going negative, bounded), paid back by time', () => {
  const { p, at } = clocked(10, 50);
  const b = p.full();
  p.charge(b, 80);
  assert.equal(b.tokens, -30);
  p.charge(b, 1000);
  assert.equal(b.tokens, -50, 'the debt is bounded by burst by default');
  assert.equal(p.take(b), 5100, 'a frame waits until the debt is repaid and one token earned');
  at(1000 + 5100);
  assert.equal(p.take(b), 0);
});

test('the default clock is monotonic (performance.now) and rates must be positive', () => {
  assert.equal(new TokenBucketPolicy(1, 1).clock, monotonicMs);
  const a = monotonicMs(); const c = monotonicMs();
  assert.ok(c >= a);
  assert.throws(() => new TokenBucketPolicy(0, 1), RangeError);
  assert.throws(() => new TokenBucketPolicy(1, 0), RangeError);
});
