#!/usr/bin/env node
// Restart cost of the SQLite store: fills a data directory with MESSAGES messages in ROOMS rooms
// (128 B frames, 1000 per commit), then, in a fresh process, measures the time to open the store
// and the RSS after it, and the first reads of a few rooms (room() + latest(50)). Opening must not
// load history: RSS after open should not grow with the message count. Bounded by the count.
//   npm run build && node native-bench/store/restart.mjs [messages=1000000] [rooms=10000]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(import.meta.url);
const storeModule = path.resolve(path.dirname(here), '../../dist/workers/store/index.js');

if (process.argv[2] === '--measure') {
  const dir = process.argv[3];
  const rooms = Number(process.argv[4]);
  const rss0 = process.memoryUsage().rss;
  const t0 = process.hrtime.bigint();
  const { SqliteStore } = await import(storeModule);
  const t1 = process.hrtime.bigint();
  const store = new SqliteStore({ dir, historyLimit: 1_000_000_000 });
  const t2 = process.hrtime.bigint();
  const rssOpen = process.memoryUsage().rss;
  let got = 0;
  for (let i = 0; i < 100; i++) got += store.latest(`room-${(i * 97) % rooms}`, 50, 1 << 20).length;
  const t3 = process.hrtime.bigint();
  const rssReads = process.memoryUsage().rss;
  store.close();
  console.log(JSON.stringify({
    importMs: Number(t1 - t0) / 1e6, openMs: Number(t2 - t1) / 1e6, reads100RoomsMs: Number(t3 - t2) / 1e6, messagesRead: got,
    rssBeforeMiB: rss0 / 2 ** 20, rssAfterOpenMiB: rssOpen / 2 ** 20, rssAfterReadsMiB: rssReads / 2 ** 20,
  }));
  process.exit(0);
}

const messages = Number(process.argv[2] ?? 1_000_000);
const rooms = Number(process.argv[3] ?? 10_000);
const { SqliteStore } = await import(storeModule);
const dir = mkdtempSync(path.join(tmpdir(), 'store-restart-'));
try {
  const t0 = Date.now();
  const store = new SqliteStore({ dir, historyLimit: 1_000_000_000 });
  const frame = new Uint8Array(128).fill(7);
  for (let done = 0; done < messages;) {
    store.beginBatch();
    for (let k = 0; k < 1000 && done < messages; k++, done++) {
      const room = `room-${done % rooms}`;
      store.append(room, { seq: store.room(room).seq + 1, from: `user-${done % 64}`, ts: Date.now(), cid: null, frame });
    }
    store.commit();
  }
  store.close();
  const fillSecs = (Date.now() - t0) / 1000;
  const bytes = statSync(path.join(dir, 'shardchat.db')).size;
  const r = spawnSync(process.execPath, [here, '--measure', dir, String(rooms)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  const m = JSON.parse(r.stdout);
  console.log(`${messages} messages in ${rooms} rooms: filled in ${fillSecs.toFixed(1)} s, database ${(bytes / 2 ** 20).toFixed(1)} MiB`);
  console.log(`open ${m.openMs.toFixed(1)} ms (import ${m.importMs.toFixed(1)} ms); RSS ${m.rssBeforeMiB.toFixed(1)} MiB before, ${m.rssAfterOpenMiB.toFixed(1)} MiB after open, ${m.rssAfterReadsMiB.toFixed(1)} MiB after latest(50) in 100 rooms (${m.reads100RoomsMs.toFixed(1)} ms, ${m.messagesRead} messages)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
