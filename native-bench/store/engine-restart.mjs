#!/usr/bin/env node
// Engine restart cost with a durable store: fills a data directory with MESSAGES real `msg` frames
// (~128 B bodies) in ROOMS rooms through the store (1000 per commit), then starts the CLI on it
// (`--store sqlite --shards SHARDS`) and measures the time from spawn to the first `/readyz` 200
// and the process's RSS then, against the same start on an empty data dir and with
// `--store memory`. Finally one client joins a room and reads `hist` (the data is really there).
// Bounded: one fill, three starts, each with a 60 s limit; the CLI is stopped with SIGTERM.
//   npm run build && node native-bench/store/engine-restart.mjs [messages=1000000] [rooms=10000] [shards=1]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { performance } from 'node:perf_hooks';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encode } from '@msgpack/msgpack';
import WebSocket from 'ws';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const { SqliteStore } = await import(path.join(root, 'dist/workers/store/index.js'));
const cli = path.join(root, 'dist/engine/cli.js');
const messages = Number(process.argv[2] ?? 1_000_000);
const rooms = Number(process.argv[3] ?? 10_000);
const shards = String(process.argv[4] ?? 1);

const status = (port, p) => new Promise((resolve) => {
  const req = get({ host: '127.0.0.1', port, path: p, timeout: 1000 }, (res) => { res.resume(); resolve(res.statusCode); });
  req.on('error', () => resolve(0));
  req.on('timeout', () => { req.destroy(); resolve(0); });
});
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

async function start(args) {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--max-semi-space-size=1', cli, '--port', '0', '--host', '127.0.0.1', '--shards', shards, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  const deadline = Date.now() + 60_000;
  let port = 0;
  try {
    while (port === 0) {
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line) port = JSON.parse(line).port;
      else if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the cli did not listen: ${out.slice(-500)}`);
      else await new Promise((r) => setTimeout(r, 5));
    }
    while ((await status(port, '/readyz')) !== 200) {
      if (Date.now() > deadline) throw new Error('no /readyz 200 within 60 s');
      await new Promise((r) => setTimeout(r, 5));
    }
    const readyMs = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 500)); // let start-up garbage settle before reading RSS
    return { child, port, readyMs, rss: rssMiB(child.pid) };
  } catch (e) { child.kill('SIGKILL'); throw e; }
}
async function stop(child) {
  const done = new Promise((r) => child.on('close', r));
  child.kill('SIGTERM');
  await done;
}

async function histOnce(port, room) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?user=bench`);
  ws.binaryType = 'nodebuffer';
  const { decode } = await import('@msgpack/msgpack');
  const frames = [];
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  const wait = (pred) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no reply in 10 s')), 10_000);
    const on = (d) => { const f = decode(d); frames.push(f); if (pred(f)) { clearTimeout(timer); ws.off('message', on); resolve(f); } };
    ws.on('message', on);
  });
  ws.send(encode({ t: 'join', room, ref: 1 }));
  const joined = await wait((f) => f.ref === 1);
  const t0 = performance.now();
  ws.send(encode({ t: 'hist', room, limit: 100, before: 2, ref: 2 }));
  const h = await wait((f) => f.ref === 2);
  const ms = performance.now() - t0;
  ws.close();
  return { seq: joined.seq, oldest: h.msgs.length, ms };
}

const dir = mkdtempSync(path.join(tmpdir(), 'engine-restart-'));
const empty = mkdtempSync(path.join(tmpdir(), 'engine-restart-empty-'));
try {
  const t0 = Date.now();
  const store = new SqliteStore({ dir, historyLimit: 1_000_000_000 });
  for (let done = 0; done < messages;) {
    store.beginBatch();
    for (let k = 0; k < 1000 && done < messages; k++, done++) {
      const room = `room-${done % rooms}`;
      const seq = store.room(room).seq + 1;
      const ts = Date.now();
      const frame = encode({ t: 'msg', room, seq, from: `user-${done % 64}`, body: 'x'.repeat(120), ts });
      store.append(room, { seq, from: `user-${done % 64}`, ts, cid: null, frame });
    }
    store.commit();
  }
  store.close();
  const fillSecs = (Date.now() - t0) / 1000;
  console.log(`${messages} messages in ${rooms} rooms: filled in ${fillSecs.toFixed(1)} s, database ${(statSync(path.join(dir, 'shardchat.db')).size / 2 ** 20).toFixed(1)} MiB; --shards ${shards}`);
  for (const [label, args] of [['store memory', ['--store', 'memory']], ['store sqlite, empty dir', ['--data-dir', empty]], ['store sqlite, filled dir', ['--data-dir', dir]]]) {
    const s = await start(args);
    let extra = '';
    if (label.includes('filled')) {
      const h = await histOnce(s.port, 'room-0');
      extra = `; join room-0: seq ${h.seq}, hist before 2: ${h.oldest} message(s) in ${h.ms.toFixed(1)} ms; RSS after ${rssMiB(s.child.pid).toFixed(1)} MiB`;
    }
    console.log(`${label}: spawn -> /readyz 200 in ${s.readyMs.toFixed(0)} ms, RSS ${s.rss.toFixed(1)} MiB${extra}`);
    await stop(s.child);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
  rmSync(empty, { recursive: true, force: true });
}
