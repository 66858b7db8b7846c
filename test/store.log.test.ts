/**
 * The SQLite store's per-shard log (schema v4, docs/STORE.md "The append-only log"): a commit
 * appends its messages and cursors to log_<shard>, and the shard moves them into messages /
 * cursors / cids later. These tests catch rows in the log: a kill -9 before any move, reads of a
 * room whose rows are still unmoved (history, the latest page, a cursor, a cid, a redaction,
 * a room evicted from the cache), shards that no longer exist, a v3 directory, the move's bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type BetterSqlite3 from 'better-sqlite3';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { frameOf, sameBytes } from './helpers/store-frames.js';
import { dbPath } from '../engine/store-dir.js';
import { SqliteStore } from '../workers/store/index.js';
import { LOG_CURSOR, LOG_MSG, LOG_MSG_CURSOR, logTableSql, migrate, SCHEMA_VERSION } from '../workers/store/schema.js';
import { LOG_PER_ROOM, LOG_ROOMS, LOG_TS } from './fixtures/store-log-writer.js';
import type { RoomDump, StoreWorkerInput, StoreWorkerOutput } from './fixtures/store-worker.js';

guardHandles();

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;
const WRITER = fileURLToPath(new URL('./fixtures/store-log-writer.js', import.meta.url));
const WORKER_URL = new URL('./fixtures/store-worker.js', import.meta.url);

/** Rows per log table, read with a connection of its own (read-only). */
function logRows(dir: string): Record<string, number> {
  const db = new Database(dbPath(dir), { readonly: true });
  try {
    const out: Record<string, number> = {};
    for (const name of db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'log_[0-9]*' ORDER BY name").pluck().all() as string[]) {
      out[name] = db.prepare(`SELECT count(*) FROM ${name}`).pluck().get() as number;
    }
    return out;
  } finally {
    db.close();
  }
}

test('kill -9 with every committed row still in the log: after a restart seqs, messages, cursors and cids are all there', async (t) => {
  const dir = tempDir(t);
  const child = spawn(process.execPath, [WRITER, dir, '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  await new Promise<void>((resolve) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; if (out.includes('\n')) resolve(); });
    child.on('exit', () => resolve());
  });
  child.kill('SIGKILL');
  const [, signal] = await exited as [number | null, string | null];
  assert.equal(signal, 'SIGKILL', `the writer ended before the kill: ${out} ${err}`);
  const [, unmoved, batches, moves] = out.trim().split(' ').map(Number);
  // Per batch 12 messages, each carrying its sender's cursor (schema v5: one row), and 6 or 12
  // reader cursors, none moved.
  assert.equal(batches, LOG_PER_ROOM);
  assert.equal(moves, 0);
  assert.equal(unmoved, LOG_ROOMS * LOG_PER_ROOM + LOG_ROOMS * Math.ceil(LOG_PER_ROOM / 2));
  assert.equal(logRows(dir).log_3, unmoved, 'at the kill, every committed row was in the log');

  const s = new SqliteStore({ dir, shard: 0, historyLimit: 1_000_000, cidWindowMs: 1 << 30 });
  t.after(() => s.close());
  assert.equal(s.unmovedRows, 0);
  for (let r = 0; r < LOG_ROOMS; r++) {
    const room = `room-${r}`;
    assert.equal(s.room(room).seq, LOG_PER_ROOM, `${room}: resume at the exact seq`);
    const msgs = s.range(room, 1, LOG_PER_ROOM, 1 << 30);
    assert.deepEqual(msgs.map((m) => m.seq), Array.from({ length: LOG_PER_ROOM }, (_, i) => i + 1), room);
    assert.ok(msgs.every((m) => sameBytes(m.frame, frameOf(room, m.seq)) && m.from === `u-${r}` && m.ts === LOG_TS + m.seq && m.cid === `c-${r}-${m.seq}`), `${room}: the rows' columns`);
    assert.equal(s.cursor(room, `u-${r}`), LOG_PER_ROOM, `${room}: the sender's cursor, the last of the log`);
    assert.equal(s.cursor(room, `reader-${r}`), LOG_PER_ROOM % 2 === 1 ? LOG_PER_ROOM : LOG_PER_ROOM - 1, `${room}: the reader's last cursor`);
    assert.equal(s.findCid(room, `u-${r}`, `c-${r}-7`, LOG_TS + 100), 7, `${room}: a cid from the log`);
    assert.equal(s.findCid(room, `u-${r}`, `c-${r}-${LOG_PER_ROOM + 1}`, LOG_TS + 100), 0);
  }
  assert.equal(logRows(dir).log_3, 0, 'the open moved the dead shard\'s log');
});

