#!/usr/bin/env node
// The cost of a schema migration at the first open: fills a data directory through ANOTHER
// build's store (its dist, e.g. a checkout of the last v4 commit built with `npx tsc`), MESSAGES
// 200 B frames in 10,000 rooms, 1000 per commit, then opens it with this build's store and times
// the constructor (the migration runs there, under the write lock), reads a room, and opens once
// more. Bounded by the message count; the directory is removed.
//   npm run build && node native-bench/store/migrate-from.mjs <other build>/dist [messages=1000000]
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const otherDist = process.argv[2];
if (!otherDist) { console.error('usage: migrate-from.mjs <other build>/dist [messages]'); process.exit(2); }
const messages = Number(process.argv[3] ?? 1_000_000), rooms = 10_000;
const { SqliteStore: Old } = await import(pathToFileURL(path.resolve(otherDist, 'workers/store/index.js')).href);
const { SqliteStore: New } = await import(pathToFileURL(path.join(root, 'dist/workers/store/index.js')).href);
const dir = mkdtempSync(path.join(tmpdir(), 'migrate-from-'));
try {
  const frame = new Uint8Array(200).fill(7);
  let s = new Old({ dir, historyLimit: 1_000_000 });
  for (let i = 0; i < messages;) {
    s.beginBatch();
    for (let k = 0; k < 1000 && i < messages; k++, i++) {
      const room = `room-${i % rooms}`;
      s.append(room, { seq: s.room(room).seq + 1, from: 'u', ts: Date.now(), cid: null, frame });
    }
    s.commit();
    s.maintain?.();
  }
  const from = s.schemaVersion;
  s.close();
  const mib = (statSync(path.join(dir, 'shardchat.db')).size / 1048576).toFixed(1);
  const t0 = performance.now();
  s = new New({ dir });
  const first = performance.now() - t0;
  const latest = s.latest('room-7', 3, 1 << 20).map((m) => m.seq).join(',');
  const info = `schema ${from} -> ${s.schemaVersion}; room-7 seq ${s.room('room-7').seq}, latest ${latest}`;
  s.close();
  const t1 = performance.now();
  s = new New({ dir });
  const second = performance.now() - t1;
  s.close();
  console.log(`${messages} messages in ${rooms} rooms (${mib} MiB): first open ${first.toFixed(0)} ms (${info}), next open ${second.toFixed(0)} ms`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
