#!/usr/bin/env node
// Messages/s through the store module itself (SqliteStore: batch buffering, room cache, one
// transaction per commit) with 1 and 2 shard-like worker threads on one data directory, as the
// shard will drive it: per batch, for each message findCid + append (+ a cursor every 4th).
// Bounded: STORE_BENCH_MS per arm (default 2000). Run after `npm run build`, from the repo root:
//   node native-bench/store/through-store.mjs [batch=8] [bodyBytes=128] [fsync=normal]
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { URL, fileURLToPath } from 'node:url';

const storeModule = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/workers/store/index.js');
const MS = Number(process.env.STORE_BENCH_MS ?? 2000);

if (!isMainThread) {
  const { SqliteStore } = await import(storeModule);
  const { dir, writer, batch, body, fsync, ms } = workerData;
  const store = new SqliteStore({ dir, fsync, historyLimit: 1_000_000_000 });
  const frame = new Uint8Array(body).fill(7);
  let commits = 0, msgs = 0, i = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    store.beginBatch();
    for (let k = 0; k < batch; k++, i++) {
      const room = `w${writer}-r${i % 100}`;
      const user = `user${i & 63}`;
      const cid = `c${i}`;
      if (store.findCid(room, user, cid, Date.now()) !== 0) throw new Error('unexpected dup');
      store.append(room, { seq: store.room(room).seq + 1, from: user, ts: Date.now(), cid, frame });
      if ((i & 3) === 0) store.setCursor(room, user, store.room(room).seq);
    }
    store.commit();
    commits++; msgs += batch;
  }
  store.close();
  parentPort.postMessage({ commits, msgs });
} else {
  const batch = Number(process.argv[2] ?? 8), body = Number(process.argv[3] ?? 128), fsync = process.argv[4] ?? 'normal';
  console.log(`through SqliteStore: batch ${batch} x ${body} B, fsync ${fsync}, ${MS} ms per arm`);
  console.log('| writer threads | commits/s | msgs/s |\n|---|---|---|');
  for (const writers of [1, 2]) {
    const dir = mkdtempSync(path.join(tmpdir(), 'store-through-'));
    try {
      const t0 = Date.now();
      const res = await Promise.all([...Array(writers)].map((_, writer) => new Promise((resolve, reject) => {
        const w = new Worker(new URL(import.meta.url), { workerData: { dir, writer, batch, body, fsync, ms: MS } });
        w.once('message', resolve); w.once('error', reject);
      })));
      const secs = (Date.now() - t0) / 1000;
      const commits = res.reduce((a, r) => a + r.commits, 0), msgs = res.reduce((a, r) => a + r.msgs, 0);
      console.log(`| ${writers} | ${Math.round(commits / secs)} | ${Math.round(msgs / secs)} |`);
    } finally { rmSync(dir, { recursive: true, force: true }); }
  }
}
