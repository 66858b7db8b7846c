#!/usr/bin/env node
// The SQLite store driven the way a shard drives it under the load bench's scenarios, one thread,
// no sockets: per message append() of a ~200 B msg frame plus the sender's cursor (every named
// member has one), one commit() per batch. Prints wall and CPU time per message and the commit
// latency distribution, so schema, statement and pragma choices can be compared quickly.
// Bounded by the message count. Run after `npm run build`, from the repo root:
// With "checkpointer" as 7th argument a Checkpointer worker checkpoints every 50 ms and the
// writer's own autocheckpoint is a 16384-page backstop (as the engine runs it).
//   node native-bench/store/shard-pattern.mjs [rooms=500] [batch=64] [msgs=200000] [cid=0|1] [fsync=normal] [checkpointer]
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';

const storeModule = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/workers/store/index.js');
const { SqliteStore } = await import(storeModule);
const rooms = Number(process.argv[2] ?? 500), batch = Number(process.argv[3] ?? 64), total = Number(process.argv[4] ?? 200_000);
const withCid = process.argv[5] === '1', fsync = process.argv[6] ?? 'normal', withCk = process.argv[7] === 'checkpointer';
// CK_MS: the thread's interval (default 50); CK_PAGES: the writer's autocheckpoint (default 1000, 16384 with the thread)
const ckMs = Number(process.env.CK_MS ?? 50);
const ckPages = process.env.CK_PAGES !== undefined ? Number(process.env.CK_PAGES) : (withCk ? 16384 : 1000);
/** This thread's CPU in microseconds (user, system), from /proc (10 ms ticks): other threads excluded. */
function threadCpu() {
  const f = readFileSync('/proc/thread-self/stat', 'utf8').slice(readFileSync('/proc/thread-self/stat', 'utf8').lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]) * 10_000, system: Number(f[12]) * 10_000 };
}
const dir = mkdtempSync(path.join(tmpdir(), 'store-pattern-'));
try {
  // LOG_ROWS / LOG_MS: the log's move thresholds (schema v4), defaults when unset
  const store = new SqliteStore({ dir, fsync, autoCheckpointPages: ckPages, ...(process.env.LOG_ROWS ? { logMoveRows: Number(process.env.LOG_ROWS) } : {}), ...(process.env.LOG_MS ? { logMoveMs: Number(process.env.LOG_MS) } : {}) });
  const ck = withCk ? new Worker(pathToFileURL(path.join(path.dirname(storeModule), 'checkpoint-worker.js')), { workerData: { dir, intervalMs: ckMs } }) : null;
  const frame = new Uint8Array(200).fill(7);
  const commits = Math.ceil(total / batch);
  const us = new Float64Array(commits);
  let i = 0;
  const c0 = threadCpu(); const p0 = process.cpuUsage(); const t0 = performance.now();
  for (let c = 0; c < commits; c++) {
    store.beginBatch();
    for (let k = 0; k < batch; k++, i++) {
      // the bench's senders take turns round the rooms; two members per room in chat-1to1
      const room = `room-${(i * 7919) % rooms}`;
      const user = `u${(i % rooms) * 2 + (i & 1)}`;
      const cid = withCid ? `c${i}` : null;
      if (cid !== null && store.findCid(room, user, cid, Date.now()) !== 0) throw new Error('unexpected dup');
      const seq = store.room(room).seq + 1;
      store.append(room, { seq, from: user, ts: Date.now(), cid, frame });
      store.setCursor(room, user, seq);
    }
    const s = performance.now();
    store.commit();
    us[c] = (performance.now() - s) * 1000;
    store.maintain?.(); // after the acks, as the shard does (the log's move, schema v4; absent before)
  }
  const wall = performance.now() - t0; const c1 = threadCpu(); const cpu = { user: c1.user - c0.user, system: c1.system - c0.system }; const pcpu = process.cpuUsage(p0);
  let ckReport = null;
  if (ck !== null) { ck.postMessage('stop'); [ckReport] = await once(ck, 'message'); }
  store.close();
  const sorted = [...us].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))].toFixed(0);
  console.log(`rooms ${rooms} batch ${batch} msgs ${i} cid ${withCid ? 1 : 0} fsync ${fsync} autocheckpoint ${ckPages}${withCk ? ` thread every ${ckMs} ms` : ''}: ` +
    `wall ${(wall * 1000 / i).toFixed(2)} us/msg, writer cpu ${((cpu.user + cpu.system) / i).toFixed(2)} us/msg (sys ${(cpu.system / i).toFixed(2)}), ` +
    `process cpu ${((pcpu.user + pcpu.system) / i).toFixed(2)} us/msg; ` +
    `commit us p50 ${q(0.5)} p99 ${q(0.99)} max ${sorted.at(-1).toFixed(0)}${ckReport ? `; checkpointer ${JSON.stringify(ckReport)}` : ''}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
