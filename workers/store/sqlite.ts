/**
 * The SQLite backend (better-sqlite3 12, synchronous, one connection per shard worker). Every
 * shard opens the same file in the data directory (WAL: readers never wait; writers take turns
 * on one short write transaction per batch, busy_timeout covering the wait). Only the rooms'
 * epoch and seq are cached in memory (at most roomCacheEntries); history stays on disk.
 * Open it only inside a worker thread (docs/STORE.md); the main thread takes the directory's
 * lock (engine/store-dir.ts) and never opens the database.
 */
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { dbPath, prepareDataDir } from '../../engine/store-dir.js';
import { BufferedStore, type CidHit, type PendingCursor, type RoomEntry } from './buffered.js';
import { LATEST_SEQ, checkSchema, migrate } from './schema.js';
import { sqliteError } from './sqlite-errors.js';
import { trimStep, type TrimState, newTrimState, type TrimStatements, prepareTrim } from './sqlite-trim.js';
import type { StoredMessage, StoreLimits, TrimResult } from './types.js';
import { checkLimits, DEFAULT_STORE_LIMITS } from './types.js';

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;

export type FsyncMode = 'normal' | 'always';

export interface SqliteStoreOptions extends Partial<StoreLimits> {
  dir: string;
  /** 'normal' (default): survives a crash of the process. 'always': also a power loss. */
  fsync?: FsyncMode;
  /** How long a writer waits for another shard's write transaction. */
  busyTimeoutMs?: number;
  /**
   * WAL pages after which a commit also checkpoints (SQLite's wal_autocheckpoint, default 1000).
   * A checkpoint inside a commit makes that batch late by milliseconds; with a Checkpointer
   * thread running (checkpointer.ts), set this high (e.g. 16384) as a backstop only.
   */
  autoCheckpointPages?: number;
}

interface SqlRoom { id: number }
type Row = [number, string, number, string | null, Uint8Array];

export class SqliteStore extends BufferedStore<SqlRoom> {
  readonly kind = 'sqlite' as const;
  readonly durable = true;
  readonly file: string;
  readonly schemaVersion: number;
  private readonly db: BetterSqlite3.Database;
  private readonly s: ReturnType<typeof prepare>;
  private readonly trimSql: TrimStatements;
  private readonly trimState: TrimState = newTrimState();

  constructor(opts: SqliteStoreOptions) {
    super(checkLimits({ ...DEFAULT_STORE_LIMITS, ...opts }));
    if (opts.fsync !== undefined && opts.fsync !== 'normal' && opts.fsync !== 'always') {
      throw new TypeError(`store option fsync must be 'normal' or 'always', got ${JSON.stringify(opts.fsync)}`);
    }
    if (opts.busyTimeoutMs !== undefined && !(Number.isInteger(opts.busyTimeoutMs) && opts.busyTimeoutMs >= 0)) {
      throw new TypeError(`store option busyTimeoutMs must be an integer >= 0, got ${String(opts.busyTimeoutMs)}`);
    }
    const ckpt = opts.autoCheckpointPages ?? 1000;
    if (!(Number.isInteger(ckpt) && ckpt >= 0)) throw new TypeError(`store option autoCheckpointPages must be an integer >= 0, got ${String(ckpt)}`);
    prepareDataDir(opts.dir);
    this.file = dbPath(opts.dir);
    // Several shards open a new data dir at once: one of them switching it to WAL (or recovering
    // it) makes the others' first reads fail with SQLITE_BUSY at once, without SQLite's busy
    // handler (seen in CI: "database is locked" 94 ms into a 3-shard open). Opening is retried
    // within busyTimeoutMs; any other error, or a lock held that long, is the StoreError.
    const deadline = performance.now() + (opts.busyTimeoutMs ?? 5000);
    for (let attempt = 1; ; attempt++) {
      let db: BetterSqlite3.Database | null = null;
      try {
        db = new Database(this.file, { timeout: opts.busyTimeoutMs ?? 5000 });
        // Read-only checks first (a damaged header shows here: the first read of the file); only
        // then the pragmas that write, so a file that is not ours is left exactly as it was.
        checkSchema(db, this.file);
        db.pragma('journal_mode = WAL');
        db.pragma(`synchronous = ${opts.fsync === 'always' ? 'FULL' : 'NORMAL'}`);
        db.pragma('journal_size_limit = 67108864');
        db.pragma('cache_size = -8192'); // 8 MiB of page cache per connection
        db.pragma(`wal_autocheckpoint = ${ckpt}`);
        this.schemaVersion = migrate(db, this.file);
        this.db = db;
        this.s = prepare(db);
        this.trimSql = prepareTrim(db);
        return;
      } catch (e) {
        db?.close();
        if (isBusy(e) && performance.now() < deadline) { sleepMs(Math.min(100, 5 * attempt)); continue; }
        throw sqliteError(e, `cannot open ${this.file}`);
      }
    }
  }

