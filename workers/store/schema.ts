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
];

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
