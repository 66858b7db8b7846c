/**
 * Checkpoints the shared database's write-ahead log from a thread of its own, so that the copy
 * into the database file (and its fsync) does not run inside some shard's commit. SQLite's
 * automatic checkpoint runs in whichever connection's commit crosses wal_autocheckpoint pages:
 * measured here it put that batch 10-80 ms late (docs/STORE.md). PASSIVE checkpoints never
 * block writers; the next writer then restarts the log from its beginning.
 * Run it in its own worker (checkpoint-worker.ts) next to shards opened with a high
 * autoCheckpointPages as a backstop.
 */
import { createRequire } from 'node:module';
import type BetterSqlite3 from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { dbPath, StoreError } from '../../engine/store-dir.js';
import { checkSchema } from './schema.js';
import { sqliteError } from './sqlite-errors.js';

const Database = createRequire(import.meta.url)('better-sqlite3') as typeof BetterSqlite3;

export interface CheckpointResult {
  /** Pages in the log, and how many of them are now in the database file. */
  logPages: number;
  checkpointedPages: number;
  /** True when a checkpoint could not run at all (another checkpoint held the lock). */
  busy: boolean;
}

export class Checkpointer {
  readonly file: string;
  private readonly db: BetterSqlite3.Database;
  private closed = false;

  /**
   * Opens an existing store's database (shards create it; this never does). Only PASSIVE
   * checkpoints: under constant writes they never catch up with the log's end, so the log then
   * restarts only at the shards' autoCheckpointPages backstop (a RESTART checkpoint from here,
   * tried, held writers back longer than the in-commit checkpoint it was meant to avoid).
   */
  constructor(dir: string) {
    this.file = dbPath(dir);
    if (!existsSync(this.file)) throw new StoreError('STORE_MISUSE', `${this.file} does not exist yet: start the checkpointer after a shard opened the store`);
    let db: BetterSqlite3.Database | null = null;
    try {
      db = new Database(this.file, { fileMustExist: true, timeout: 0 });
      checkSchema(db, this.file);
      db.pragma('wal_autocheckpoint = 0'); // this connection writes nothing itself
      this.db = db;
    } catch (e) {
      db?.close();
      throw sqliteError(e, `cannot open ${this.file} for checkpoints`);
    }
  }

  checkpoint(): CheckpointResult {
    try {
      const row = (this.db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[])[0]!;
      return { busy: row.busy !== 0, logPages: row.log, checkpointedPages: row.checkpointed };
    } catch (e) {
      throw sqliteError(e, `cannot checkpoint ${this.file}`);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }
}