  protected load(name: string): { epoch: string; seq: number; data: SqlRoom } | null {
    const row = this.run(() => this.s.loadRoom.get(name) as [number, string, number] | undefined, 'read a room');
    return row === undefined ? null : { epoch: row[1], seq: row[2], data: { id: row[0] } };
  }

  protected emptyData(): SqlRoom {
    return { id: 0 };
  }

  protected flush(rooms: Iterable<RoomEntry<SqlRoom>>, cursors: Iterable<PendingCursor<SqlRoom>>): void {
    const created: RoomEntry<SqlRoom>[] = [];
    const s = this.s;
    try {
      s.begin.run();
      for (const r of rooms) {
        // rooms.seq is written when the room is (and raised by trimming): a room's latest seq is
        // max(rooms.seq, its newest message's seq), read so at load (schema v3). One row write
        // per room per commit saved: in 1:1 chat, one per message.
        if (r.data.id === 0) {
          r.data.id = Number(s.insertRoom.run(r.name, r.epoch, r.seq).lastInsertRowid);
          created.push(r);
        }
        for (const m of r.pending) {
          s.insertMsg.run(r.data.id, m.seq, m.from, m.ts, m.cid, m.frame);
          if (m.cid !== null) s.upsertCid.run(r.data.id, m.from, m.cid, m.seq, m.ts);
        }
        if (r.pending.length > 0) this.trimState.touched.add(r.name);
      }
      for (const c of cursors) s.upsertCursor.run(c.room.data.id, c.user, c.seq);
      s.commit.run();
    } catch (e) {
      for (const r of created) r.data.id = 0;
      if (this.db.inTransaction) s.rollback.run();
      throw sqliteError(e, `cannot commit to ${this.file}`);
    }
  }

  protected override afterCommit(): void {
    // Clean entries beyond the bound go, least recently used first (the cache is in use order).
    // A room never written (a join alone) is kept: dropping it would give it a new epoch while
    // the shard still shows the old one; the shard's evict() removes it with the room.
    let skipped = 0;
    for (const [name, r] of this.cache) {
      if (this.cache.size <= this.limits.roomCacheEntries || skipped > 1024) break;
      if (r.persisted) this.cache.delete(name); else skipped++;
    }
  }

  /** The SQLite settings in force (journal mode and synchronous level), read back from SQLite. */
  get settings(): { journalMode: string; synchronous: 'NORMAL' | 'FULL' | 'other' } {
    const mode = this.db.pragma('journal_mode', { simple: true }) as string;
    const sync = this.db.pragma('synchronous', { simple: true }) as number;
    return { journalMode: mode, synchronous: sync === 1 ? 'NORMAL' : sync === 2 ? 'FULL' : 'other' };
  }

  /** Rooms whose {epoch, seq} are cached in memory now (for tests and metrics). */
  get cachedRooms(): number {
    return this.cache.size;
  }

