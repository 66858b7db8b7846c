/**
 * The data directory, as the main thread sees it: pure fs, no SQLite (only shard workers open the
 * database). `lockDataDir` takes the engine's lock on the directory before any shard starts, so a
 * second engine on the same directory fails at start instead of writing beside the first.
 * `StoreError` is the one typed error of the durable store, thrown here and by the backends in
 * workers/store/, each with a stable code a program (and the CLI) can match.
 */
import {
  accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, statfsSync, statSync, unlinkSync, writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';

export type StoreErrorCode =
  /** Another running engine holds the data directory's lock. */
  | 'STORE_LOCKED'
  /** The database file is not a readable SQLite database (or a part of it is missing). */
  | 'STORE_CORRUPT'
  /** A SQLite database, but not one shardchat wrote (its application_id is not ours). */
  | 'STORE_FOREIGN'
  /** Written by a newer shardchat: its schema version is above the one this build knows. */
  | 'STORE_NEWER_SCHEMA'
  /** The directory or the database cannot be created or written (permissions, read-only fs). */
  | 'STORE_UNWRITABLE'
  /** The disk (or the file size limit) is full: nothing more can be committed. */
  | 'STORE_FULL'
  /** Another shard held the database's write lock for longer than busyTimeoutMs. */
  | 'STORE_BUSY'
  /** Another I/O error from the operating system. */
  | 'STORE_IO'
  /** The store was used against its contract (a seq out of order, a batch not begun, closed). */
  | 'STORE_MISUSE';

/**
 * How long a shard's store open may wait for other connections' locks in all, 120 s: a sibling
 * shard's schema migration holds the write lock (the v4 -> v5 rebuild: ~1.6 s per million stored
 * messages). The engine's start waits this much longer for shards on a durable store.
 */
export const DEFAULT_OPEN_TIMEOUT_MS = 120_000;

export class StoreError extends Error {
  constructor(readonly code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
  }
}

/** The database file inside a data directory (one file shared by every shard: see docs/STORE.md). */
export const DB_FILE = 'shardchat.db';
export const LOCK_FILE = 'LOCK';

/** Below this much free space an open is refused (STORE_FULL) rather than failing at the first commit. */
export const MIN_FREE_BYTES = 256 * 1024;

export function dbPath(dir: string): string {
  return path.join(dir, DB_FILE);
}

/** Creates the directory if needed and checks it is a writable directory with some free space. */
export function prepareDataDir(dir: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new StoreError('STORE_UNWRITABLE', `the data directory ${dir} is not a directory`);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw fsError(e, `cannot create the data directory ${dir}`);
  }
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw fsError(e, `the data directory ${dir} is not writable`);
  }
  let free: number;
  try {
    const fs = statfsSync(dir);
    free = fs.bavail * fs.bsize;
  } catch (e) {
    throw fsError(e, `cannot read the free space of ${dir}`);
  }
  if (free < MIN_FREE_BYTES) {
    throw new StoreError('STORE_FULL', `the disk of the data directory ${dir} is full (${free} bytes free, at least ${MIN_FREE_BYTES} needed)`);
  }
  // A write-ahead log without its database is what is left when the main file was deleted or
  // moved: opening would start an empty database beside the log. Refuse instead.
  const db = dbPath(dir);
  if (!existsSync(db) && existsSync(db + '-wal')) {
    throw new StoreError('STORE_CORRUPT', `${db}-wal exists but ${db} does not: the database file is missing`);
  }
}

export interface DataDirLock {
  readonly dir: string;
  release(): void;
}

interface LockBody { pid: number; host: string; since: number }

function readLock(file: string): LockBody | null {
  try {
    const body = JSON.parse(readFileSync(file, 'utf8')) as LockBody;
    return Number.isInteger(body.pid) && typeof body.host === 'string' ? body : null;
  } catch {
    return null; // unreadable or half-written: treated as held by an unknown owner below
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the data directory's lock: a LOCK file created exclusively, holding this process's pid
 * and host. A lock left by a process that is gone (same host, pid not running) is taken over; a
 * live one, one from another host, or one that cannot be read is STORE_LOCKED. Release it on
 * shutdown (the file is removed only if it is still ours).
 */
export function lockDataDir(dir: string): DataDirLock {
  prepareDataDir(dir);
  const file = path.join(dir, LOCK_FILE);
  const body = JSON.stringify({ pid: process.pid, host: hostname(), since: Date.now() } satisfies LockBody);
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, 'wx', 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(e, `cannot create ${file}`);
      const held = readLock(file);
      if (held === null) throw new StoreError('STORE_LOCKED', `${file} exists and cannot be read: remove it if no engine uses ${dir}`);
      if (held.host !== hostname() || alive(held.pid)) {
        throw new StoreError('STORE_LOCKED', `${dir} is in use by process ${held.pid} on ${held.host} (since ${new Date(held.since).toISOString()})`);
      }
      if (attempt === 0) { unlinkSync(file); continue; } // stale: its owner is gone
      throw new StoreError('STORE_LOCKED', `${file} was taken by another process while this one started`);
    }
    try { writeSync(fd, body); } finally { closeSync(fd); }
    let released = false;
    return {
      dir,
      release(): void {
        if (released) return;
        released = true;
        const now = readLock(file);
        if (now !== null && now.pid === process.pid && now.host === hostname()) unlinkSync(file);
      },
    };
  }
  throw new StoreError('STORE_LOCKED', `cannot take ${file}`);
}

/** An fs error as a StoreError with a code a program can match. */
export function fsError(e: unknown, what: string): StoreError {
  const code = (e as NodeJS.ErrnoException).code;
  const reason = (e as Error).message;
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOTDIR') {
    return new StoreError('STORE_UNWRITABLE', `${what}: ${reason}`, { cause: e });
  }
  if (code === 'ENOSPC' || code === 'EFBIG' || code === 'EDQUOT') return new StoreError('STORE_FULL', `${what}: ${reason}`, { cause: e });
  return new StoreError('STORE_IO', `${what}: ${reason}`, { cause: e });
}
