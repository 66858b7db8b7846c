#!/usr/bin/env node
/**
 * Reconnect storm: N SDK clients (default 2,000, on `ws`, in this one process) in R rooms on one
 * shardchat CLI server; the server is killed with SIGKILL and started again on the same port at
 * once. Measures, from the kill: each client's first reconnect attempt, and when it is back
 * (connected and every room rejoined), as 100 ms histograms. Passes when no first attempt comes
 * within MIN_FIRST_MS, no 100 ms window holds more than a quarter of the first attempts, every
 * client is back within 30 s, and the restarted server answers /healthz and a probe's publishes
 * throughout. Bounded: it stops by itself after at most ~45 s. Exit code 0 = pass.
 *
 *   npm run bench:storm                      # 2,000 clients, 100 rooms
 *   node native-bench/storm/run.mjs --clients 200 --rooms 10   # a quick smoke run
 *   ... --started-info    # show, do not judge, the "as started" window (used by test/client.storm.test.ts)
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { ShardchatClient } from '../../dist/engine/client/index.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const CLIENTS = arg('clients', 2000);
const ROOMS = arg('rooms', 100);
const MIN_FIRST_MS = 300;
const BACK_WITHIN_MS = 30_000;

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

function startServer(port) {
  const child = spawn(process.execPath, [join(root, 'dist/engine/cli.js'), '--host', '127.0.0.1', '--port', String(port),
    '--shards', '1', '--log-level', 'warn', '--web', 'false', '--store', 'memory'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  return { child, exited };
}

function healthz(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/healthz', timeout: 500 }, (res) => { res.resume(); resolve(res.statusCode === 200); });
    req.on('error', () => resolve(false));
    req.on('timeout', () => { req.destroy(); resolve(false); });
  });
}

async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function histogram(times, from, to) {
  const buckets = new Map();
  for (const t of times) {
    const b = Math.floor(t / 100) * 100;
    buckets.set(b, (buckets.get(b) ?? 0) + 1);
  }
  const lines = [];
  const keys = [...buckets.keys()].sort((a, b) => a - b).filter((k) => k >= from && k <= to);
  const max = Math.max(1, ...buckets.values());
  for (const k of keys) {
    const n = buckets.get(k);
    lines.push(`${String(k).padStart(6)}-${String(k + 99).padEnd(6)} ms ${String(n).padStart(5)} ${'#'.repeat(Math.ceil((n / max) * 50))}`);
  }
  return { lines, max: Math.max(0, ...buckets.values()) };
}

const port = await freePort();
let server = startServer(port);
await until(() => healthz(port), 15_000, 'the server to listen');
const url = `ws://127.0.0.1:${port}/ws`;
const clients = [];
for (let i = 0; i < CLIENTS; i++) {
  const c = new ShardchatClient({ url, user: `u${i}`, WebSocket });
  clients.push({ c, planned: -1, first: -1, back: -1, dropped: false });
  c.join(`room-${i % ROOMS}`).catch(() => undefined);
  // Connect in steps of 200 so that the start is not itself a storm.
  if (i % 200 === 199) await until(() => clients.slice(i - 199).every((x, j) => x.c.roomState(`room-${(i - 199 + j) % ROOMS}`) === 'joined'), 20_000, 'clients joined');
}
await until(() => clients.every((x, i) => x.c.roomState(`room-${i % ROOMS}`) === 'joined'), 30_000, 'every client joined');
console.log(`${CLIENTS} clients in ${ROOMS} rooms on 127.0.0.1:${port}; SIGKILL and restart`);

let killedAt = 0;
for (const [i, x] of clients.entries()) {
  x.c.on('state', (e) => {
    if (!killedAt) return;
    if (e.state === 'disconnected') x.dropped = true;
    if (e.state === 'connecting' && x.dropped && x.first < 0) x.first = Date.now() - killedAt;
  });
  x.c.on('retry', (e) => { if (killedAt && x.planned < 0) x.planned = e.at - killedAt; });
  x.c.on('room', (e) => {
    if (killedAt && x.dropped && x.back < 0 && e.state === 'joined' && e.room === `room-${i % ROOMS}` && x.c.state === 'connected') x.back = Date.now() - killedAt;
  });
}
killedAt = Date.now();
server.child.kill('SIGKILL');
await server.exited;
server = startServer(port);
await until(() => healthz(port), 15_000, 'the restarted server to listen');
const upAfter = Date.now() - killedAt;

// A probe on its own connection publishes every 200 ms and must get its acks through the storm.
const probe = new ShardchatClient({ url, user: 'probe', WebSocket });
await probe.join('probe-room');
let acks = 0, probeErrors = 0, healthFails = 0;
const probeTimer = setInterval(() => { probe.publish('probe-room', Date.now()).then(() => acks++, () => probeErrors++); }, 200);
const healthTimer = setInterval(() => { healthz(port).then((ok) => { if (!ok) healthFails++; }); }, 250);
let ok = true;
try {
  await until(() => clients.every((x) => x.back >= 0), BACK_WITHIN_MS + 2000, 'every client back');
} catch (e) {
  ok = false;
  console.log(String(e));
}
clearInterval(probeTimer); clearInterval(healthTimer);
// One more after the storm, so that a storm shorter than the probe's period still shows one ack.
await probe.publish('probe-room', Date.now()).then(() => acks++, () => probeErrors++);

const firsts = clients.map((x) => x.first).filter((t) => t >= 0);
const planned = clients.map((x) => x.planned).filter((t) => t >= 0);
const backs = clients.map((x) => x.back).filter((t) => t >= 0);
const h1 = histogram(firsts, 0, 60_000);
const h0 = histogram(planned, 0, 60_000);
console.log(`server listening again ${upAfter} ms after the kill`);
console.log(`first reconnect attempts as the SDK scheduled them (${planned.length}), ms after the kill:`);
console.log(h0.lines.join('\n'));
// When this one process runs 2,000 clients on a busy machine its event loop fires timers late and
// in clumps: the actual times show the generator's lag on top of the SDK's spread.
console.log(`first reconnect attempts as they started (${firsts.length}), ms after the kill:`);
console.log(h1.lines.join('\n'));
const h2 = histogram(backs, 0, 60_000);
console.log(`back (connected and rejoined) (${backs.length}), ms after the kill:`);
console.log(h2.lines.join('\n'));
const minFirst = Math.round(Math.min(...firsts, ...planned));
const maxBack = Math.max(...backs);
console.log(`earliest first attempt ${minFirst} ms; busiest 100 ms window: scheduled ${h0.max} (${((h0.max / CLIENTS) * 100).toFixed(1)}%), started ${h1.max} (${((h1.max / CLIENTS) * 100).toFixed(1)}%); last back ${maxBack} ms; probe acks ${acks}, probe errors ${probeErrors}, healthz failures ${healthFails}`);
const checks = [
  [minFirst >= MIN_FIRST_MS, `no first attempt within ${MIN_FIRST_MS} ms`],
  [h0.max <= CLIENTS / 4, 'no 100 ms window with more than a quarter of the first attempts (as scheduled)'],
  [h1.max <= CLIENTS / 4, 'no 100 ms window with more than a quarter of the first attempts (as started; loaded-generator lag counts here)'],
  [backs.length === CLIENTS && maxBack <= BACK_WITHIN_MS, `all ${CLIENTS} back within ${BACK_WITHIN_MS} ms`],
  [probeErrors === 0 && acks > 0 && healthFails === 0, 'the server served throughout (probe acks, /healthz)'],
];
// --started-info: the "as started" window is shown, not judged. It measures this one process's
// event-loop lag with 2,000 clients in it as much as the SDK, so a test that runs beside other
// test files (npm test) judges what the SDK decides: the scheduled attempts.
const startedInfo = process.argv.includes('--started-info');
for (const [pass, what] of checks) {
  const info = startedInfo && what.includes('(as started');
  console.log(`${info ? 'INFO' : pass ? 'PASS' : 'FAIL'} ${what}${info && !pass ? ' (not met: generator lag)' : ''}`);
  if (!info) ok &&= pass;
}
for (const x of clients) x.c.close();
probe.close();
server.child.kill('SIGTERM');
await server.exited;
process.exitCode = ok ? 0 : 1;
