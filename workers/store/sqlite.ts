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
import { DEFAULT_OPEN_TIMEOUT_MS, dbPath, prepareDataDir } from '../../engine/store-dir.js';
import { BufferedStore, cidKey, type CidHit, type PendingCursor, type RoomEntry } from './buffered.js';
import { IS_MSG, LATEST_SEQ, LIST_LOGS, LOG_CURSOR, LOG_MSG, LOG_MSG_CURSOR, checkSchema, logTable, logTableSql, migrate, moveLogSql } from './schema.js';
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
   * How long opening waits for other connections' locks in all (default 120000 ms, at least
   * busyTimeoutMs): a shard that opens while another migrates the file (the v4 -> v5 rebuild
   * takes ~1.6 s per million stored messages) waits for it instead of failing the start.
   */
  openTimeoutMs?: number;
  /**
   * WAL pages after which a commit also checkpoints (SQLite's wal_autocheckpoint, default 1000).
   * A checkpoint inside a commit makes that batch late by milliseconds; with a Checkpointer
   * thread running (checkpointer.ts), set this high (e.g. 16384) as a backstop only.
   */
  autoCheckpointPages?: number;
  /** The shard's index: its commits append to the log table log_<shard> (default 0). */
  shard?: number;
  /** maintain() moves the log into the tables once it holds this many rows (1..65536, default 16384). */
  logMoveRows?: number;
  /** ...or once its oldest unmoved row is this old, in ms (0..60000, default 500; 0: at every maintain()). */
  logMoveMs?: number;
}

