#!/usr/bin/env node
// One database shared by all shard workers, or one file per writer (a partition each): commits/s
// and messages/s with 1 and 2 concurrent writer threads doing small group commits, the shape the
// shard loop gives the store (BEGIN IMMEDIATE; a few message inserts + the rooms' seq; COMMIT).
// Bounded: each arm runs for STORE_BENCH_MS (default 2000 ms). Run from the repository root:
//   node native-bench/store/writers.mjs [batch=8] [bodyBytes=128]
// Uses better-sqlite3 directly (not the store module) so it measures SQLite's locking alone.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { mkdtempSync, rmSync } from 'node:fs';
import { URL } from 'node:url';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const Database = require('better-sqlite3');
const MS = Number(process.env.STORE_BENCH_MS ?? 2000);

function open(file, sync) {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${sync}`);
  db.pragma('busy_timeout = 5000');
  db.exec(`CREATE TABLE IF NOT EXISTS rooms(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, seq INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS messages(room INTEGER NOT NULL, seq INTEGER NOT NULL, user TEXT NOT NULL, ts INTEGER NOT NULL,
      cid TEXT, frame BLOB NOT NULL, PRIMARY KEY(room, seq)) WITHOUT ROWID;`);
  return db;
}

if (!isMainThread) {
  const { file, writer, batch, body, sync } = workerData;
  const db = open(file, sync);
  const rooms = 100;
  const ins = db.prepare('INSERT INTO messages(room, seq, user, ts, cid, frame) VALUES (?, ?, ?, ?, ?, ?)');
  const upd = db.prepare('UPDATE rooms SET seq = ? WHERE id = ?');
  const mkRoom = db.prepare('INSERT OR IGNORE INTO rooms(id, name, seq) VALUES (?, ?, 0)');
  const base = writer * 1000;
  for (let r = 0; r < rooms; r++) mkRoom.run(base + r, `w${writer}-r${r}`);
  const seqs = new Int32Array(rooms);
  const frame = Buffer.alloc(body, 7);
  const begin = db.prepare('BEGIN IMMEDIATE'), commit = db.prepare('COMMIT');
  let commits = 0, msgs = 0, i = 0;
  const end = Date.now() + workerData.ms;
  while (Date.now() < end) {
    begin.run();
    for (let k = 0; k < batch; k++, i++) {
      const r = i % rooms;
      const s = ++seqs[r];
      ins.run(base + r, s, 'user' + (i & 63), Date.now(), null, frame);
      upd.run(s, base + r);
    }
    commit.run();
    commits++; msgs += batch;
  }
  db.close();
  parentPort.postMessage({ commits, msgs });
} else {
  const batch = Number(process.argv[2] ?? 8), body = Number(process.argv[3] ?? 128);
  const rows = [];
  for (const sync of ['NORMAL', 'FULL']) {
    for (const layout of ['single file', 'file per writer']) {
      for (const writers of [1, 2]) {
        const dir = mkdtempSync(path.join(tmpdir(), 'store-bench-'));
        try {
          const files = [...Array(writers)].map((_, w) => path.join(dir, layout === 'single file' ? 'one.db' : `p${w}.db`));
          open(files[0], sync).close(); // create the schema once before the race
          const t0 = Date.now();
          const res = await Promise.all(files.map((file, writer) => new Promise((resolve, reject) => {
            const w = new Worker(new URL(import.meta.url), { workerData: { file, writer, batch, body, sync, ms: MS } });
            w.once('message', resolve); w.once('error', reject);
          })));
          const secs = (Date.now() - t0) / 1000;
          const commits = res.reduce((a, r) => a + r.commits, 0), msgs = res.reduce((a, r) => a + r.msgs, 0);
          rows.push({ sync, layout, writers, commitsPerSec: Math.round(commits / secs), msgsPerSec: Math.round(msgs / secs) });
          console.error(JSON.stringify(rows.at(-1)));
        } finally { rmSync(dir, { recursive: true, force: true }); }
      }
    }
  }
  console.log(`batch ${batch} msgs x ${body} B, ${MS} ms per arm`);
  console.log('| synchronous | layout | writer threads | commits/s | msgs/s |\n|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.sync} | ${r.layout} | ${r.writers} | ${r.commitsPerSec} | ${r.msgsPerSec} |`);
}
