/**
 * Durable rooms through a real engine (createEngine with store 'sqlite' on a real SQLite file in a
 * temp dir, real shard workers, real WebSocket clients): history paged back past the memory
 * cache, resume and unread counts across a restart, a shard crash that keeps the epoch,
 * re-sharding 3 -> 2 -> 5 on one data dir, idempotent publish by cid, and bad data dirs.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { createEngine, type Engine, type EngineOptions } from '../engine/index.js';
import { StoreError } from '../engine/store-dir.js';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { holdWriteLock } from './helpers/lock-holder.js';
import { joinRoom, openClient, pubTo, roomsPerShard, startEngine } from './helpers/engine.js';
import { type Frame, TestClient, waitFor } from './helpers/client.js';

guardHandles();

function durable(dir: string, extra: EngineOptions = {}): EngineOptions {
  return { store: 'sqlite', dataDir: dir, ...extra };
}

const seqsOf = (msgs: unknown): number[] => (msgs as Frame[]).map((m) => m.seq as number);
const range = (a: number, z: number): number[] => Array.from({ length: Math.max(0, z - a + 1) }, (_, i) => a + i);

/** Every message of `room` by paging `hist` back with `before` from the latest. */
async function pageBack(c: TestClient, room: string, limit = 100): Promise<{ seqs: number[]; bodies: unknown[]; truncated: boolean }> {
  const seqs: number[] = []; const bodies: unknown[] = [];
  let before: number | undefined;
  let truncated = false;
  for (let i = 0; i < 10_000; i++) {
    const h = await c.request({ t: 'hist', room, limit, ...(before === undefined ? {} : { before }) });
    assert.equal(h.t, 'hist', JSON.stringify(h));
    const msgs = h.msgs as Frame[];
    if (h.truncated === true) truncated = true;
    if (msgs.length === 0) break;
    seqs.unshift(...seqsOf(msgs));
    bodies.unshift(...msgs.map((m) => m.body));
    before = msgs[0]!.seq as number;
    if (before === 1) break;
  }
  return { seqs, bodies, truncated };
}

async function publishMany(e: Engine, room: string, n: number, body: (i: number) => unknown): Promise<void> {
  for (let i = 0; i < n; i += 100) {
    await Promise.all(range(i, Math.min(n, i + 100) - 1).map((k) => e.publish(room, body(k))));
  }
}

test('hist pages older than the memory cache come from the store: the whole retention, in order', async (t) => {
  const dir = tempDir(t);
  // A 1 MiB history budget holds ~700 messages of 1 KiB; the store keeps 3000.
  const e = await startEngine(t, durable(dir, { shards: 1, historyLimit: 3000, historyBudgetBytes: 1 << 20 }));
  const pad = 'x'.repeat(1000);
  await publishMany(e, 'deep', 1500, (i) => ({ i, pad }));
  // 1500 x 1 KiB do not fit the 1 MiB cache: most of them are only in the store.
  assert.ok(Number(e.stats().shards[0]!.historyBytes) <= 1 << 20, `the cache keeps its budget (${e.stats().shards[0]!.historyBytes} B)`);
  const c = await openClient(t, e, 'reader');
  await joinRoom(c, 'deep');
  const all = await pageBack(c, 'deep');
  assert.equal(all.truncated, false, 'retention still holds them all: no truncated');
  assert.deepEqual(all.seqs, range(1, 1500));
  assert.deepEqual(all.bodies.map((b) => (b as { i: number }).i), range(0, 1499));
  // `after` pages from the oldest end, also older than the cache.
  const after = await c.request({ t: 'hist', room: 'deep', after: 10, limit: 5 });
  assert.deepEqual(seqsOf(after.msgs), [11, 12, 13, 14, 15]);
  // Past retention (historyLimit), history says truncated.
  const e2dir = tempDir(t);
  const e2 = await startEngine(t, durable(e2dir, { shards: 1, historyLimit: 50 }));
  await publishMany(e2, 'short', 80, (i) => i);
  const c2 = await openClient(t, e2, 'reader');
  await joinRoom(c2, 'short');
  const old = await c2.request({ t: 'hist', room: 'short', before: 20, limit: 10 });
  assert.equal(old.truncated, true);
  assert.deepEqual(old.msgs, []);
});