export const DEFAULT_LOG_MOVE_ROWS = 16384;
export const DEFAULT_LOG_MOVE_MS = 500;
/** A commit itself moves the log past this many times logMoveRows (a caller that never calls maintain()). */
export const LOG_HARD_FACTOR = 2;
/** Bytes of one frame arena (copyFrame); frames over a quarter of it get their own copy. */
const ARENA_BYTES = 256 * 1024;

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
  private readonly logName: string;
  private readonly logMoveRows: number;
  private readonly logMoveMs: number;
  /** Rows in this shard's log not yet moved (an upper bound: another store may have moved them). */
  private logRows = 0;
  /** performance.now() of the first commit since the last move. */
  private logSince = 0;
  /** Rooms with unmoved rows -> their oldest and newest unmoved seq (first Infinity, last 0: only cursors). */
  private readonly unmoved = new Map<string, { first: number; last: number }>();
  /** Unmoved cursors (room \0 user) and cids (room \0 user \0 cid): consulted before SQLite. */
  private readonly logCursors = new Map<string, number>();
  private readonly logCids = new Map<string, CidHit>();
  /** Moves of the log so far (for tests and metrics). */
  moves = 0;
  /**
   * Pending frames, copied end to end (copyFrame): one allocation per ARENA_BYTES of frames
   * instead of an ArrayBuffer per message. Bytes of an arena are written once and never reused:
   * a full arena is left to the GC, which frees it once the last view (a pending message, until
   * its commit; a read's result) is gone.
   */
  private arena: Uint8Array = new Uint8Array(0);
  private arenaAt = 0;

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
    this.logName = logTable(opts.shard ?? 0);
    this.logMoveRows = opts.logMoveRows ?? DEFAULT_LOG_MOVE_ROWS;
    this.logMoveMs = opts.logMoveMs ?? DEFAULT_LOG_MOVE_MS;
    if (!(Number.isInteger(this.logMoveRows) && this.logMoveRows >= 1 && this.logMoveRows <= 65536)) {
      throw new TypeError(`store option logMoveRows must be an integer 1..65536, got ${String(opts.logMoveRows)}`);
    }
    if (!(Number.isInteger(this.logMoveMs) && this.logMoveMs >= 0 && this.logMoveMs <= 60_000)) {
      throw new TypeError(`store option logMoveMs must be an integer 0..60000, got ${String(opts.logMoveMs)}`);
    }
    if (opts.openTimeoutMs !== undefined && !(Number.isInteger(opts.openTimeoutMs) && opts.openTimeoutMs >= 0)) {
      throw new TypeError(`store option openTimeoutMs must be an integer >= 0, got ${String(opts.openTimeoutMs)}`);
    }
    prepareDataDir(opts.dir);
    this.file = dbPath(opts.dir);
    // Several shards open a new data dir at once: one of them switching it to WAL (or recovering
    // it) makes the others' first reads fail with SQLITE_BUSY at once, without SQLite's busy
    // handler (seen in CI: "database is locked" 94 ms into a 3-shard open). Opening is retried
    // within openTimeoutMs (a sibling's migration may hold the write lock for seconds); any other
    // error, or a lock held that long, is the StoreError.
    const busy = opts.busyTimeoutMs ?? 5000;
    const deadline = performance.now() + Math.max(busy, opts.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS);
    for (let attempt = 1; ; attempt++) {
      let db: BetterSqlite3.Database | null = null;
      try {
        db = new Database(this.file, { timeout: busy });
        // Read-only checks first (a damaged header shows here: the first read of the file); only
        // then the pragmas that write, so a file that is not ours is left exactly as it was.
        checkSchema(db, this.file);
        db.pragma('journal_mode = WAL');
        db.pragma(`synchronous = ${opts.fsync === 'always' ? 'FULL' : 'NORMAL'}`);
        db.pragma('journal_size_limit = 67108864');
        db.pragma('cache_size = -8192'); // 8 MiB of page cache per connection
        db.pragma(`wal_autocheckpoint = ${ckpt}`);
        this.schemaVersion = migrate(db, this.file);
        moveAllLogs(db, this.logName);
        this.db = db;
        this.s = prepare(db, this.logName);
        this.trimSql = prepareTrim(db);
        return;
      } catch (e) {
        db?.close();
        if (isBusy(e) && performance.now() < deadline) { sleepMs(Math.min(100, 5 * attempt)); continue; }
        throw sqliteError(e, `cannot open ${this.file}`);
      }
    }
  }

  protected override copyFrame(frame: Uint8Array): Uint8Array {
    const n = frame.byteLength;
    if (n > ARENA_BYTES >>> 2) return Uint8Array.prototype.slice.call(frame);
    if (this.arenaAt + n > this.arena.byteLength) { this.arena = new Uint8Array(ARENA_BYTES); this.arenaAt = 0; }
    const copy = this.arena.subarray(this.arenaAt, this.arenaAt + n);
    copy.set(frame);
    this.arenaAt += n;
    return copy;
  }

  protected load(name: string): { epoch: string; seq: number; data: SqlRoom } | null {
    const row = this.run(() => this.s.loadRoom.get(name) as [number, string, number] | undefined, 'read a room');
    if (row === undefined) return null;
    // LATEST_SEQ reads messages only: a room evicted from the cache may have newer unmoved ones.
    const u = this.unmoved.get(name);
    return { epoch: row[1], seq: u === undefined ? row[2] : Math.max(row[2], u.last), data: { id: row[0] } };
  }

  protected emptyData(): SqlRoom {
    return { id: 0 };
  }

  protected flush(rooms: Iterable<RoomEntry<SqlRoom>>, cursors: Iterable<PendingCursor<SqlRoom>>): void {
    const created: RoomEntry<SqlRoom>[] = [];
    const s = this.s;
    // A cursor the batch sets to the seq of its user's own message in it (every pub of a named
    // user) rides on that message's row (LOG_MSG_CURSOR): one log row per message, not two.
    const implied = new Set<StoredMessage>();
    const explicit: PendingCursor<SqlRoom>[] = [];
    for (const c of cursors) {
      const p = c.room.pending;
      const m = p.length > 0 ? p[c.seq - p[0]!.seq] : undefined;
      if (m !== undefined && m.seq === c.seq && m.from === c.user) implied.add(m); else explicit.push(c);
    }
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
        // Into the shard's log, in commit order: a few pages per commit whatever the rooms
        // (moveLog() sorts them into messages / cids later).
        for (const m of r.pending) s.logMsg.run(implied.has(m) ? LOG_MSG_CURSOR : LOG_MSG, r.data.id, m.seq, m.from, m.ts, m.cid, m.frame);
      }
      for (const c of explicit) s.logCursor.run(c.room.data.id, c.seq, c.user);
      s.commit.run();
    } catch (e) {
      for (const r of created) r.data.id = 0;
      if (this.db.inTransaction) s.rollback.run();
      throw sqliteError(e, `cannot commit to ${this.file}`);
    }
    // Committed: what reads must find before the next move.
    if (this.logRows === 0) this.logSince = performance.now();
    for (const r of rooms) {
      let u = this.unmoved.get(r.name);
      if (u === undefined) { u = { first: Infinity, last: 0 }; this.unmoved.set(r.name, u); }
      if (r.pending.length === 0) continue;
      this.trimState.touched.add(r.name);
      if (u.first === Infinity) u.first = r.pending[0]!.seq;
      u.last = r.pending[r.pending.length - 1]!.seq;
      for (const m of r.pending) if (m.cid !== null) this.logCids.set(r.name + '\u0000' + cidKey(m.from, m.cid), { seq: m.seq, ts: m.ts });
      this.logRows += r.pending.length;
    }
    for (const [key, c] of this.pendingCursors) this.logCursors.set(key, c.seq);
    this.logRows += explicit.length;
  }

  /**
   * Moves this shard's log into messages / cursors / cids in one write transaction, and forgets
   * the in-memory view of it. Reads of a room with unmoved rows that must go to SQLite call it.
   */
  moveLog(): void {
    if (this.unmoved.size === 0 && this.logRows === 0) return;
    const s = this.s;
    try {
      s.begin.run();
      s.moveMsgs.run();
      s.moveCids.run();
      s.moveCursors.run();
      s.clearLog.run();
      s.commit.run();
    } catch (e) {
      if (this.db.inTransaction) s.rollback.run();
      throw sqliteError(e, `cannot move the log ${this.logName} in ${this.file}`);
    }
    this.moves++;
    for (const [name, u] of this.unmoved) if (u.last > 0) this.trimState.touched.add(name);
    this.logRows = 0;
    this.unmoved.clear();
    this.logCursors.clear();
    this.logCids.clear();
  }

  /** Between batches: moves the log once it holds logMoveRows rows or its oldest is logMoveMs old. */
  override maintain(): void {
    if (this.closed || this.inBatch || this.logRows === 0) return;
    if (this.logRows >= this.logMoveRows || performance.now() - this.logSince >= this.logMoveMs) this.moveLog();
  }

  /** Rows in this shard's log not yet moved, as this store counts them (for tests and metrics). */
  get unmovedRows(): number {
    return this.logRows;
  }

  /** Before a write of `name`'s rows in SQLite that may touch seq `seq` (a redaction). */
  private ensureMoved(name: string, seq: number): void {
    const u = this.unmoved.get(name);
    if (u !== undefined && u.first <= seq) this.moveLog();
  }

  protected override afterCommit(): void {
    if (this.logRows >= LOG_HARD_FACTOR * this.logMoveRows) {
      // The batch is committed: commit() must not throw now (the caller would take an acked
      // batch for a failed one). A move that fails here is tried again by the next commit, and
      // maintain() / trim(), outside a commit, report its error.
      try { this.moveLog(); } catch { /* see above */ }
    }
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
    // A range that reaches the room's unmoved messages reads the log too (a scan of at most
    // LOG_HARD_FACTOR x logMoveRows rows): reads never write, so they work on a full disk.
    const u = this.unmoved.get(r.name);
    const withLog = u !== undefined && u.first <= to;
    const stmt = withLog ? (newestFirst ? this.s.rangeDescLog : this.s.rangeAscLog) : (newestFirst ? this.s.rangeDesc : this.s.rangeAsc);
    const out: StoredMessage[] = [];
    let bytes = 0;
    this.run(() => {
      const rows = (withLog ? stmt.iterate(r.data.id, from, to, r.data.id, from, to) : stmt.iterate(r.data.id, from, to)) as IterableIterator<Row>;
      for (const row of rows) {
        if (out.length > 0 && bytes + row[4].byteLength > maxBytes) break;
        out.push({ seq: row[0], from: row[1], ts: row[2], cid: row[3], frame: row[4] });
        bytes += row[4].byteLength;
      }
    }, 'read messages');
    return out;
  }

  protected replaceCommitted(r: RoomEntry<SqlRoom>, seq: number, frame: Uint8Array): boolean {
    if (r.data.id === 0) return false;
    this.ensureMoved(r.name, seq);
    const info = this.run(() => this.s.replaceMsg.run(frame, r.data.id, seq), 'write a message');
    return info.changes > 0;
  }

  protected committedFirst(r: RoomEntry<SqlRoom>): number {
    if (r.data.id === 0) return r.committedSeq + 1;
    // Unmoved messages are newer than any moved one: the oldest is in messages if it has any.
    const min = this.run(() => this.s.firstSeq.get(r.data.id) as number | null, 'read messages');
    const u = this.unmoved.get(r.name);
    return min ?? (u !== undefined && u.first !== Infinity ? u.first : r.committedSeq + 1);
  }

  protected committedCursor(r: RoomEntry<SqlRoom>, user: string): number | null {
    if (r.data.id === 0) return null;
    const logged = this.logCursors.get(r.name + '\u0000' + user);
    if (logged !== undefined) return logged;
    return this.run(() => (this.s.cursor.get(r.data.id, user) as number | undefined) ?? null, 'read a cursor');
  }

  protected committedCid(r: RoomEntry<SqlRoom>, user: string, cid: string): CidHit | null {
    if (r.data.id === 0) return null;
    const logged = this.logCids.get(r.name + '\u0000' + cidKey(user, cid));
    if (logged !== undefined) return logged;
    const row = this.run(() => this.s.cid.get(r.data.id, user, cid) as [number, number] | undefined, 'read a cid');
    return row === undefined ? null : { seq: row[0], ts: row[1] };
  }

  protected trimBackend(now: number, budgetMs: number): TrimResult {
    // Trimming reads rooms' latest seqs and removes prefixes of messages: of moved rows only.
    // The shard trims every tick (500 ms), so the log is at most a tick old whatever logMoveMs.
    this.moveLog();
    return this.run(() => trimStep(this.db, this.trimSql, this.trimState, this.limits, now, budgetMs), 'trim history');
  }

  protected closeBackend(): void {
    // A clean stop leaves the log empty; should the move fail (a full disk), the rows stay in
    // the log, committed, and the next open moves them.
    try { this.moveLog(); } catch { /* moved at the next open */ }
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

/**
 * At open: moves every shard's log (the shard count may have changed since they were written,
 * and a shard that crashed left its log unmoved), in one write transaction, and creates this
 * shard's log if it is missing. Another shard's commits to its log serialize with this on the
 * write lock: each row is moved exactly once, before or after. Logs of shards that no longer
 * exist stay as empty tables (dropping one could fail a live shard's prepared statements).
 */
function moveAllLogs(db: BetterSqlite3.Database, own: string): void {
  db.exec('BEGIN IMMEDIATE');
  try {
    db.exec(logTableSql(own));
    for (const name of db.prepare(LIST_LOGS).pluck().all() as string[]) {
      for (const sql of moveLogSql(name)) db.exec(sql);
    }
    db.exec('COMMIT');
  } catch (e) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw e;
  }
}