function appendBatch(s: SqliteStore, room: string, n: number, cidPrefix = 'c'): void {
  s.beginBatch();
  for (let i = 0; i < n; i++) {
    const seq = s.room(room).seq + 1;
    s.append(room, { seq, from: 'alice', ts: Date.now(), cid: `${cidPrefix}${seq}`, frame: frameOf(room, seq) });
  }
  s.setCursor(room, 'alice', s.room(room).seq);
  s.commit();
}

test('reads of a room with unmoved rows see them without moving them: range, latest, firstKept, cursor, cid, an evicted room', (t) => {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir, historyLimit: 1_000_000, logMoveRows: 65536, logMoveMs: 60_000 });
  t.after(() => s.close());
  appendBatch(s, 'old', 10);
  s.moveLog(); // 1..10 in messages
  appendBatch(s, 'old', 5); // 11..15 in the log
  appendBatch(s, 'new', 4); // all of it in the log
  appendBatch(s, 'new', 2); // rooms.seq says 4 (written with the room): 5 and 6 only in the log
  const before = s.moves;
  assert.ok(s.unmovedRows > 0);
  assert.deepEqual(s.range('old', 1, 15, 1 << 30).map((m) => m.seq), Array.from({ length: 15 }, (_, i) => i + 1), 'both halves, in order');
  assert.deepEqual(s.range('old', 9, 12, 1 << 30).map((m) => m.seq), [9, 10, 11, 12]);
  assert.deepEqual(s.latest('old', 7, 1 << 30).map((m) => m.seq), [9, 10, 11, 12, 13, 14, 15]);
  assert.deepEqual(s.range('old', 1, 15, 24 * 3).map((m) => m.seq), [1, 2, 3], 'maxBytes across the union');
  const fresh = s.range('new', 1, 6, 1 << 30);
  assert.ok(fresh.length === 6 && fresh.every((m, i) => m.seq === i + 1 && sameBytes(m.frame, frameOf('new', m.seq))));
  assert.equal(s.firstKept('new'), 1, 'a room whose messages are all unmoved');
  assert.equal(s.cursor('old', 'alice'), 15);
  assert.equal(s.findCid('old', 'alice', 'c13', Date.now()), 13);
  assert.equal(s.findCid('old', 'alice', 'c3', Date.now()), 3);
  // A room dropped from the cache is loaded again: its latest seq counts its unmoved messages.
  s.evict('new');
  assert.equal(s.room('new').seq, 6);
  appendBatch(s, 'new', 1);
  assert.equal(s.room('new').seq, 7, 'the next seq after unmoved ones: none reused');
  assert.equal(s.moves, before, 'none of these reads moved the log');

  // What a second connection sees after this store's next move: everything, once.
  s.moveLog();
  assert.equal(s.unmovedRows, 0);
  const rows = logRows(dir);
  assert.equal(rows.log_0, 0);
  const db = new Database(dbPath(dir), { readonly: true });
  try {
    assert.equal(db.prepare("SELECT count(*) FROM messages m JOIN rooms r ON r.id = m.room WHERE r.name = 'old'").pluck().get(), 15);
    assert.equal(db.prepare("SELECT count(*) FROM messages m JOIN rooms r ON r.id = m.room WHERE r.name = 'new'").pluck().get(), 7);
    assert.equal(db.prepare("SELECT c.seq FROM cursors c JOIN rooms r ON r.id = c.room WHERE r.name = 'new' AND user = 'alice'").pluck().get(), 7);
    assert.equal(db.prepare("SELECT count(*) FROM cids c JOIN rooms r ON r.id = c.room WHERE r.name = 'old'").pluck().get(), 15);
  } finally {
    db.close();
  }
});

