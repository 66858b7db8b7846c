/**
 * The benchmark verdicts (native-bench/load/stats.mjs): pairs by run id, bootstrap intervals,
 * "met" only when the whole interval clears the limit, runs needed when it does not.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const stats = (await import(pathToFileURL(path.join(root, 'native-bench', 'load', 'stats.mjs')).href)) as typeof import('../native-bench/load/stats.mjs');

test('pairs are matched by run id: a failed run drops its pair and shifts nothing', () => {
  const a = [{ runId: 0, value: 100 }, { runId: 1, value: 200 }, { runId: 2, value: 300 }];
  const b = [{ runId: 0, value: 110 }, { runId: 2, value: 330 }]; // run 1 of b failed
  const p = stats.pairByRunId(b, a);
  assert.deepEqual(p.map((x) => [x.runId, Number(x.ratio.toFixed(6))]), [[0, 1.1], [2, 1.1]]);
});

test('met only when the whole interval clears the limit; otherwise not met or inconclusive with runs needed', () => {
  const pairs = (rs: number[]) => rs.map((ratio, runId) => ({ runId, a: 1, b: ratio, ratio }));
  const tight = stats.pairedRatioInterval(pairs([1.2, 1.21, 1.19, 1.2, 1.22, 1.18]))!;
  assert.ok(tight.lo! > 1.1 && tight.hi! < 1.3, JSON.stringify(tight));
  assert.equal(stats.verdictOf(tight, 1.0, '>=').verdict, 'met');
  assert.equal(stats.verdictOf(tight, 1.5, '>=').verdict, 'not met');
  assert.equal(stats.verdictOf(tight, 1.1, '<=').verdict, 'not met');
  const wide = stats.pairedRatioInterval(pairs([0.81, 1.34, 0.95, 1.2, 1.05, 0.9]))!;
  const v = stats.verdictOf(wide, 1.0, '>=');
  assert.equal(v.verdict, 'inconclusive');
  assert.ok(v.runsNeeded === null || v.runsNeeded > 6, `runs needed ${v.runsNeeded}`);
  assert.equal(stats.verdictOf(tight, 1.0, '>=', { generatorBound: true }).verdict, 'generator-bound');
  assert.equal(stats.verdictOf(stats.pairedRatioInterval(pairs([1.2])), 1.0, '>=').verdict, 'not measured');
  // too few pairs for any verdict, however clear the runs look
  const few = stats.verdictOf(stats.pairedRatioInterval(pairs([0.2, 0.21, 0.19])), 1.0, '>=');
  assert.deepEqual([few.verdict, few.runsNeeded! >= stats.MIN_PAIRS], ['inconclusive', true]);
  // deterministic
  assert.deepEqual(stats.pairedRatioInterval(pairs([0.81, 1.34, 0.95])), stats.pairedRatioInterval(pairs([0.81, 1.34, 0.95])));
});

test('the point order is a permutation that changes with the seed', () => {
  const xs = Array.from({ length: 12 }, (_, i) => i);
  const a = stats.shuffled(xs, 1);
  assert.deepEqual([...a].sort((x, y) => x - y), xs);
  assert.notDeepEqual(a, stats.shuffled(xs, 2));
});

test('derived throughput: the smallest of main thread, busiest shard and all cores, named', async () => {
  const scale = (await import(pathToFileURL(path.join(root, 'native-bench', 'load', 'scale.mjs')).href)) as typeof import('../native-bench/load/scale.mjs');
  // main 1 us, shard 0.5 us per delivery: one shard on its own core leaves the main thread the limit
  const a = scale.deriveScale({ mainUs: 1, shardUs: 0.5, rooms: 10 }, 1, 2)!;
  assert.deepEqual([Math.round(a.perSec), a.bottleneck], [1e6, 'main thread']);
  // both on one core: 1.5 us per delivery on one core
  const b = scale.deriveScale({ mainUs: 1, shardUs: 0.5, rooms: 10 }, 1, 1)!;
  assert.deepEqual([Math.round(b.perSec), b.bottleneck], [666667, 'all cores']);
  // expensive shards: two share the work; one room cannot be split over shards
  const c = scale.deriveScale({ mainUs: 1, shardUs: 3, rooms: 10 }, 2, 3)!;
  assert.deepEqual([Math.round(c.perSec), c.bottleneck], [666667, 'busiest shard']);
  const d = scale.deriveScale({ mainUs: 1, shardUs: 3, rooms: 1 }, 4, 5)!;
  assert.deepEqual([Math.round(d.perSec), d.bottleneck], [333333, 'busiest shard']);
  assert.equal(scale.scaleTable({ mainUs: 1, shardUs: 0.5, rooms: 10 }, 3, 1, { 1: 5e5 }).length, 5);
});