function prepare(db: BetterSqlite3.Database, log: string) {
  const [moveMsgs, moveCids, moveCursors, clearLog] = moveLogSql(log).map((sql) => db.prepare(sql));
  return {
    /** kind: LOG_MSG, or LOG_MSG_CURSOR when the row also sets its sender's cursor. */
    logMsg: db.prepare(`INSERT INTO ${log}(kind, room, seq, user, ts, cid, frame) VALUES (?, ?, ?, ?, ?, ?, ?)`),
    logCursor: db.prepare(`INSERT INTO ${log}(kind, room, seq, user, ts) VALUES (${LOG_CURSOR}, ?, ?, ?, 0)`),
    moveMsgs: moveMsgs!, moveCids: moveCids!, moveCursors: moveCursors!, clearLog: clearLog!,
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    loadRoom: db.prepare(`SELECT id, epoch, ${LATEST_SEQ} FROM rooms WHERE name = ?`).raw(),
    insertRoom: db.prepare('INSERT INTO rooms(name, epoch, seq) VALUES (?, ?, ?)'),
    replaceMsg: db.prepare('UPDATE messages SET frame = ? WHERE room = ? AND seq = ?'),
    rangeAsc: db.prepare('SELECT seq, user, ts, cid, frame FROM messages WHERE room = ? AND seq BETWEEN ? AND ? ORDER BY seq').raw(),
    rangeDesc: db.prepare('SELECT seq, user, ts, cid, frame FROM messages WHERE room = ? AND seq BETWEEN ? AND ? ORDER BY seq DESC').raw(),
    rangeAscLog: db.prepare(`SELECT seq, user, ts, cid, frame FROM messages WHERE room = ? AND seq BETWEEN ? AND ?
      UNION ALL SELECT seq, user, ts, cid, frame FROM ${log} WHERE ${IS_MSG} AND room = ? AND seq BETWEEN ? AND ? ORDER BY seq`).raw(),
    rangeDescLog: db.prepare(`SELECT seq, user, ts, cid, frame FROM messages WHERE room = ? AND seq BETWEEN ? AND ?
      UNION ALL SELECT seq, user, ts, cid, frame FROM ${log} WHERE ${IS_MSG} AND room = ? AND seq BETWEEN ? AND ? ORDER BY seq DESC`).raw(),
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
