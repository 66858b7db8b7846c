/**
 * What only the SQLite backend has: rows really leave the file when trimmed, in steps that keep
 * to their time budget; a historyLimit lowered between runs reaches rooms this process never
 * touched; the in-memory room cache stays within its bound without changing an epoch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { frameOf, sameBytes } from './helpers/store-frames.js';
import { dbPath } from '../engine/store-dir.js';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { SqliteStore, StoreError } from '../workers/store/index.js';
import { Checkpointer } from '../workers/store/checkpointer.js';
import { IS_MSG } from '../workers/store/schema.js';

guardHandles();

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;

function fill(s: SqliteStore, rooms: number, perRoom: number, ts = Date.now()): void {
  for (let done = 0; done < rooms * perRoom;) {
    s.beginBatch();
    for (let k = 0; k < 500 && done < rooms * perRoom; k++, done++) {
      const room = `r${done % rooms}`;
      const seq = s.room(room).seq + 1;
      s.append(room, { seq, from: 'u', ts, cid: `c${seq}`, frame: frameOf(room, seq) });
    }
    s.commit();
  }
}

function logMessages(db: BetterSqlite3.Database): number {
  let n = 0;
  for (const name of db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'log_[0-9]*'").pluck().all() as string[]) {
    n += db.prepare(`SELECT count(*) FROM ${name} WHERE ${IS_MSG}`).pluck().get() as number;
  }
  return n;
}

function rowsOnDisk(dir: string): { messages: number; cids: number } {
  const db = new Database(dbPath(dir), { readonly: true });
  try {
    return {
      // Committed messages not yet moved out of a shard's log (schema v4) are on disk too.
      messages: (db.prepare('SELECT count(*) FROM messages').pluck().get() as number) + logMessages(db),
      cids: db.prepare('SELECT count(*) FROM cids').pluck().get() as number,
    };
  } finally {
    db.close();
  }
}

test('trim() removes the rows from the file in budgeted steps', (t) => {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir, historyLimit: 100, cidWindowMessages: 50 });
  t.after(() => s.close());
  fill(s, 20, 1000);
  assert.equal(rowsOnDisk(dir).messages, 20_000, 'reads honour historyLimit at once; rows stay until trim()');
  let calls = 0;
  let slowest = 0;
  for (;;) {
    const t0 = performance.now();
    const r = s.trim(Date.now(), 2);
    slowest = Math.max(slowest, performance.now() - t0);
    calls++;
    if (!r.more) break;
    assert.ok(calls < 10_000, 'trim finishes');
  }
  assert.ok(calls > 1, `${calls} calls: the work was split`);
  // One step (<= 256 rows) may start just before the deadline; on a loaded machine allow a margin.
  assert.ok(slowest < 250, `a 2 ms trim() call took ${slowest.toFixed(1)} ms`);
  assert.deepEqual(rowsOnDisk(dir), { messages: 20 * 100, cids: 20 * 50 });
  for (let r = 0; r < 20; r++) assert.equal(s.firstKept(`r${r}`), 901);
});

test('a historyLimit lowered between runs is applied to rooms this process never touched', (t) => {
  const dir = tempDir(t);
  const a = new SqliteStore({ dir, historyLimit: 1000 });
  fill(a, 5, 300);
  a.close();
  const b = new SqliteStore({ dir, historyLimit: 10 });
  t.after(() => b.close());
  for (let i = 0; i < 1000 && b.trim(Date.now(), 20).more; i++);
  assert.equal(rowsOnDisk(dir).messages, 5 * 10);
  assert.deepEqual(b.range('r3', 1, 300, 1 << 20).map((m) => m.seq), [291, 292, 293, 294, 295, 296, 297, 298, 299, 300]);
});

test('the room cache stays within roomCacheEntries and an evicted entry comes back with its epoch', (t) => {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir, roomCacheEntries: 50 });
  t.after(() => s.close());
  const epochs = new Map<string, string>();
  for (let r = 0; r < 200; r++) {
    const room = `room-${r}`;
    epochs.set(room, s.room(room).epoch);
    s.beginBatch();
    s.append(room, { seq: 1, from: 'u', ts: 1, cid: null, frame: frameOf(room, 1) });
    s.commit();
    assert.ok(s.cachedRooms <= 50, `${s.cachedRooms} cached`);
  }
  for (const [room, epoch] of epochs) assert.deepEqual(s.room(room), { name: room, epoch, seq: 1 });
  // A room that was only looked at (a join, no write) keeps its epoch too: it is not dropped.
  const joined = s.room('joined-only').epoch;
  fill(s, 120, 1);
  assert.equal(s.room('joined-only').epoch, joined);
});

test('fsync normal is WAL + synchronous=NORMAL, always is synchronous=FULL; bad options are TypeErrors naming the option', (t) => {
  const dir = tempDir(t);
  const normal = new SqliteStore({ dir });
  assert.deepEqual(normal.settings, { journalMode: 'wal', synchronous: 'NORMAL' });
  normal.close();
  const always = new SqliteStore({ dir, fsync: 'always' });
  assert.deepEqual(always.settings, { journalMode: 'wal', synchronous: 'FULL' });
  always.close();
  assert.throws(() => new SqliteStore({ dir, fsync: 'sometimes' as 'always' }), /fsync/);
  assert.throws(() => new SqliteStore({ dir, historyLimit: -1 }), /historyLimit/);
  assert.throws(() => new SqliteStore({ dir, cidWindowMs: 1.5 }), /cidWindowMs/);
  assert.throws(() => new SqliteStore({ dir, busyTimeoutMs: -5 }), /busyTimeoutMs/);
});

test('a room over both limits is trimmed by count and then by age, without waiting for the next sweep', (t) => {
  const dir = tempDir(t);
  const now = 1_800_000_000_000;
  const s = new SqliteStore({ dir, historyLimit: 100, historyMaxAgeMs: 60_000 });
  t.after(() => s.close());
  const drain = (): void => { for (let i = 0; i < 1000 && s.trim(now, 20).more; i++); };
  drain(); // the first call also runs the all-rooms sweep; the next one is a minute away
  fill(s, 1, 300, now - 120_000);
  fill(s, 1, 5, now - 1000);
  drain();
  assert.equal(s.firstKept('r0'), 301);
  assert.equal(rowsOnDisk(dir).messages, 5);
});

test('the Checkpointer copies the log into the database, after which the next writer restarts the log', (t) => {
  const dir = tempDir(t);
  assert.throws(() => new Checkpointer(dir), (e) => e instanceof StoreError && e.code === 'STORE_MISUSE');
  const s = new SqliteStore({ dir, autoCheckpointPages: 0, historyLimit: 1_000_000 });
  t.after(() => s.close());
  fill(s, 10, 500);
  const ck = new Checkpointer(dir);
  t.after(() => ck.close());
  const first = ck.checkpoint();
  assert.equal(first.busy, false);
  assert.ok(first.logPages > 50, `${first.logPages} pages in the log (autocheckpoint was off)`);
  assert.equal(first.checkpointedPages, first.logPages, 'no writer in between: all of it');
  fill(s, 1, 1);
  const second = ck.checkpoint();
  assert.ok(second.logPages < 10, `the log restarted: ${second.logPages} pages`);
  assert.equal(s.range('r0', 1, 1000, 1 << 30).length, 501);
});

test('the checkpoint worker copies pages while a writer commits, and stops on request', async (t) => {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir, autoCheckpointPages: 0, historyLimit: 1_000_000 });
  t.after(() => s.close());
  fill(s, 1, 1);
  const w = new Worker(new URL('../workers/store/checkpoint-worker.js', import.meta.url), { workerData: { dir, intervalMs: 1, progress: true } });
  const exited = once(w, 'exit');
  let progressed = false;
  const messages: unknown[] = [];
  w.on('message', (m: { progress?: unknown }) => { if (m.progress !== undefined) progressed = true; else messages.push(m); });
  // Keep writing (yielding between batches) until the worker has copied something: bounded.
  for (let i = 0; i < 5000 && !progressed; i++) {
    fill(s, 5, 8);
    await new Promise((r) => setImmediate(r));
  }
  assert.ok(progressed, 'the worker checkpointed while the writer ran');
  w.postMessage('stop');
  await exited;
  const report = messages[0] as { checkpoints: number; pagesCheckpointed: number; error?: unknown };
  assert.equal(report.error, undefined);
  assert.ok(report.checkpoints > 0 && report.pagesCheckpointed > 0, JSON.stringify(report));
  assert.equal(s.range('r4', 1, 1 << 20, 1 << 30).length, s.room('r4').seq);
});

function roomRow(dir: string, name: string): number {
  const db = new Database(dbPath(dir), { readonly: true });
  try {
    return db.prepare('SELECT seq FROM rooms WHERE name = ?').pluck().get(name) as number;
  } finally {
    db.close();
  }
}

test('a commit writes no rooms row for a known room (schema v3), and a reopened store still finds the latest seq', (t) => {
  const dir = tempDir(t);
  const a = new SqliteStore({ dir });
  fill(a, 3, 1); // the rooms' first batch writes their rows, at seq 1
  fill(a, 3, 39); // later batches write messages only
  assert.equal(roomRow(dir, 'r0'), 1, 'rooms.seq stays as the room was created');
  a.close();
  const b = new SqliteStore({ dir });
  t.after(() => b.close());
  assert.deepEqual([0, 1, 2].map((i) => b.room(`r${i}`).seq), [40, 40, 40]);
  b.beginBatch();
  b.append('r1', { seq: 41, from: 'u', ts: Date.now(), cid: null, frame: frameOf('r1', 41) });
  b.commit();
  assert.equal(b.range('r1', 1, 41, 1 << 20).length, 41);
});

test('trimming away a room\'s newest messages (age limit, historyLimit 0) keeps its seq: no seq is reused after a reopen', (t) => {
  for (const opts of [{ historyMaxAgeMs: 1000 }, { historyLimit: 0 }]) {
    const dir = tempDir(t);
    const old = Date.now() - 60_000;
    const a = new SqliteStore({ dir, ...opts });
    fill(a, 2, 1, old); // rooms rows written at seq 1
    fill(a, 2, 29, old);
    while (a.trim(Date.now(), 50).more) { /* until done */ }
    assert.equal(rowsOnDisk(dir).messages, 0, `${JSON.stringify(opts)}: every message trimmed`);
    assert.equal(roomRow(dir, 'r0'), 30, 'the trim raised rooms.seq to the last seq it removed');
    a.close();
    const b = new SqliteStore({ dir, ...opts });
    assert.equal(b.room('r0').seq, 30, `${JSON.stringify(opts)}: the seq survives the messages`);
    assert.equal(b.room('r1').seq, 30);
    b.beginBatch();
    b.append('r0', { seq: 31, from: 'u', ts: Date.now(), cid: null, frame: frameOf('r0', 31) });
    b.commit();
    b.close();
  }
});