test('resume across a restart: same epoch, missed is exactly k+1..latest, unread from the stored cursor', async (t) => {
  const dir = tempDir(t);
  let e = await createEngine({ port: 0, host: '127.0.0.1', logLevel: 'silent', shards: 2, ratePerSec: 1e6, rateBurst: 1e6, ...durable(dir) });
  t.after(() => e.close());
  await e.listen();
  const a = await TestClient.connect(e.port, { user: 'alice' });
  const b = await TestClient.connect(e.port, { user: 'bob' });
  const j = await joinRoom(a, 'resume');
  await joinRoom(b, 'resume');
  for (let i = 1; i <= 5; i++) await pubTo(b, 'resume', `m${i}`);
  assert.equal((await a.request({ t: 'read', room: 'resume', seq: 3 })).seq, 3);
  const k = 5;
  await a.close();
  for (let i = 6; i <= 9; i++) await pubTo(b, 'resume', `m${i}`);
  await b.close();
  await e.close();

  e = await createEngine({ port: 0, host: '127.0.0.1', logLevel: 'silent', shards: 2, ...durable(dir) });
  await e.listen();
  const a2 = await TestClient.connect(e.port, { user: 'alice' });
  t.after(() => a2.close());
  const r = await joinRoom(a2, 'resume', { since: k, epoch: j.epoch });
  assert.equal(r.epoch, j.epoch, 'the room keeps its epoch');
  assert.equal(r.seq, 9);
  assert.equal(r.truncated, undefined);
  assert.deepEqual(seqsOf(r.missed), [6, 7, 8, 9]);
  assert.deepEqual((r.missed as Frame[]).map((m) => m.body), ['m6', 'm7', 'm8', 'm9']);
  assert.equal(r.unread, 6, 'unread counts from the stored cursor (3)');
  // The seq continues.
  const ack = await pubTo(a2, 'resume', 'after restart');
  assert.equal(ack.seq, 10);
});

test('shard crash with a durable store: other shards keep flowing, the crashed shard\'s rooms keep their epoch, members resume gap-free', async (t) => {
  const dir = tempDir(t);
  const e = await startEngine(t, durable(dir, { shards: 2 }));
  const [[r0], [r1]] = roomsPerShard(e, 2, 'crash') as [[string], [string]];
  const m = await openClient(t, e, 'member');
  const p = await openClient(t, e, 'poster');
  const j0 = await joinRoom(m, r0);
  await joinRoom(m, r1);
  await joinRoom(p, r0);
  await joinRoom(p, r1);
  for (let i = 0; i < 5; i++) { await pubTo(p, r0, i); await pubTo(p, r1, i); }
  await waitFor(() => m.framesOf('msg', r0).length === 5, 'member saw 5 msgs in r0');
  const seen = 5;
  e._crashShard(0, 'throw');
  // The other shard answers while shard 0 restarts.
  assert.equal((await pubTo(p, r1, 'during')).seq, 6);
  const again = await m.next((f) => f.t === 'joined' && f.room === r0 && f.ref === undefined, 5000, 'the unsolicited joined for r0');
  assert.equal(again.epoch, j0.epoch, 'same epoch after the crash');
  assert.equal(again.seq, 5, 'the current seq');
  // Messages published after the crash continue the seq, and hist after what the member saw is gap-free.
  await waitFor(async () => (await p.request({ t: 'pub', room: r0, body: 'x' })).t === 'ack', 'shard 0 answers again', 5000);
  const h = await m.request({ t: 'hist', room: r0, after: seen });
  assert.deepEqual(seqsOf(h.msgs), [6]);
  const all = await m.request({ t: 'hist', room: r0 });
  assert.deepEqual(seqsOf(all.msgs), range(1, 6));
});

test('re-sharding: written with 3 shards, read with 2, written again, read with 5: every message and cursor found', async (t) => {
  const dir = tempDir(t);
  const rooms = range(0, 11).map((i) => `rs-${i}`);
  const open = async (shards: number): Promise<Engine> => {
    const e = await createEngine({ port: 0, host: '127.0.0.1', logLevel: 'silent', shards, ratePerSec: 1e6, rateBurst: 1e6,
      roomCreateRate: 1e6, roomCreateBurst: 1e6, ...durable(dir) });
    await e.listen();
    return e;
  };
  const cycle = async (shards: number, wrote: number, write: number): Promise<void> => {
    const e = await open(shards);
    try {
      const c = await TestClient.connect(e.port, { user: 'u' });
      const v = await TestClient.connect(e.port, { user: 'v' });
      try {
        for (const [i, room] of rooms.entries()) {
          // v (the reader) left its cursor at `wrote - i % 3` in the previous run.
          const jv = await joinRoom(v, room);
          assert.equal(jv.seq, wrote, `${room} with ${shards} shards: seq`);
          if (wrote > 0) assert.equal(jv.unread, i % 3, `${room} with ${shards} shards: unread from the stored cursor`);
          await joinRoom(c, room);
          const h = await c.request({ t: 'hist', room, limit: 500 });
          assert.deepEqual(seqsOf(h.msgs), range(1, wrote), `${room} with ${shards} shards: history`);
          for (let k = 0; k < write; k++) await pubTo(c, room, `${room}/${wrote + k + 1}`);
          if (write > 0) assert.equal((await v.request({ t: 'read', room, seq: wrote + write - (i % 3) })).seq, wrote + write - (i % 3));
        }
      } finally { await c.close(); await v.close(); }
    } finally { await e.close(); }
  };
  await cycle(3, 0, 4);
  await cycle(2, 4, 3);
  await cycle(5, 7, 0);
});

