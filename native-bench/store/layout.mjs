#!/usr/bin/env node
// Raw better-sqlite3 variants of the shard's flush (one thread, no store module), to see what a
// schema or statement choice costs per message and how many WAL pages a message writes:
//   base: messages keyed (room, seq) as the store has them (each message in 1:1 chat dirties a
//         page of its own room), the sender's cursor upserted, rooms.seq updated per room;
//   log:  an append-only table (rowid order) moved into messages every 8192 rows (the move's
//         time is printed apart): what deferring the per-room b-tree writes would save.
// F=nocursor,noroom,multi drops the cursor upsert / the rooms update, or inserts 16 rows per
// statement; P='pragma;pragma' adds pragmas. Bounded by the message count. From the repo root:
//   node native-bench/store/layout.mjs [base|log] [rooms=500] [batch=64] [msgs=100000] [page_size=4096] [wal_autocheckpoint=1000]
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
const Database = createRequire(import.meta.url)('better-sqlite3');
const [variant = 'base', roomsS = '500', batchS = '64', totalS = '100000', pageS = '4096', ckS = '1000'] = process.argv.slice(2);
const F = new Set((process.env.F ?? '').split(',')); const rooms = +roomsS, batch = +batchS, total = +totalS;
const dir = mkdtempSync(path.join(tmpdir(), 'layout-'));
const db = new Database(path.join(dir, 'db'));
db.pragma(`page_size = ${pageS}`);
db.pragma('journal_mode = WAL'); db.pragma('synchronous = NORMAL'); db.pragma('cache_size = -8192'); db.pragma(`wal_autocheckpoint = ${ckS}`); for (const p of (process.env.P ?? '').split(';').filter(Boolean)) db.pragma(p);
db.exec(`CREATE TABLE rooms(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, epoch TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE messages(room INTEGER NOT NULL, seq INTEGER NOT NULL, user TEXT NOT NULL, ts INTEGER NOT NULL, cid TEXT, frame BLOB NOT NULL, PRIMARY KEY(room, seq)) WITHOUT ROWID;
CREATE TABLE log(id INTEGER PRIMARY KEY, room INTEGER NOT NULL, seq INTEGER NOT NULL, user TEXT NOT NULL, ts INTEGER NOT NULL, cid TEXT, frame BLOB NOT NULL);
CREATE TABLE cursors(room INTEGER NOT NULL, user TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(room, user)) WITHOUT ROWID;`);
const ins = db.prepare('INSERT INTO rooms(name, epoch, seq) VALUES (?, ?, 0)');
for (let r = 0; r < rooms; r++) ins.run(`room-${r}`, 'e');
const begin = db.prepare('BEGIN IMMEDIATE'), commit = db.prepare('COMMIT');
const updRoom = db.prepare('UPDATE rooms SET seq = ? WHERE id = ?');
const insMsg = db.prepare(`INSERT INTO ${variant === 'log' ? 'log' : 'messages'}(room, seq, user, ts, cid, frame) VALUES (?, ?, ?, ?, ?, ?)`);
const upCur = db.prepare('INSERT INTO cursors(room, user, seq) VALUES (?, ?, ?) ON CONFLICT(room, user) DO UPDATE SET seq = excluded.seq');
const move = db.prepare('INSERT INTO messages SELECT room, seq, user, ts, cid, frame FROM log WHERE id <= ? ORDER BY room, seq');
const del = db.prepare('DELETE FROM log WHERE id <= ?');
const frame = Buffer.alloc(200, 7); const rowsBuf = []; const ins16 = db.prepare('INSERT INTO messages(room, seq, user, ts, cid, frame) VALUES ' + Array(16).fill('(?, ?, ?, ?, ?, ?)').join(', '));
const seqs = new Int32Array(rooms);
let i = 0, logged = 0, moveUs = 0;
const c0 = process.cpuUsage(); const t0 = performance.now();
while (i < total) {
  begin.run();
  const dirty = new Map();
  for (let k = 0; k < batch; k++, i++) {
    const r = (i * 7919) % rooms; const user = `u${r * 2 + (i & 1)}`;
    const seq = ++seqs[r];
    if (F.has('multi')) { rowsBuf.push(r + 1, seq, user, Date.now(), null, frame); if (rowsBuf.length === 96) { ins16.run(rowsBuf); rowsBuf.length = 0; } }
    else insMsg.run(r + 1, seq, user, Date.now(), null, frame);
    dirty.set(r, seq);
    if (!F.has('nocursor')) upCur.run(r + 1, user, seq);
  }
  if (rowsBuf.length) { for (let j = 0; j < rowsBuf.length; j += 6) insMsg.run(...rowsBuf.slice(j, j + 6)); rowsBuf.length = 0; }
  if (!F.has('noroom')) for (const [r, s] of dirty) updRoom.run(s, r + 1);
  commit.run();
  logged += batch;
  if (variant === 'log' && logged >= 8192) {
    const m0 = performance.now();
    const hi = db.prepare('SELECT max(id) FROM log').pluck().get();
    begin.run(); move.run(hi); del.run(hi); commit.run();
    moveUs += (performance.now() - m0) * 1000; logged = 0;
  }
}
const logPages = db.pragma('wal_checkpoint(PASSIVE)')[0].log; console.log('wal frames per msg', (logPages / i).toFixed(2), 'per commit', (logPages / (i / batch)).toFixed(1));
const wall = performance.now() - t0; const cpu = process.cpuUsage(c0);
console.log(`${variant} ${[...F].join('+')} rooms ${rooms} batch ${batch} page ${pageS} ck ${ckS}: wall ${(wall * 1000 / i).toFixed(2)} us/msg cpu ${((cpu.user + cpu.system) / i).toFixed(2)} (sys ${(cpu.system / i).toFixed(2)}) move ${(moveUs / i).toFixed(2)} us/msg`);
db.close(); rmSync(dir, { recursive: true, force: true });