test('redacting an unmoved message replaces its frame; a cursor set again in a later commit wins at the move', (t) => {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir, historyLimit: 1_000_000, logMoveRows: 65536, logMoveMs: 60_000 });
  appendBatch(s, 'r', 3);
  const tomb = frameOf('tombstone', 2);
  assert.equal(s.replace('r', 2, tomb), true);
  assert.ok(sameBytes(s.range('r', 2, 2, 1 << 30)[0]!.frame, tomb));
  s.beginBatch(); s.setCursor('r', 'bob', 3); s.commit();
  s.beginBatch(); s.setCursor('r', 'bob', 1); s.commit(); // a later cursor, lower: the later one is the cursor
  assert.equal(s.cursor('r', 'bob'), 1);
  s.close();
  const again = new SqliteStore({ dir, historyLimit: 1_000_000 });
  t.after(() => again.close());
  assert.ok(sameBytes(again.range('r', 2, 2, 1 << 30)[0]!.frame, tomb), 'the redaction is kept');
  assert.ok(sameBytes(again.range('r', 3, 3, 1 << 30)[0]!.frame, frameOf('r', 3)));
  assert.equal(again.cursor('r', 'bob'), 1);
  assert.equal(again.cursor('r', 'alice'), 3);
});

async function shards(op: StoreWorkerInput['op'], dir: string, n: number, perRoom: number, leaveLog: boolean): Promise<StoreWorkerOutput[]> {
  const barrier = new SharedArrayBuffer(4); // all open, then all write: no open moves another's fresh rows
  return Promise.all(Array.from({ length: n }, async (_, shard) => {
    const w = new Worker(WORKER_URL, { workerData: { op, dir, shard, shards: n, rooms: 60, perRoom, leaveLog, barrier } satisfies StoreWorkerInput });
    const exited = once(w, 'exit');
    const [out] = await once(w, 'message') as [StoreWorkerOutput];
    await exited;
    return out;
  }));
}

test('re-sharding with unmoved logs: 5 shards leave rows in log_0..log_4, then 2 shards (opening at once) find all of it, 3 find it again', async (t) => {
  const dir = tempDir(t);
  const w5 = await shards('write', dir, 5, 20, true);
  assert.equal(w5.reduce((a, o) => a + o.appended, 0), 60 * 20);
  const rows = logRows(dir);
  assert.deepEqual(Object.keys(rows), ['log_0', 'log_1', 'log_2', 'log_3', 'log_4']);
  assert.equal(Object.values(rows).reduce((a, n) => a + n, 0), 60 * 20 * 2, 'every message and cursor row still in a log');
  for (let k = 0; k < 5; k++) assert.equal(rows[`log_${k}`], w5[k]!.unmoved, `shard ${k}'s rows in its own log`);
  assert.ok(Object.values(rows).every((n) => n > 0), JSON.stringify(rows));

  const check = (outs: StoreWorkerOutput[], seq: number): void => {
    const all: RoomDump[] = outs.flatMap((o) => o.rooms);
    assert.equal(all.length, 60);
    for (const r of all) assert.deepEqual([r.seq, r.kept, r.framesOk, r.contiguous, r.cursor], [seq, seq, true, true, seq], r.name);
  };
  check(await shards('write', dir, 2, 5, true), 25);
  const after2 = logRows(dir);
  assert.equal(after2.log_2! + after2.log_3! + after2.log_4!, 0, 'the logs of shards that no longer exist were moved');
  check(await shards('dump', dir, 3, 0, false), 25);
  assert.ok(Object.values(logRows(dir)).every((n) => n === 0));
});

