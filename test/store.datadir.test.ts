/**
 * Bad data directories get a clear StoreError with a stable code at open, never a silent fresh
 * start, and the files are left exactly as they were: corrupt, damaged, foreign, newer schema,
 * a write-ahead log without its database, locked by another running engine, unwritable, full.
 * Also the migration from schema v1 to the current one, and the lock's stale-owner takeover.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, openSync, readdirSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type BetterSqlite3 from 'better-sqlite3';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { holdWriteLock } from './helpers/lock-holder.js';
import { requireTool } from './helpers/tools.js';
import { frameOf, sameBytes } from './helpers/store-frames.js';
import { dbPath, lockDataDir, LOCK_FILE } from '../engine/store-dir.js';
import { SqliteStore, StoreError, type StoreErrorCode } from '../workers/store/index.js';
import { migrate, SCHEMA_VERSION } from '../workers/store/schema.js';

guardHandles();

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;
const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) out[f] = createHash('sha256').update(readFileSync(path.join(dir, f))).digest('hex');
  return out;
}

function code(c: StoreErrorCode): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof StoreError, `a StoreError, got ${String(e)}`);
    assert.equal(e.code, c, e.message);
    return true;
  };
}

/** Opening must fail with `c` and leave every file as it was. */
function refuses(dir: string, c: StoreErrorCode): StoreError {
  const before = snapshot(dir);
  let err: StoreError | null = null;
  assert.throws(() => new SqliteStore({ dir }).close(), (e) => { code(c)(e); err = e as StoreError; return true; });
  assert.deepEqual(snapshot(dir), before, 'nothing in the data directory was changed');
  return err!;
}

function withData(t: TestContext): string {
  const dir = tempDir(t);
  const s = new SqliteStore({ dir });
  s.beginBatch();
  s.append('r', { seq: 1, from: 'u', ts: 1, cid: null, frame: frameOf('r', 1) });
  s.commit();
  s.close(); // the last connection checkpoints the log into the database file
  return dir;
}

test('a file that is not a database: STORE_CORRUPT', (t) => {
  const dir = tempDir(t);
  writeFileSync(dbPath(dir), randomBytes(8192));
  refuses(dir, 'STORE_CORRUPT');
});

test('a database whose schema page is damaged: STORE_CORRUPT', (t) => {
  const dir = withData(t);
  const bytes = readFileSync(dbPath(dir));
  randomBytes(3000).copy(bytes, 1000); // inside page 1 (sqlite_schema), after the 100-byte header
  writeFileSync(dbPath(dir), bytes);
  refuses(dir, 'STORE_CORRUPT');
});

test('a SQLite database shardchat did not write: STORE_FOREIGN', (t) => {
  const dir = tempDir(t);
  const db = new Database(dbPath(dir));
  db.exec('CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER); INSERT INTO accounts VALUES (1, 100)');
  db.close();
  refuses(dir, 'STORE_FOREIGN');
});

test('a database from a newer schema: STORE_NEWER_SCHEMA, named in the message', (t) => {
  const dir = withData(t);
  const db = new Database(dbPath(dir));
  db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  db.close();
  const e = refuses(dir, 'STORE_NEWER_SCHEMA');
  assert.match(e.message, new RegExp(`schema version ${SCHEMA_VERSION + 1}`));
});

test('a write-ahead log without its database: STORE_CORRUPT, not a fresh start', (t) => {
  const dir = tempDir(t);
  writeFileSync(dbPath(dir) + '-wal', randomBytes(4096));
  refuses(dir, 'STORE_CORRUPT');
  assert.equal(existsSync(dbPath(dir)), false);
});

test('a data directory path that is a file: STORE_UNWRITABLE', (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'not-a-dir');
  writeFileSync(file, 'x');
  assert.throws(() => new SqliteStore({ dir: file }), code('STORE_UNWRITABLE'));
});

/** Makes dir unwritable for this process (chattr +i as root, who ignores modes; chmod otherwise); returns the undo, or null when skipped. */
function unwritable(t: TestContext, dir: string): (() => void) | null {
  if (process.getuid?.() !== 0) {
    chmodSync(dir, 0o500);
    return () => chmodSync(dir, 0o700);
  }
  const chattr = requireTool(t, 'chattr', 'e2fsprogs', 'make a directory unwritable for root');
  if (chattr === null) return null;
  const r = spawnSync(chattr, ['+i', dir]);
  if (r.status !== 0) { t.skip(`skipped: chattr +i failed here (${r.stderr.toString().trim()})`); return null; }
  return () => { spawnSync(chattr, ['-i', dir]); };
}