  protected committedRange(r: RoomEntry<SqlRoom>, from: number, to: number, maxBytes: number, newestFirst: boolean): StoredMessage[] {
    if (r.data.id === 0) return [];
    const stmt = newestFirst ? this.s.rangeDesc : this.s.rangeAsc;
    const out: StoredMessage[] = [];
    let bytes = 0;
    this.run(() => {
      for (const row of stmt.iterate(r.data.id, from, to) as IterableIterator<Row>) {
        if (out.length > 0 && bytes + row[4].byteLength > maxBytes) break;
        out.push({ seq: row[0], from: row[1], ts: row[2], cid: row[3], frame: row[4] });
        bytes += row[4].byteLength;
      }
    }, 'read messages');
    return out;
  }

  protected replaceCommitted(r: RoomEntry<SqlRoom>, seq: number, frame: Uint8Array): boolean {
    if (r.data.id === 0) return false;
    const info = this.run(() => this.s.replaceMsg.run(frame, r.data.id, seq), 'write a message');
    return info.changes > 0;
  }

  protected committedFirst(r: RoomEntry<SqlRoom>): number {
    if (r.data.id === 0) return r.committedSeq + 1;
    const min = this.run(() => this.s.firstSeq.get(r.data.id) as number | null, 'read messages');
    return min ?? r.committedSeq + 1;
  }

  protected committedCursor(r: RoomEntry<SqlRoom>, user: string): number | null {
    if (r.data.id === 0) return null;
    return this.run(() => (this.s.cursor.get(r.data.id, user) as number | undefined) ?? null, 'read a cursor');
  }

  protected committedCid(r: RoomEntry<SqlRoom>, user: string, cid: string): CidHit | null {
    if (r.data.id === 0) return null;
    const row = this.run(() => this.s.cid.get(r.data.id, user, cid) as [number, number] | undefined, 'read a cid');
    return row === undefined ? null : { seq: row[0], ts: row[1] };
  }

  protected trimBackend(now: number, budgetMs: number): TrimResult {
    return this.run(() => trimStep(this.db, this.trimSql, this.trimState, this.limits, now, budgetMs), 'trim history');
  }

  protected closeBackend(): void {
    this.db.close();
  }

  private run<T>(f: () => T, what: string): T {
    try {
      return f();
    } catch (e) {
      throw sqliteError(e, `cannot ${what} in ${this.file}`);
    }
  }
}

function prepare(db: BetterSqlite3.Database) {
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    loadRoom: db.prepare(`SELECT id, epoch, ${LATEST_SEQ} FROM rooms WHERE name = ?`).raw(),
    insertRoom: db.prepare('INSERT INTO rooms(name, epoch, seq) VALUES (?, ?, ?)'),
    insertMsg: db.prepare('INSERT INTO messages(room, seq, user, ts, cid, frame) VALUES (?, ?, ?, ?, ?, ?)'),
    replaceMsg: db.prepare('UPDATE messages SET frame = ? WHERE room = ? AND seq = ?'),
    upsertCid: db.prepare('INSERT OR REPLACE INTO cids(room, user, cid, seq, ts) VALUES (?, ?, ?, ?, ?)'),
    upsertCursor: db.prepare('INSERT INTO cursors(room, user, seq) VALUES (?, ?, ?) ON CONFLICT(room, user) DO UPDATE SET seq = excluded.seq'),
    rangeAsc: db.prepare('SELECT seq, user, ts, cid, frame FROM messages WHERE room = ? AND seq BETWEEN ? AND ? ORDER BY seq').raw(),
    rangeDesc: db.prepare('SELECT seq, user, ts, cid, frame FROM messages WHERE room = ? AND seq BETWEEN ? AND ? ORDER BY seq DESC').raw(),
    firstSeq: db.prepare('SELECT min(seq) FROM messages WHERE room = ?').pluck(),
    cursor: db.prepare('SELECT seq FROM cursors WHERE room = ? AND user = ?').pluck(),
    cid: db.prepare('SELECT seq, ts FROM cids WHERE room = ? AND user = ? AND cid = ?').raw(),
  };
}

/** A lock another connection holds for now (SQLITE_BUSY, SQLITE_BUSY_RECOVERY, SQLITE_LOCKED...). */
function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** Blocks this thread for `ms` (only while a store is being opened). */
function sleepMs(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}