test('a v3 directory migrates to the current version: its data is read, the shard gets its log', (t) => {
  const dir = tempDir(t);
  const file = dbPath(dir);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  assert.equal(migrate(db, file, 3), 3);
  db.prepare("INSERT INTO rooms(id, name, epoch, seq) VALUES (1, 'v3room', 'epoch-v3', 0)").run();
  const ins = db.prepare('INSERT INTO messages(room, seq, user, ts, cid, frame) VALUES (1, ?, ?, ?, ?, ?)');
  for (let seq = 1; seq <= 4; seq++) ins.run(seq, 'alice', Date.now(), `a-${seq}`, frameOf('v3room', seq));
  db.prepare("INSERT INTO cids(room, user, cid, seq, ts) VALUES (1, 'alice', 'a-4', 4, ?)").run(Date.now());
  db.prepare("INSERT INTO cursors(room, user, seq) VALUES (1, 'bob', 2)").run();
  db.close();

  assert.equal(SCHEMA_VERSION, 5);
  const s = new SqliteStore({ dir, shard: 2 });
  t.after(() => s.close());
  assert.equal(s.schemaVersion, 5);
  assert.deepEqual(s.room('v3room'), { name: 'v3room', epoch: 'epoch-v3', seq: 4 });
  assert.equal(s.range('v3room', 1, 4, 1 << 20).length, 4);
  assert.equal(s.cursor('v3room', 'bob'), 2);
  assert.equal(s.findCid('v3room', 'alice', 'a-4', Date.now()), 4);
  appendBatch(s, 'v3room', 1);
  assert.equal(s.room('v3room').seq, 5);
  const check = new Database(file, { readonly: true });
  try {
    assert.equal(check.pragma('user_version', { simple: true }), 5);
    assert.deepEqual(check.prepare('SELECT kind, seq, user FROM log_2').raw().all(), [[LOG_MSG_CURSOR, 5, 'alice']],
      'the new message went to the shard\'s log, its sender\'s cursor on the same row');
  } finally {
    check.close();
  }
});

test('a v4 directory (messages keyed WITHOUT ROWID, v4 log rows of kinds 0 and 1 left by a kill) migrates to v5: every message, cursor and cid is found', (t) => {
  const dir = tempDir(t);
  const file = dbPath(dir);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  assert.equal(migrate(db, file, 4), 4);
  db.exec(logTableSql('log_1'));
  db.prepare("INSERT INTO rooms(id, name, epoch, seq) VALUES (1, 'r4', 'epoch-v4', 0), (2, 'other', 'epoch-o', 0)").run();
  const now = Date.now();
  const ins = db.prepare('INSERT INTO messages(room, seq, user, ts, cid, frame) VALUES (?, ?, ?, ?, ?, ?)');
  // Inserted out of key order: the rebuild puts them in (room, seq) order.
  for (let seq = 6; seq >= 1; seq--) ins.run(1, seq, 'alice', now + seq, seq === 3 ? 'c3' : null, frameOf('r4', seq));
  ins.run(2, 1, 'bob', now, null, frameOf('other', 1));
  db.prepare("INSERT INTO cids(room, user, cid, seq, ts) VALUES (1, 'alice', 'c3', 3, ?)").run(now + 3);
  db.prepare("INSERT INTO cursors(room, user, seq) VALUES (1, 'bob', 2)").run();
  // A v4 shard killed with rows in its log: messages 7..8 with their senders' cursor as separate rows.
  const log = db.prepare('INSERT INTO log_1(kind, room, seq, user, ts, cid, frame) VALUES (?, ?, ?, ?, ?, ?, ?)');
  for (const seq of [7, 8]) {
    log.run(LOG_MSG, 1, seq, 'alice', now + seq, `c${seq}`, frameOf('r4', seq));
    log.run(LOG_CURSOR, 1, seq, 'alice', 0, null, null);
  }
  log.run(LOG_CURSOR, 1, 5, 'bob', 0, null, null);
  db.close();

  const s = new SqliteStore({ dir, shard: 0, historyLimit: 1000, cidWindowMs: 1 << 30 });
  t.after(() => s.close());
  assert.equal(s.schemaVersion, 5);
  assert.deepEqual(s.room('r4'), { name: 'r4', epoch: 'epoch-v4', seq: 8 });
  const msgs = s.range('r4', 1, 8, 1 << 20);
  assert.deepEqual(msgs.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.ok(msgs.every((m) => sameBytes(m.frame, frameOf('r4', m.seq)) && m.ts === now + m.seq));
  assert.deepEqual(s.latest('other', 10, 1 << 20).map((m) => [m.seq, m.from]), [[1, 'bob']]);
  assert.equal(s.cursor('r4', 'alice'), 8);
  assert.equal(s.cursor('r4', 'bob'), 5);
  assert.equal(s.findCid('r4', 'alice', 'c3', now), 3);
  assert.equal(s.findCid('r4', 'alice', 'c8', now), 8);
  // The new layout: a rowid table in (room, seq) order with its unique index, and appends go on.
  const check = new Database(file, { readonly: true });
  try {
    assert.deepEqual(check.prepare('SELECT room, seq FROM messages ORDER BY id').raw().all(),
      [[1, 1], [1, 2], [1, 3], [1, 4], [1, 5], [1, 6], [2, 1], [1, 7], [1, 8]], 'the rebuild in key order, then the moved log appended');
    assert.equal(check.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'messages_by_room'").pluck().get(), 1);
  } finally {
    check.close();
  }
  appendBatch(s, 'r4', 2);
  assert.deepEqual(s.range('r4', 7, 10, 1 << 20).map((m) => m.seq), [7, 8, 9, 10]);
});

test('a pending message redacted in its own batch keeps its sender\'s cursor on its row: read from the log, and after another shard\'s open moved it', (t) => {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir, historyLimit: 1000, logMoveRows: 65536, logMoveMs: 60_000 });
  t.after(() => s.close());
  s.beginBatch();
  s.append('red', { seq: 1, from: 'alice', ts: LOG_TS, cid: null, frame: frameOf('red', 1) });
  s.setCursor('red', 'alice', 1);
  assert.equal(s.replace('red', 1, frameOf('red', 100)), true, 'the pending message is redacted before the commit');
  s.commit();
  assert.equal(s.unmovedRows, 1, 'one row: the message, its cursor on it');
  assert.equal(s.cursor('red', 'alice'), 1);
  assert.ok(sameBytes(s.range('red', 1, 1, 1 << 20)[0]!.frame, frameOf('red', 100)));
  const other = new SqliteStore({ dir, shard: 1 }); // its open moves every log, log_0 too
  t.after(() => other.close());
  assert.equal(other.cursor('red', 'alice'), 1, 'the cursor, from the moved row');
  assert.ok(sameBytes(other.range('red', 1, 1, 1 << 20)[0]!.frame, frameOf('red', 100)), 'the redacted frame');
});