test('an unwritable data directory, empty or with data: STORE_UNWRITABLE', (t) => {
  const empty = tempDir(t);
  const full = withData(t);
  const undo = [unwritable(t, empty)];
  if (undo[0] === null) return;
  try {
    assert.throws(() => new SqliteStore({ dir: empty }), code('STORE_UNWRITABLE'));
    undo.push(unwritable(t, full));
    refuses(full, 'STORE_UNWRITABLE');
  } finally {
    for (const u of undo) u?.();
  }
});

test('a write that fails at run time (file size limit): commit throws STORE_IO or STORE_FULL, the batch is rolled back, committed data stays', async (t) => {
  const dir = tempDir(t);
  const sh = requireTool(t, 'sh', 'dash', 'run a child under a file size limit');
  if (sh === null) return;
  // SIGXFSZ ignored, so a write past the limit fails with EFBIG instead of killing the process.
  const child = spawn(sh, ['-c', `trap '' XFSZ; ulimit -f 600; exec "${process.execPath}" "${fixture('store-fill.js')}" "${dir}"`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const [exit] = await once(child, 'exit') as [number | null];
  assert.equal(exit, 0, err);
  const lines = out.trim().split('\n');
  const errLine = lines.find((l) => l.startsWith('ERROR '));
  // EFBIG is an I/O error to SQLite (SQLITE_IOERR_WRITE), a write cut short by the limit is
  // SQLITE_FULL; ENOSPC, below, is always SQLITE_FULL.
  assert.ok(errLine === 'ERROR STORE_IO' || errLine === 'ERROR STORE_FULL', out.slice(-300) + err);
  const acked = lines.filter((l) => /^\d+$/.test(l)).map(Number);
  assert.ok(acked.length > 10, `${acked.length} commits before the disk was full`);
  const last = acked[acked.length - 1]!;
  assert.ok(lines.includes(`AFTER seq=${last} inBatch=false`), 'the failed batch was rolled back in memory');
  // Without the limit, every committed message is there; the one that failed is not.
  const s = new SqliteStore({ dir, historyLimit: 1_000_000 });
  t.after(() => s.close());
  assert.equal(s.room('big').seq, last);
  const msgs = s.range('big', 1, last, 1 << 30);
  assert.equal(msgs.length, last);
  assert.ok(msgs.every((m) => sameBytes(m.frame, frameOf('big', m.seq, 1024))));
});

test('a full disk (a small tmpfs) at run time and at open: STORE_FULL, committed data stays', (t) => {
  if (process.getuid?.() !== 0) { t.skip('skipped: mounting a small tmpfs as a full disk needs root'); return; }
  const mount = requireTool(t, 'mount', 'mount', 'mount a small tmpfs as a full disk');
  const umount = requireTool(t, 'umount', 'mount', 'unmount it');
  if (mount === null || umount === null) return;
  const dir = tempDir(t);
  const m = spawnSync(mount, ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir]);
  if (m.status !== 0) { t.skip(`skipped: cannot mount a tmpfs here (${m.stderr.toString().trim()})`); return; }
  try {
    // Ballast, removed at the end to make room again.
    const ballast = path.join(dir, 'ballast');
    writeFileSync(ballast, Buffer.alloc(1 << 20));
    const data = path.join(dir, 'data');
    const s = new SqliteStore({ dir: data, historyLimit: 1_000_000 });
    let last = 0;
    try {
      assert.throws(() => {
        for (let seq = 1; seq < 10_000; seq++) {
          s.beginBatch();
          s.append('big', { seq, from: 'u', ts: 1, cid: null, frame: frameOf('big', seq, 1024) });
          s.commit();
          last = seq;
        }
      }, code('STORE_FULL'));
      assert.ok(last > 10, `${last} commits before the disk was full`);
      assert.equal(s.inBatch, false);
      assert.equal(s.room('big').seq, last, 'the failed batch was rolled back');
      assert.equal(s.range('big', 1, last, 1 << 30).length, last);
    } finally {
      s.close();
    }
    // Closing freed the log's space: fill the disk to the last byte, then open again.
    const filler = path.join(dir, 'filler');
    const chunk = Buffer.alloc(4096);
    const fd = openSync(filler, 'w');
    try {
      for (;;) writeSync(fd, chunk);
    } catch (e) {
      assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
    } finally {
      closeSync(fd);
    }
    assert.throws(() => new SqliteStore({ dir: path.join(dir, 'second') }), code('STORE_FULL'));
    refuses(data, 'STORE_FULL');
    assert.throws(() => lockDataDir(data), code('STORE_FULL'), 'the main thread sees it before starting shards');
    unlinkSync(filler);
    unlinkSync(ballast);
    const again = new SqliteStore({ dir: data, historyLimit: 1_000_000 });
    try {
      assert.equal(again.room('big').seq, last);
      assert.ok(again.range('big', 1, last, 1 << 30).every((msg) => sameBytes(msg.frame, frameOf('big', msg.seq, 1024))));
    } finally {
      again.close();
    }
  } finally {
    spawnSync(umount, [dir]);
  }
});

test('lockDataDir: a second engine on the directory gets STORE_LOCKED; a released or stale lock is taken', async (t) => {
  const dir = tempDir(t);
  const a = lockDataDir(dir);
  assert.throws(() => lockDataDir(dir), code('STORE_LOCKED'));
  a.release();
  a.release(); // twice is harmless
  const b = lockDataDir(dir);
  b.release();

  // Another live process holds it.
  const holder = spawn(process.execPath, [fixture('store-lock-holder.js'), dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(holder, 'exit');
  t.after(async () => { if (holder.exitCode === null) { holder.kill('SIGKILL'); await exited; } });
  await once(holder.stdout, 'data');
  assert.throws(() => lockDataDir(dir), (e) => code('STORE_LOCKED')(e) && (e as Error).message.includes(String(holder.pid)));
  // It dies without releasing (kill -9): the lock is stale and the next engine takes it.
  holder.kill('SIGKILL');
  await exited;
  assert.ok(existsSync(path.join(dir, LOCK_FILE)), 'a killed holder leaves its lock file');
  const c = lockDataDir(dir);
  assert.equal(JSON.parse(readFileSync(path.join(dir, LOCK_FILE), 'utf8')).pid, process.pid);
  c.release();
  assert.equal(existsSync(path.join(dir, LOCK_FILE)), false);

  // A lock file that cannot be read is not guessed away.
  writeFileSync(path.join(dir, LOCK_FILE), 'garbage');
  assert.throws(() => lockDataDir(dir), code('STORE_LOCKED'));
});

test('migration from schema v1 to the current version keeps every room, message, cursor and cid', (t) => {
  const dir = tempDir(t);
  const file = dbPath(dir);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  assert.equal(migrate(db, file, 1), 1);
  db.prepare("INSERT INTO rooms(id, name, epoch, seq) VALUES (1, 'old', 'epoch-v1', 3)").run();
  const ins = db.prepare('INSERT INTO messages(room, seq, user, ts, cid, frame) VALUES (1, ?, ?, ?, ?, ?)');
  const now = Date.now();
  ins.run(1, 'alice', now, 'a-1', frameOf('old', 1));
  ins.run(2, 'bob', now, null, frameOf('old', 2));
  ins.run(3, 'alice', now, 'a-3', frameOf('old', 3));
  db.prepare("INSERT INTO cursors(room, user, seq) VALUES (1, 'bob', 2)").run();
  db.close();

  const s = new SqliteStore({ dir });
  t.after(() => s.close());
  assert.equal(s.schemaVersion, SCHEMA_VERSION);
  assert.deepEqual(s.room('old'), { name: 'old', epoch: 'epoch-v1', seq: 3 });
  assert.deepEqual(s.range('old', 1, 3, 1 << 20).map((m) => [m.seq, m.from, m.cid]), [[1, 'alice', 'a-1'], [2, 'bob', null], [3, 'alice', 'a-3']]);
  assert.equal(s.cursor('old', 'bob'), 2);
  assert.equal(s.findCid('old', 'alice', 'a-1', now), 1, 'v1 cids are in the v2 window');
  assert.equal(s.findCid('old', 'alice', 'a-3', now), 3);
  assert.equal(s.findCid('old', 'bob', 'a-1', now), 0);
});

test('a write lock held too long by another connection: commit throws STORE_BUSY after busyTimeoutMs, the batch can be retried', (t) => {
  const dir = withData(t);
  const s = new SqliteStore({ dir, busyTimeoutMs: 50 });
  t.after(() => s.close());
  const other = new Database(dbPath(dir));
  t.after(() => other.close());
  other.exec('BEGIN IMMEDIATE');
  s.beginBatch();
  s.append('r', { seq: 2, from: 'u', ts: 1, cid: null, frame: frameOf('r', 2) });
  const t0 = Date.now();
  assert.throws(() => s.commit(), code('STORE_BUSY'));
  assert.ok(Date.now() - t0 >= 40, 'it waited for the lock first');
  assert.equal(s.room('r').seq, 1);
  other.exec('ROLLBACK');
  s.beginBatch();
  s.append('r', { seq: 2, from: 'u', ts: 1, cid: null, frame: frameOf('r', 2) });
  s.commit();
  assert.equal(s.range('r', 1, 2, 1 << 20).length, 2);
});

test('opening waits for a write lock past busyTimeoutMs (a sibling shard migrating), up to openTimeoutMs; bad openTimeoutMs is a TypeError', async (t) => {
  const dir = withData(t);
  // Another thread holds the write lock for 400 ms, as a shard rebuilding messages (v4 -> v5) does.
  const holder = await holdWriteLock(dbPath(dir), 400);
  t.after(() => holder.stop());
  const t0 = Date.now();
  const s = new SqliteStore({ dir, busyTimeoutMs: 20 });
  const waited = Date.now() - t0;
  t.after(() => s.close());
  assert.ok(waited >= 300, `opened after ${waited} ms: it waited for the lock, past busyTimeoutMs`);
  assert.equal(s.room('r').seq, 1, 'and then reads the data');
  await holder.released;

  // A lock that outlasts openTimeoutMs: STORE_BUSY, after about that long.
  const other = new Database(dbPath(dir));
  t.after(() => other.close());
  other.exec('BEGIN IMMEDIATE');
  const t1 = Date.now();
  assert.throws(() => new SqliteStore({ dir, busyTimeoutMs: 20, openTimeoutMs: 150 }), code('STORE_BUSY'));
  const gave = Date.now() - t1;
  assert.ok(gave >= 140 && gave < 2000, `gave up after ${gave} ms`);
  other.exec('ROLLBACK');
  for (const bad of [-1, 1.5]) assert.throws(() => new SqliteStore({ dir, openTimeoutMs: bad }), /openTimeoutMs/);
});

test('damage inside the history (not the schema): open works, the read that meets it throws STORE_CORRUPT', (t) => {
  const dir = tempDir(t);
  const a = new SqliteStore({ dir, historyLimit: 1_000_000 });
  for (let b = 0; b < 40; b++) {
    a.beginBatch();
    for (let seq = b * 50 + 1; seq <= b * 50 + 50; seq++) a.append('r', { seq, from: 'u', ts: 1, cid: null, frame: frameOf('r', seq, 200) });
    a.commit();
  }
  a.close();
  const bytes = readFileSync(dbPath(dir));
  assert.ok(bytes.length > 40 * 4096, `${bytes.length} bytes`);
  // Zero the b-tree headers of every page from the 10th on: interior and leaf pages of messages.
  for (let off = 9 * 4096; off < bytes.length; off += 4096) bytes.fill(0, off, off + 12);
  writeFileSync(dbPath(dir), bytes);
  const s = new SqliteStore({ dir, historyLimit: 1_000_000 });
  t.after(() => s.close());
  // The room's latest seq counts its newest message (schema v3: rooms.seq is a lower bound), so
  // loading the room meets the damage: a clear STORE_CORRUPT, not a seq that could be reused.
  assert.throws(() => s.room('r'), code('STORE_CORRUPT'));
  assert.throws(() => s.range('r', 1, 2000, 1 << 30), code('STORE_CORRUPT'));
});