test('pending frames (copied into arenas) keep their bytes: the caller reusing its buffer, batches across arena ends, frames past a quarter arena', (t) => {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir, historyLimit: 1_000_000, logMoveRows: 65536, logMoveMs: 60_000 });
  t.after(() => s.close());
  const sizes = (seq: number): number => (seq % 97 === 0 ? 70_000 + seq : 1 + ((seq * 7919) % 3000));
  const scratch = new Uint8Array(80_000);
  let seq = 0;
  const held: { seq: number; frame: Uint8Array }[] = [];
  for (let b = 0; b < 6; b++) {
    s.beginBatch();
    for (let k = 0; k < 250; k++) {
      seq++;
      const f = frameOf('arena', seq, sizes(seq));
      scratch.set(f);
      s.append('arena', { seq, from: 'u', ts: 1, cid: null, frame: scratch.subarray(0, f.byteLength) });
      scratch.fill(0xee); // the caller's bytes are reused at once, as the shard's ring is
    }
    // Reads of the open batch see every pending frame whole; keep some views past the commit.
    const pending = s.range('arena', seq - 249, seq, 1 << 30);
    assert.equal(pending.length, 250);
    for (const m of pending) assert.ok(sameBytes(m.frame, frameOf('arena', m.seq, sizes(m.seq))), `pending ${m.seq}`);
    held.push(pending[0]!, pending[249]!);
    s.commit();
  }
  // About 2.6 MB of frames: several arenas filled; no view was overwritten by a later batch.
  for (const m of held) assert.ok(sameBytes(m.frame, frameOf('arena', m.seq, sizes(m.seq))), `held view ${m.seq}`);
  const all = s.range('arena', 1, seq, 1 << 30);
  assert.equal(all.length, seq);
  for (const m of all) assert.ok(sameBytes(m.frame, frameOf('arena', m.seq, sizes(m.seq))), `stored ${m.seq}`);
});