test('the move bound: maintain() keeps the log under logMoveRows + a batch, a commit under twice it; logMoveMs moves by age; bad options are TypeErrors', (t) => {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir, logMoveRows: 100, logMoveMs: 60_000 });
  t.after(() => s.close());
  let most = 0;
  for (let b = 0; b < 40; b++) {
    appendBatch(s, `r${b % 7}`, 9); // 9 rows a commit: the cursor rides on the last message's row
    most = Math.max(most, s.unmovedRows);
    s.maintain();
    assert.ok(s.unmovedRows < 100, `after maintain(): ${s.unmovedRows}`);
  }
  assert.ok(most >= 100 && most < 110, `most ${most}`);
  assert.ok(s.moves >= 3);
  // Without maintain(), a commit moves the log itself at twice the threshold.
  most = 0;
  for (let b = 0; b < 60; b++) { appendBatch(s, `r${b % 7}`, 9); most = Math.max(most, s.unmovedRows); }
  assert.ok(most < 200, `most ${most} without maintain()`);

  const aged = new SqliteStore({ dir, shard: 1, logMoveRows: 65536, logMoveMs: 0 });
  t.after(() => aged.close());
  appendBatch(aged, 'x', 1);
  assert.equal(aged.unmovedRows, 1);
  aged.maintain();
  assert.equal(aged.unmovedRows, 0, 'logMoveMs 0: the next maintain() moves');
  aged.maintain(); // nothing to move: no transaction
  assert.equal(aged.moves, 1);

  for (const bad of [{ logMoveRows: 0 }, { logMoveRows: 65537 }, { logMoveRows: 1.5 }, { logMoveMs: -1 }, { logMoveMs: 60_001 }, { shard: -1 }, { shard: 4096 }]) {
    assert.throws(() => new SqliteStore({ dir, ...bad }), (e: Error) => e instanceof TypeError && new RegExp(Object.keys(bad)[0]!).test(e.message), JSON.stringify(bad));
  }
});
