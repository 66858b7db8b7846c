/**
 * The SQLite schema and its migrations. PRAGMA user_version is the schema version; MIGRATIONS[i]
 * takes a database from version i to i + 1, inside one transaction, so a crash mid-migration
 * leaves the old version. PRAGMA application_id marks the file as shardchat's.
 *
 * v1: rooms, messages (the encoded msg frame plus the columns the HTTP API queries by), cursors.
 * v2: cids, the dedupe window in a table of its own, so that trimming history does not shorten
 *     the window and the window does not keep history; filled from v1's messages.cid.
 * v3: no new table; rooms.seq becomes a lower bound: it is written with the room and raised by
 *     trimming, not at every commit, and a room's latest seq is LATEST_SEQ (the larger of it and
 *     the room's newest message). A build that knows only v2 would take rooms.seq as the latest
 *     and reuse seqs: the version makes it refuse the file (STORE_NEWER_SCHEMA) instead.
 * v4: per-shard append-only logs `log_<k>` (LOG_TABLE): a commit appends its messages and cursors
 *     there, and the shard moves them into messages / cursors / cids later (moveLogSql). A v3
 *     build would not read the logs and would miss (and reuse the seqs of) unmoved messages: the
 *     version makes it refuse the file. Each shard creates its own log; the migration only marks
 *     the version (v3's data is valid as it is).
 * v5: messages becomes a rowid table with a unique index on (room, seq), its rows in move order
 *     (a room's rows of one move are neighbours). A WITHOUT ROWID table keyed by (room, seq) took
 *     every move's rows into the middle of the tree, a page split per room per move; appending
 *     at the end of a rowid table and indexing 20-byte keys costs half (native-bench/store/
 *     move-layout.mjs, 500 rooms: 3.1 against 5.55 us of CPU per message, commits and moves). And a log row of kind
 *     LOG_MSG_CURSOR is a message that also sets its sender's cursor to its seq (what every
 *     `pub` of a named user does), one row where v4 wrote two. A v4 build would miss those
 *     cursors: the version makes it refuse the file. The migration rebuilds messages (one pass,
 *     at the first open of a v5 build).
 */
import type Database from 'better-sqlite3';
import { StoreError } from '../../engine/store-dir.js';

export const APPLICATION_ID = 0x53484331; // 'SHC1'

