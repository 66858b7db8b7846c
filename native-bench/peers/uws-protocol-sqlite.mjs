#!/usr/bin/env node
/**
 * Peer of the durable-storage scenario: the single-threaded same-protocol server
 * (protocol-server.mjs) that also keeps every message in SQLite (better-sqlite3, on its one
 * thread), the way a user would add durability to it. Tuned honestly: WAL journal, one prepared
 * INSERT, and every message of an event-loop turn in one transaction, committed before that
 * turn's msgs and acks go out (acked means kept). synchronous=NORMAL by default (durable across a
 * process crash; FULL also across power loss: --synchronous FULL), the same trade-off an engine
 * store would offer.
 *
 *   node native-bench/peers/uws-protocol-sqlite.mjs --port 9106 [--db FILE] [--keep-db] [--synchronous NORMAL|FULL] [same flags as uws-protocol.mjs]
 *
 * --db defaults to a fresh file in the OS temp dir; a file this process created is removed on
 * exit unless --keep-db. It measures the cost of the writes; it does not reload rooms from the
 * file after a restart.
 */
import { createRequire } from 'node:module';
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProtocolPeer } from './protocol-server.mjs';

const require = createRequire(import.meta.url);
const Database = require('better-sqlite3');

const arg = (flag, def) => { const i = process.argv.indexOf(flag); return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def; };
const file = arg('--db', join(tmpdir(), `shardchat-peer-${process.pid}.db`));
const sync = arg('--synchronous', 'NORMAL');
if (!['NORMAL', 'FULL'].includes(sync)) { process.stderr.write('--synchronous must be NORMAL or FULL\n'); process.exit(2); }
const created = !existsSync(file);
const db = new Database(file);
db.pragma('journal_mode = WAL');
db.pragma(`synchronous = ${sync}`);
db.exec('CREATE TABLE IF NOT EXISTS messages (room TEXT NOT NULL, seq INTEGER NOT NULL, from_user TEXT NOT NULL, ts INTEGER NOT NULL, frame BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID');
const insert = db.prepare('INSERT INTO messages (room, seq, from_user, ts, frame) VALUES (?, ?, ?, ?, ?)');
const begin = db.prepare('BEGIN');
const commit = db.prepare('COMMIT');
let open = false;

runProtocolPeer('uws-protocol-sqlite', 9106, {
  append(room, seq, from, ts, frame) {
    if (!open) { begin.run(); open = true; }
    insert.run(room, seq, from, ts, frame);
  },
  commit() {
    if (open) { commit.run(); open = false; }
  },
  close() {
    this.commit();
    db.close();
    if (created && !process.argv.includes('--keep-db')) for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true });
  },
});
