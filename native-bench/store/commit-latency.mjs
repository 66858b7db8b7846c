#!/usr/bin/env node
// How long one commit() of the SQLite store takes, as a distribution: a shard's batch is late by
// this much. Shows the automatic WAL checkpoint (every 1000 pages) as the tail. One thread,
// COMMITS commits of BATCH messages (with a cid each) over 100 rooms; bounded by the count.
// With "checkpointer" as 4th argument, a Checkpointer worker (workers/store/checkpoint-worker.ts)
// checkpoints every 50 ms and the writer's own autocheckpoint is only a 16384-page backstop.
//   npm run build && node native-bench/store/commit-latency.mjs [commits=20000] [batch=8] [fsync=normal] [checkpointer]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { fileURLToPath, pathToFileURL } from 'node:url';

const storeModule = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/workers/store/index.js');
const { SqliteStore } = await import(storeModule);
const withCheckpointer = process.argv[5] === 'checkpointer';
const commits = Number(process.argv[2] ?? 20_000), batch = Number(process.argv[3] ?? 8), fsync = process.argv[4] ?? 'normal';
const dir = mkdtempSync(path.join(tmpdir(), 'store-latency-'));
try {
  const store = new SqliteStore({ dir, fsync, historyLimit: 1_000_000_000, autoCheckpointPages: withCheckpointer ? 16384 : 1000 });
  const ckWorker = withCheckpointer
    ? new Worker(pathToFileURL(path.join(path.dirname(storeModule), 'checkpoint-worker.js')), { workerData: { dir, intervalMs: 50 } })
    : null;
  const frame = new Uint8Array(128).fill(7);
  const us = new Float64Array(commits);
  let i = 0;
  for (let c = 0; c < commits; c++) {
    store.beginBatch();
    for (let k = 0; k < batch; k++, i++) {
      const room = `r${i % 100}`;
      store.append(room, { seq: store.room(room).seq + 1, from: `u${i & 63}`, ts: Date.now(), cid: `c${i}`, frame });
    }
    const t0 = process.hrtime.bigint();
    store.commit();
    us[c] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  let ckReport = null;
  if (ckWorker !== null) {
    ckWorker.postMessage('stop');
    [ckReport] = await once(ckWorker, 'message');
  }
  store.close();
  const sorted = [...us].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))].toFixed(0);
  const over1ms = sorted.filter((x) => x > 1000).length;
  console.log(`${commits} commits x ${batch} msgs, fsync ${fsync}${ckReport ? `, checkpointer thread (${JSON.stringify(ckReport)})` : ''}: commit() us p50 ${q(0.5)} p90 ${q(0.9)} p99 ${q(0.99)} p99.9 ${q(0.999)} max ${sorted.at(-1).toFixed(0)}; ${over1ms} over 1 ms`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
