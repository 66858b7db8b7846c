/**
 * Regressions (issue 10, items 6 and 7): the shard supervisor (engine/server/supervisor.ts).
 * A shard stuck in an endless loop used to be invisible (S_UP stayed 1, /readyz 200, its rooms
 * answered `overloaded` forever, engine.publish() never settled); now its heartbeat stops, it is
 * terminated and restarted. A shard that keeps crashing used to restart in a tight loop; now
 * restarts back off and, past the restart budget, the shard is reported failed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine, openClient, joinRoom, pubTo, roomsPerShard } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { httpGet, waitFor } from './helpers/client.js';
import type { EngineError } from '../engine/errors.js';

guardHandles();

test('a stuck shard misses its heartbeat: /readyz 503, pending publishes settle, it is terminated and restarted, its rooms work again', async (t) => {
  const engine = await startEngine(t, { shards: 2, shardStallMs: 1000 });
  const byShard = roomsPerShard(engine, 2, 'stuck');
  const room = byShard[0]![0]!;
  const other = byShard[1]![0]!;
  const k = engine.shardOf(room);
  const c = await openClient(t, engine, 'stuck-user');
  const j = await joinRoom(c, room);
  await joinRoom(c, other);
  assert.equal((await httpGet(engine.port, '/readyz')).status, 200);
  engine._crashShard(k, 'hang');
  const pending = engine.publish(room, 'while stuck');
  const t0 = performance.now();
  const err = await pending.then(() => null, (e: EngineError) => e);
  const settledMs = performance.now() - t0;
  assert.equal(err?.code, 'SHARDCHAT_SHARD_RESTARTED', `the publish queued to the stuck shard settles with a typed error: ${String(err)}`);
  assert.ok(settledMs < 5000, `settled after ${Math.round(settledMs)} ms (stall limit 1000 ms)`);
  const st = engine.stats().shards[k]!;
  assert.equal(st.stalls, 1, 'the stall is counted');
  // The other shard kept working throughout.
  assert.equal((await pubTo(c, other, 'other shard')).t, 'ack');
  const re = await c.next((f) => f.t === 'joined' && f.room === room && f.ref === undefined, 10_000, 'the replayed joined');
  assert.notEqual(re.epoch, j.epoch, 'the restarted room has a new epoch');
  await waitFor(async () => (await httpGet(engine.port, '/readyz')).status === 200, '/readyz 200 again', 10_000);
  assert.equal((await pubTo(c, room, 'after restart')).seq, 1);
  const m = (await httpGet(engine.port, '/metrics')).body;
  assert.match(m, new RegExp(`shardchat_shard_stalls_total\\{shard="${k}"\\} 1`));
  assert.equal(engine.stats().shards[k]!.restarts, 1);
});

test('/readyz is 503 while a stuck shard is being replaced', async (t) => {
  const engine = await startEngine(t, { shards: 1, shardStallMs: 1000 });
  engine._crashShard(0, 'hang');
  await waitFor(async () => (await httpGet(engine.port, '/readyz')).status === 503, '/readyz 503 for the stuck shard', 5000);
  await waitFor(async () => (await httpGet(engine.port, '/readyz')).status === 200, '/readyz 200 after the restart', 10_000);
});

test('restarts back off, and past the restart budget the shard is reported failed: readyz 503, metric, typed errors', async (t) => {
  const engine = await startEngine(t, { shards: 1, shardRestartBudget: 2 });
  const c = await openClient(t, engine, 'budget');
  await joinRoom(c, 'b');
  const stamps: number[] = [];
  for (let round = 1; round <= 2; round++) {
    engine._crashShard(0, 'throw');
    const t0 = performance.now();
    await waitFor(() => { const s = engine.stats().shards[0]!; return s.restarts === round && s.up; }, `restart ${round}`, 10_000);
    stamps.push(performance.now() - t0);
  }
  assert.ok(stamps[1]! >= 90, `the second restart within the window backs off (took ${Math.round(stamps[1]!)} ms; the first ${Math.round(stamps[0]!)} ms)`);
  engine._crashShard(0, 'throw');
  await waitFor(() => engine.stats().shards[0]!.failed, 'the shard reported failed', 10_000);
  assert.equal(engine.stats().shards[0]!.restarts, 2, 'no restart past the budget');
  assert.equal((await httpGet(engine.port, '/readyz')).status, 503);
  assert.match((await httpGet(engine.port, '/metrics')).body, /shardchat_shard_failed\{shard="0"\} 1/);
  const r = await c.request({ t: 'pub', room: 'b', body: 'x' });
  assert.deepEqual([r.t, r.code], ['err', 'internal'], JSON.stringify(r));
  await assert.rejects(engine.publish('b', 'x'), (e: EngineError) => e.code === 'SHARDCHAT_SHARD_FAILED');
});