export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE rooms(
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     epoch TEXT NOT NULL,
     seq INTEGER NOT NULL);
   CREATE TABLE messages(
     room INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     user TEXT NOT NULL,
     ts INTEGER NOT NULL,
     cid TEXT,
     frame BLOB NOT NULL,
     PRIMARY KEY(room, seq)) WITHOUT ROWID;
   CREATE TABLE cursors(
     room INTEGER NOT NULL,
     user TEXT NOT NULL,
     seq INTEGER NOT NULL,
     PRIMARY KEY(room, user)) WITHOUT ROWID;`,
  `CREATE TABLE cids(
     room INTEGER NOT NULL,
     user TEXT NOT NULL,
     cid TEXT NOT NULL,
     seq INTEGER NOT NULL,
     ts INTEGER NOT NULL,
     PRIMARY KEY(room, user, cid)) WITHOUT ROWID;
   CREATE INDEX cids_by_age ON cids(ts);
   INSERT INTO cids(room, user, cid, seq, ts)
     SELECT room, user, cid, max(seq), ts FROM messages WHERE cid IS NOT NULL GROUP BY room, user, cid;`,
  `-- v3: rooms.seq is a lower bound from now on (see above); the data of v2 is valid as it is.
   SELECT 1;`,
  `-- v4: per-shard logs (log_<k>), created by each shard when it opens; v3's data is valid as it is.
   SELECT 1;`,
  `-- v5: messages as a rowid table in move order, with its (room, seq) key as a unique index.
   CREATE TABLE messages_v5(
     id INTEGER PRIMARY KEY,
     room INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     user TEXT NOT NULL,
     ts INTEGER NOT NULL,
     cid TEXT,
     frame BLOB NOT NULL);
   INSERT INTO messages_v5(room, seq, user, ts, cid, frame)
     SELECT room, seq, user, ts, cid, frame FROM messages ORDER BY room, seq;
   DROP TABLE messages;
   ALTER TABLE messages_v5 RENAME TO messages;
   CREATE UNIQUE INDEX messages_by_room ON messages(room, seq);`,
];

/** The name of shard `k`'s log table. */
export function logTable(k: number): string {
  if (!(Number.isInteger(k) && k >= 0 && k <= 4095)) throw new TypeError(`store option shard must be an integer 0..4095, got ${String(k)}`);
  return `log_${k}`;
}

/** Every shard's log table in the file (any shard count that ever wrote it). */
export const LIST_LOGS = "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'log_[0-9]*' ORDER BY name";

/**
 * Kind of a log row: a message (with its cid, if any), a cursor, or (v5) a message that also sets
 * its sender's cursor to its seq.
 */
export const LOG_MSG = 0;
export const LOG_CURSOR = 1;
export const LOG_MSG_CURSOR = 2;
/** SQL: the log row is a message / sets a cursor. */
export const IS_MSG = `kind IN (${LOG_MSG}, ${LOG_MSG_CURSOR})`;
export const IS_CURSOR = `kind IN (${LOG_CURSOR}, ${LOG_MSG_CURSOR})`;

/**
 * A shard's log: rows in commit order (the rowid), so a commit dirties the log's last page or
 * two whatever rooms it touches. A message row carries every column of messages (and its cid);
 * a cursor row has room, user, seq (ts 0, no frame); a message-and-cursor row is a message row
 * whose user's cursor becomes its seq.
 */
export function logTableSql(name: string): string {
  return `CREATE TABLE IF NOT EXISTS ${name}(
     id INTEGER PRIMARY KEY,
     kind INTEGER NOT NULL,
     room INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     user TEXT NOT NULL,
     ts INTEGER NOT NULL,
     cid TEXT,
     frame BLOB)`;
}

/**
 * Moves a log into messages / cursors / cids, sorted by key (a page per room per move, not one
 * per message), then empties it. Run all of them in ONE write transaction: a move and a commit of
 * the same log serialize on the write lock, so every row is moved exactly once. Later rows win
 * (cursors and cids by rowid within a key); a message's row is newer than any row of messages
 * with its key (messages only grows through moves, trims remove prefixes), so OR REPLACE only
 * keeps a move from failing where a plain INSERT would refuse.
 */
export function moveLogSql(name: string): string[] {
  return [
    `INSERT OR REPLACE INTO messages(room, seq, user, ts, cid, frame)
       SELECT room, seq, user, ts, cid, frame FROM ${name} WHERE ${IS_MSG} ORDER BY room, seq`,
    `INSERT OR REPLACE INTO cids(room, user, cid, seq, ts)
       SELECT room, user, cid, seq, ts FROM ${name} WHERE ${IS_MSG} AND cid IS NOT NULL ORDER BY room, user, cid, id`,
    `INSERT INTO cursors(room, user, seq)
       SELECT room, user, seq FROM ${name} WHERE ${IS_CURSOR} ORDER BY room, user, id
       ON CONFLICT(room, user) DO UPDATE SET seq = excluded.seq`,
    `DELETE FROM ${name}`,
  ];
}

export const SCHEMA_VERSION = MIGRATIONS.length;

/** A room's latest seq as SQL over a row of rooms (aliased or not as `rooms`): see v3 above. */
export const LATEST_SEQ = 'max(rooms.seq, coalesce((SELECT max(m.seq) FROM messages m WHERE m.room = rooms.id), 0))';

/**
 * Brings the database to `target` (default: this build's version), or throws: a newer version is
 * STORE_NEWER_SCHEMA, a database that is not shardchat's is STORE_FOREIGN. Safe when several
 * shard workers open the same file at once: the check and the migration run under the write lock.
 */
/**
 * Refuses a database that is not shardchat's or is newer than this build, by reading only: it
 * runs before any pragma that writes (journal_mode = WAL rewrites the header of any database).
 * Returns the version found.
 */
export function checkSchema(db: Database.Database, file: string): number {
  // One read transaction for the three reads: another shard's migration committing between them
  // (version 0 read before it, its tables after) would make a new database look foreign.
  if (db.inTransaction) return checkSnapshot(db, file);
  db.exec('BEGIN');
  try {
    return checkSnapshot(db, file);
  } finally {
    db.exec('COMMIT');
  }
}

function checkSnapshot(db: Database.Database, file: string): number {
  const version = db.pragma('user_version', { simple: true }) as number;
  const appId = db.pragma('application_id', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new StoreError('STORE_NEWER_SCHEMA',
      `${file} has schema version ${version}; this shardchat knows up to ${SCHEMA_VERSION}: upgrade shardchat (nothing was changed)`);
  }
  const foreign = version === 0
    ? (db.prepare("SELECT count(*) FROM sqlite_master").pluck().get() as number) > 0 || (appId !== 0 && appId !== APPLICATION_ID)
    : appId !== APPLICATION_ID;
  if (foreign) throw new StoreError('STORE_FOREIGN', `${file} is a SQLite database that shardchat did not write (nothing was changed)`);
  return version;
}

/**
 * Brings the database to `target` (default: this build's version), or throws (see checkSchema).
 * Safe when several shard workers open the same file at once: the check and the migration run
 * again under the write lock.
 */
export function migrate(db: Database.Database, file: string, target = SCHEMA_VERSION): number {
  db.exec('BEGIN IMMEDIATE');
  try {
    const version = checkSchema(db, file);
    if (version === 0) db.pragma(`application_id = ${APPLICATION_ID}`);
    for (let v = version; v < target; v++) {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    }
    db.exec('COMMIT');
    return Math.max(version, target);
  } catch (e) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw e;
  }
}