test('cid: a pub retried after a forced disconnect is stored once (dup: true); other users with the same cid get their own', async (t) => {
  const e = await startEngine(t, durable(tempDir(t)));
  const watcher = await openClient(t, e, 'watcher');
  await joinRoom(watcher, 'ids');
  const a = await TestClient.connect(e.port, { user: 'ann' });
  await joinRoom(a, 'ids');
  const first = await a.request({ t: 'pub', room: 'ids', body: 'hello', cid: 'ann.1' });
  assert.equal(first.t, 'ack');
  assert.equal(first.dup, undefined);
  const msg = await watcher.nextOf('msg', 'ids');
  assert.equal(msg.cid, 'ann.1', 'the msg carries the cid');
  a.terminate(); // the ack is "lost": the client retries on a new connection
  const a2 = await openClient(t, e, 'ann');
  await joinRoom(a2, 'ids');
  const retry = await a2.request({ t: 'pub', room: 'ids', body: 'hello', cid: 'ann.1' });
  assert.equal(retry.t, 'ack');
  assert.equal(retry.seq, first.seq);
  assert.equal(retry.dup, true);
  const b = await openClient(t, e, 'ben');
  await joinRoom(b, 'ids');
  const other = await b.request({ t: 'pub', room: 'ids', body: 'hello', cid: 'ann.1' });
  assert.equal(other.dup, undefined);
  assert.equal(other.seq, (first.seq as number) + 1, 'a different user with the same cid: a message of their own');
  const h = await watcher.request({ t: 'hist', room: 'ids' });
  assert.deepEqual(seqsOf(h.msgs), [1, 2]);
  // A bad cid is refused, not ignored.
  const bad = await a2.request({ t: 'pub', room: 'ids', body: 'x', cid: 'has space' });
  assert.equal(bad.t, 'err');
  assert.equal(bad.code, 'bad_request');
  // Server-side publish takes a cid too.
  const s1 = await e.publish('ids', 'from server', { cid: 'srv-1' });
  const s2 = await e.publish('ids', 'from server', { cid: 'srv-1' });
  assert.deepEqual([s1.dup, s2.dup, s2.seq], [false, true, s1.seq]);
});

for (const store of ['memory', 'sqlite'] as const) {
  test(`cid window (store ${store}): the last cidWindowMessages messages; a cid older than that is a new message`, async (t) => {
    const e = await startEngine(t, { store, dataDir: tempDir(t), cidWindowMessages: 3 });
    const a = await openClient(t, e, 'ann');
    await joinRoom(a, 'win');
    const x = await a.request({ t: 'pub', room: 'win', body: 1, cid: 'c1' });
    const y = await a.request({ t: 'pub', room: 'win', body: 1, cid: 'c1' });
    assert.deepEqual([x.seq, y.seq, y.dup], [1, 1, true]);
    for (const cid of ['c2', 'c3']) assert.equal((await a.request({ t: 'pub', room: 'win', body: 1, cid })).dup, undefined);
    assert.equal((await a.request({ t: 'pub', room: 'win', body: 1, cid: 'c1' })).dup, true, 'c1 is still among the last 3 (seq 1 of 3)');
    await a.request({ t: 'pub', room: 'win', body: 1 });
    const late = await a.request({ t: 'pub', room: 'win', body: 1, cid: 'c1' });
    assert.deepEqual([late.seq, late.dup], [5, undefined], 'past the window: a new message');
  });
}

