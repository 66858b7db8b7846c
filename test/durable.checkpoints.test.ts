/**
 * The engine's WAL checkpoint thread (engine/server/checkpoints.ts) on a real SQLite file with
 * real shard workers: with store 'sqlite' it runs and copies the shards' log into the database
 * file (so the log stays short and no shard commit carries a checkpoint), /metrics shows it,
 * checkpointIntervalMs 0 turns it off, and close() stops it (the handle guard fails a leak).
 * Every message acked before a restart is still there afterwards, with the thread running.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import type { EngineOptions } from '../engine/index.js';
import { dbPath } from '../engine/store-dir.js';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { openClient, startEngine } from './helpers/engine.js';
import { waitFor } from './helpers/client.js';

guardHandles();

const durable = (dir: string, extra: EngineOptions = {}): EngineOptions => ({ store: 'sqlite', dataDir: dir, shards: 2, ...extra });

async function publishMany(e: { publish(room: string, body: unknown): Promise<{ seq: number }> }, rooms: number, n: number): Promise<void> {
  const pad = 'x'.repeat(500);
  for (let i = 0; i < n; i += 200) {
    await Promise.all(Array.from({ length: Math.min(200, n - i) }, (_, k) => e.publish(`ck-${(i + k) % rooms}`, { i: i + k, pad })));
  }
}

test('with store sqlite the checkpoint thread copies the log into the database and /metrics counts it', async (t) => {
  const dir = tempDir(t);
  const e = await startEngine(t, durable(dir, { checkpointIntervalMs: 10 }));
  await publishMany(e, 50, 3000);
  await waitFor(() => (e.metricsSnapshot().checkpoints?.pages ?? 0) > 0, 'the thread checkpointed pages', 10_000);
  // The database file comes to hold the messages (copied there by the thread, not only in the
  // -wal); a passive checkpoint may copy the log's tail a tick later, so wait for it.
  await waitFor(() => statSync(dbPath(dir)).size > 3000 * 500, 'the database file holds the messages', 10_000);
  const c = e.metricsSnapshot().checkpoints!;
  assert.equal(c.failed, 0);
  assert.ok(c.checkpoints > 0, JSON.stringify(c));
  const text = await (await fetch(`http://127.0.0.1:${e.port}/metrics`)).text();
  assert.match(text, /^shardchat_store_checkpoint_pages_total [1-9]\d*$/m);
  assert.match(text, /^shardchat_store_checkpoint_failed 0$/m);
});

test('checkpointIntervalMs 0: no checkpoint thread (SQLite checkpoints inside the shards\' commits)', async (t) => {
  const dir = tempDir(t);
  const e = await startEngine(t, durable(dir, { checkpointIntervalMs: 0 }));
  await publishMany(e, 10, 500);
  assert.equal(e.metricsSnapshot().checkpoints, null);
  const text = await (await fetch(`http://127.0.0.1:${e.port}/metrics`)).text();
  assert.doesNotMatch(text, /^shardchat_store_checkpoint_pages_total [1-9]/m);
});

test('acked messages survive a restart with the checkpoint thread running, and the thread stops with the engine', async (t) => {
  const dir = tempDir(t);
  const e1 = await startEngine(t, durable(dir, { checkpointIntervalMs: 5 }));
  await publishMany(e1, 20, 2000);
  await e1.close();
  const e2 = await startEngine(t, durable(dir, { checkpointIntervalMs: 5 }));
  const c = await openClient(t, e2, 'reader');
  for (const room of ['ck-0', 'ck-7', 'ck-19']) {
    const j = await c.request({ t: 'join', room });
    assert.equal(j.t, 'joined');
    assert.equal(j.seq, 100, `${room}: ${JSON.stringify(j)}`);
    const h = await c.request({ t: 'hist', room, limit: 100 });
    assert.deepEqual((h.msgs as { seq: number }[]).map((m) => m.seq), Array.from({ length: 100 }, (_, i) => i + 1));
  }
});
