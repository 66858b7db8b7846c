/**
 * A thread of its own that takes a SQLite database's write lock (BEGIN IMMEDIATE), holds it for
 * `ms` and releases it, as a sibling shard migrating the file does: for tests of what waits for
 * that lock. Resolves once the lock is held.
 */
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export interface LockHolder {
  /** Resolves when the holder released the lock and ended. */
  released: Promise<unknown>;
  /** Ends the holder now (for t.after: harmless once it ended). */
  stop: () => Promise<number>;
}

export async function holdWriteLock(file: string, ms: number): Promise<LockHolder> {
  const w = new Worker(`
    const { parentPort, workerData } = require('node:worker_threads');
    const Database = require(workerData.module);
    const db = new Database(workerData.file);
    db.exec('BEGIN IMMEDIATE');
    parentPort.postMessage('locked');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.ms);
    db.exec('ROLLBACK');
    db.close();
  `, { eval: true, workerData: { file, ms, module: createRequire(import.meta.url).resolve('better-sqlite3') } });
  const released = once(w, 'exit');
  await once(w, 'message');
  return { released, stop: () => w.terminate() };
}