test('the cid window survives a restart: a retry after the engine came back is still one message', async (t) => {
  const dir = tempDir(t);
  let e = await createEngine({ port: 0, host: '127.0.0.1', logLevel: 'silent', shards: 2, ...durable(dir) });
  t.after(() => e.close());
  const first = await e.publish('survive', 'once', { from: 'svc', cid: 'job-42' });
  await e.close();
  e = await createEngine({ port: 0, host: '127.0.0.1', logLevel: 'silent', shards: 3, ...durable(dir) });
  await e.listen();
  const again = await e.publish('survive', 'once', { from: 'svc', cid: 'job-42' });
  assert.deepEqual([again.seq, again.epoch, again.dup], [first.seq, first.epoch, true]);
  const c = await TestClient.connect(e.port, { user: 'ann' });
  t.after(() => c.close());
  await joinRoom(c, 'survive');
  const h = await c.request({ t: 'hist', room: 'survive' });
  assert.deepEqual((h.msgs as Frame[]).map((m) => [m.seq, m.cid]), [[1, 'job-42']]);
});

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) out[f] = createHash('sha256').update(readFileSync(path.join(dir, f))).digest('hex');
  return out;
}

async function refused(t: TestContext, opts: EngineOptions, code: string): Promise<StoreError> {
  let err: unknown = null;
  try {
    const e = await createEngine({ port: 0, host: '127.0.0.1', logLevel: 'silent', shards: 2, ...opts });
    t.after(() => e.close());
  } catch (e) { err = e; }
  assert.ok(err instanceof StoreError, `createEngine fails with a StoreError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

test('bad data dirs through createEngine: each its clear StoreError, nothing overwritten, the lock released', async (t) => {
  // Corrupt.
  const corrupt = tempDir(t);
  writeFileSync(path.join(corrupt, 'shardchat.db'), randomBytes(8192));
  const before = snapshot(corrupt);
  await refused(t, durable(corrupt), 'STORE_CORRUPT');
  assert.deepEqual(snapshot(corrupt), before, 'the corrupt file is left as it was, and no LOCK stays behind');
  // Locked by another running engine (this process).
  const dir = tempDir(t);
  const running = await startEngine(t, durable(dir, { shards: 1 }));
  await running.publish('kept', 'one');
  const e = await refused(t, durable(dir), 'STORE_LOCKED');
  assert.match(e.message, /in use by process/);
  await running.close();
  // Newer schema: written by a later shardchat.
  const { SCHEMA_VERSION } = await import('../workers/store/schema.js');
  const { createRequire } = await import('node:module');
  const Database = createRequire(import.meta.url)('better-sqlite3') as typeof import('better-sqlite3');
  const db = new Database(path.join(dir, 'shardchat.db'));
  db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  db.close();
  const newer = snapshot(dir);
  await refused(t, durable(dir), 'STORE_NEWER_SCHEMA');
  assert.deepEqual(snapshot(dir), newer);
  // Foreign: a SQLite database shardchat did not write.
  const foreign = tempDir(t);
  const fdb = new Database(path.join(foreign, 'shardchat.db'));
  fdb.exec('CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER); INSERT INTO accounts VALUES (1, 100)');
  fdb.close();
  const foreignBefore = snapshot(foreign);
  await refused(t, durable(foreign), 'STORE_FOREIGN');
  assert.deepEqual(snapshot(foreign), foreignBefore);
  // A write-ahead log without its database: no fresh start beside it.
  const orphan = tempDir(t);
  writeFileSync(path.join(orphan, 'shardchat.db-wal'), randomBytes(4096));
  const orphanBefore = snapshot(orphan);
  await refused(t, durable(orphan), 'STORE_CORRUPT');
  assert.deepEqual(snapshot(orphan), orphanBefore);
  // Not a directory.
  const file = path.join(tempDir(t), 'a-file');
  writeFileSync(file, 'x');
  await refused(t, durable(file), 'STORE_UNWRITABLE');
  assert.equal(readFileSync(file, 'utf8'), 'x');
});

test('joining rooms the store keeps after a restart takes no room-creation tokens (they exist); new rooms still do', async (t) => {
  const dir = tempDir(t);
  const limits = { shards: 1, roomCreateRate: 1, roomCreateBurst: 2 };
  let e = await createEngine({ port: 0, host: '127.0.0.1', logLevel: 'silent', ratePerSec: 1e6, rateBurst: 1e6, ...limits, ...durable(dir) });
  t.after(() => e.close());
  for (let i = 0; i < 6; i++) await e.publish(`kept-${i}`, i);
  await e.close();
  e = await createEngine({ port: 0, host: '127.0.0.1', logLevel: 'silent', ratePerSec: 1e6, rateBurst: 1e6, ...limits, ...durable(dir) });
  await e.listen();
  const c = await TestClient.connect(e.port, { user: 'back' });
  t.after(() => c.close());
  for (let i = 0; i < 6; i++) {
    const j = await c.request({ t: 'join', room: `kept-${i}` });
    assert.equal(j.t, 'joined', `kept-${i}: ${JSON.stringify(j)}`);
    assert.equal(j.seq, 1);
  }
  const fresh = await Promise.all([0, 1, 2].map((i) => c.request({ t: 'join', room: `fresh-${i}` })));
  assert.deepEqual(fresh.map((f) => f.t === 'err' ? f.code : f.t), ['joined', 'joined', 'room_limit']);
});

test('durable options: validated naming the option; the CLI is durable by default, the library is not', async () => {
  const { optionsFromArgs, resolveOptions } = await import('../engine/options.js');
  assert.throws(() => resolveOptions({ store: 'disk' as 'sqlite' }), /options\.store must be one of memory, sqlite/);
  assert.throws(() => resolveOptions({ fsync: 'sometimes' as 'always' }), /options\.fsync must be one of normal, always/);
  assert.throws(() => resolveOptions({ dataDir: '' }), /options\.dataDir/);
  assert.throws(() => resolveOptions({ cidWindowMessages: -1 }), /cidWindowMessages/);
  assert.throws(() => resolveOptions({ historyMaxAgeMs: 1.5 }), /historyMaxAgeMs/);
  const lib = resolveOptions({});
  assert.deepEqual([lib.store, lib.dataDir, lib.fsync, lib.historyMaxAgeMs, lib.cidWindowMessages, lib.cidWindowMs],
    ['memory', './shardchat-data', 'normal', 0, 1000, 600_000]);
  assert.equal(optionsFromArgs([], {}).options.store, 'sqlite');
  assert.equal(optionsFromArgs(['--store', 'memory'], {}).options.store, 'memory');
  const env = optionsFromArgs([], { SHARDCHAT_DATA_DIR: '/srv/chat', SHARDCHAT_FSYNC: 'always', SHARDCHAT_STORE: 'memory' }).options;
  assert.deepEqual([env.dataDir, env.fsync, env.store], ['/srv/chat', 'always', 'memory']);
  assert.throws(() => resolveOptions(optionsFromArgs(['--fsync', 'never'], {}).options), /options\.fsync/);
});

test('historyMaxAgeMs: the shard\'s tick trims stored messages past the age; hist then says truncated', async (t) => {
  const e = await startEngine(t, durable(tempDir(t), { shards: 1, historyMaxAgeMs: 300 }));
  for (let i = 0; i < 5; i++) await e.publish('aging', i);
  // The memory cache may still hold them, but nothing older than the store's retention is served.
  const c = await openClient(t, e, 'reader');
  await joinRoom(c, 'aging');
  let last: Frame = {};
  await waitFor(async () => {
    last = await c.request({ t: 'hist', room: 'aging', after: 0 });
    return (last.msgs as Frame[]).length < 5;
  }, 'the tick trimmed aged messages', 5000);
  assert.equal(last.truncated, true, JSON.stringify(last));
  const ack = await pubTo(c, 'aging', 'fresh');
  assert.equal(ack.seq, 6, 'seq continues after trimming');
});

test('a start that waits past 10 s for the write lock (a sibling shard migrating a big v4 directory) still starts, with the data', async (t) => {
  const dir = tempDir(t);
  const first = await startEngine(t, durable(dir));
  await publishMany(first, 'kept', 3, (i) => ({ i }));
  await first.close();
  // Another thread holds the database's write lock for 10.5 s, as a shard whose open rebuilds
  // messages (schema v4 -> v5, ~1.6 s per million) holds it from its siblings. Before, the start
  // gave up after 10 s and the rolled-back migration ran again at every start.
  const holder = await holdWriteLock(path.join(dir, 'shardchat.db'), 10_500);
  t.after(() => holder.stop());
  const t0 = Date.now();
  const e = await startEngine(t, durable(dir));
  const took = Date.now() - t0;
  assert.ok(took >= 10_000, `started after ${took} ms: it waited for the lock`);
  await holder.released;
  const c = await openClient(t, e, 'reader');
  const joined = await joinRoom(c, 'kept');
  assert.equal(joined.seq, 3, 'the stored room is there');
});
