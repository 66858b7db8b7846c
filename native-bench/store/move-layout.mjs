#!/usr/bin/env node
// The two layouts of the SQLite store's log and messages table, side by side in one process, raw
// better-sqlite3, one thread, no engine: schema v4 (messages WITHOUT ROWID keyed by room, seq; a
// log row for each message and one for its sender's cursor) against v5 (messages a rowid table
// in move order with a unique index on room, seq; the sender's cursor on the message's row).
// Each commit appends `batch` messages round `rooms` rooms to the log; every `move` log rows the
// log is moved into messages / cursors and emptied (as the store's moveLog() does). Prints this
// thread's CPU per message and the wall time of the commits and of the moves' parts.
// wal_autocheckpoint 0 (CKP=<pages> to checkpoint inside the commits): the checkpoint thread's
// cost is left out, so the figures are the shard's own. Bounded by the message count.
//   node native-bench/store/move-layout.mjs [rooms=500] [batch=256] [msgs=200000] [move=16384]
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const require = createRequire(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../package.json'));
const Database = require('better-sqlite3');
const rooms = Number(process.argv[2] ?? 500), batch = Number(process.argv[3] ?? 256);
const total = Number(process.argv[4] ?? 200_000), moveRows = Number(process.argv[5] ?? 16384);

function threadCpuMs() {
  const f = readFileSync('/proc/thread-self/stat', 'utf8');
  const a = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(a[11]) + Number(a[12])) * 10;
}

const MESSAGES = {
  v4: `CREATE TABLE messages(room INTEGER NOT NULL, seq INTEGER NOT NULL, user TEXT NOT NULL, ts INTEGER NOT NULL,
         cid TEXT, frame BLOB NOT NULL, PRIMARY KEY(room, seq)) WITHOUT ROWID;`,
  v5: `CREATE TABLE messages(id INTEGER PRIMARY KEY, room INTEGER NOT NULL, seq INTEGER NOT NULL, user TEXT NOT NULL,
         ts INTEGER NOT NULL, cid TEXT, frame BLOB NOT NULL);
       CREATE UNIQUE INDEX messages_by_room ON messages(room, seq);`,
};

function run(layout) {
  const dir = mkdtempSync(path.join(tmpdir(), 'move-layout-'));
  const db = new Database(path.join(dir, 'db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('cache_size = -8192');
    db.pragma(`wal_autocheckpoint = ${process.env.CKP ?? 0}`);
    db.exec(`${MESSAGES[layout]}
      CREATE TABLE cursors(room INTEGER NOT NULL, user TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(room, user)) WITHOUT ROWID;
      CREATE TABLE log(id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, room INTEGER NOT NULL, seq INTEGER NOT NULL,
        user TEXT NOT NULL, ts INTEGER NOT NULL, cid TEXT, frame BLOB);`);
    const msgKinds = layout === 'v4' ? '0' : '0, 2', cursorKinds = layout === 'v4' ? '1' : '1, 2';
    const logMsg = db.prepare(`INSERT INTO log(kind, room, seq, user, ts, cid, frame) VALUES (${layout === 'v4' ? 0 : 2}, ?, ?, ?, ?, ?, ?)`);
    const logCursor = db.prepare('INSERT INTO log(kind, room, seq, user, ts) VALUES (1, ?, ?, ?, 0)');
    const move = [
      `INSERT OR REPLACE INTO messages(room, seq, user, ts, cid, frame)
         SELECT room, seq, user, ts, cid, frame FROM log WHERE kind IN (${msgKinds}) ORDER BY room, seq`,
      `INSERT INTO cursors(room, user, seq) SELECT room, user, seq FROM log WHERE kind IN (${cursorKinds}) ORDER BY room, user, id
         ON CONFLICT(room, user) DO UPDATE SET seq = excluded.seq`,
      'DELETE FROM log',
      'COMMIT',
    ].map((sql) => db.prepare(sql));
    const begin = db.prepare('BEGIN IMMEDIATE'), commit = db.prepare('COMMIT');
    const frame = new Uint8Array(200).fill(7);
    const seqs = new Int32Array(rooms);
    const wall = { commits: 0, messages: 0, cursors: 0, delete: 0, moveCommit: 0 };
    const parts = ['messages', 'cursors', 'delete', 'moveCommit'];
    let logRows = 0;
    const c0 = threadCpuMs();
    for (let i = 0; i < total;) {
      const t0 = performance.now();
      begin.run();
      for (let k = 0; k < batch && i < total; k++, i++) {
        // the load bench's chat-1to1: senders take turns round the rooms, two members each
        const room = (i * 7919) % rooms;
        const user = `u${room * 2 + (i & 1)}`;
        const seq = ++seqs[room];
        logMsg.run(room, seq, user, Date.now(), null, frame);
        logRows++;
        if (layout === 'v4') { logCursor.run(room, seq, user); logRows++; }
      }
      commit.run();
      wall.commits += performance.now() - t0;
      if (logRows >= moveRows) {
        begin.run();
        for (let j = 0; j < move.length; j++) {
          const t = performance.now();
          move[j].run();
          wall[parts[j]] += performance.now() - t;
        }
        logRows = 0;
      }
    }
    const cpu = threadCpuMs() - c0;
    const us = (ms) => (ms * 1000 / total).toFixed(2);
    console.log(`${layout}: rooms ${rooms} batch ${batch} msgs ${total}: cpu ${us(cpu)} us/msg; wall us/msg: commits ${us(wall.commits)}, ` +
      `move ${parts.map((p) => `${p} ${us(wall[p])}`).join(', ')}`);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const layout of ['v4', 'v5', 'v4', 'v5']) run(layout);
