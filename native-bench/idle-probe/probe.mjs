#!/usr/bin/env node
/**
 * Issue 15 idle probe: where an idle connection's bytes are. Runs an engine in this process
 * (--shards 1, memory store, 127.0.0.1, the bench's limits), measures the main thread's live heap
 * (after gc) and the shard's heapUsed (/metrics) with no connections, then holds N joined idle
 * connections from the C load generator (100 per room) and measures again. Bounded: the generator
 * holds for --hold seconds and is killed by PID after a timeout; the engine is closed.
 *   node --expose-gc --max-semi-space-size=1 native-bench/idle-probe/probe.mjs [--conns 10000] [--hold 8] [--dist DIR] [--snapshot]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? process.argv[i + 1] : d; };
const conns = Number(arg('--conns', '10000'));
const hold = Number(arg('--hold', '8'));
const dist = resolve(arg('--dist', join(here, '..', '..', 'dist')));
const { createEngine } = await import(join(dist, 'engine', 'index.js'));
if (typeof globalThis.gc !== 'function') throw new Error('run with --expose-gc');

const engine = await createEngine({ port: 0, host: '127.0.0.1', shards: 1, store: 'memory', logLevel: 'warn', ratePerSec: 1e9, rateBurst: 1e9, upgradeRatePerSec: 0, maxConnections: 50000 });
const port = await engine.listen();
const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
async function shardHeap() {
  const t = await (await globalThis.fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = /shardchat_worker_heap_used_bytes\{[^}]*\} (\d+)/.exec(t);
  return m ? Number(m[1]) : NaN;
}
async function sample() {
  for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); }
  const h = v8.getHeapStatistics();
  // The shard reports heapUsed from its loop (about every second): wait for a fresh value.
  await new Promise((r) => setTimeout(r, 2500));
  return { mainHeap: h.used_heap_size, mainExternal: process.memoryUsage().external, shardHeap: await shardHeap(), rssKb: rssKb() };
}
const before = await sample();
const loadgen = join(here, '..', 'load', 'build', 'loadgen');
const rooms = Math.ceil(conns / 100);
const child = spawn(loadgen, ['--port', String(port), '--host', '127.0.0.1', '--proto', 'shardchat', '--rooms', String(rooms), '--members', '100', '--senders', '1',
  '--size', '128', '--window', '1', '--threads', '1', '--warmup', '0', '--duration', '1', '--drain', '1', '--idle-hold', String(hold), '--connect-inflight', '256', '--setup-timeout', '60'], { stdio: ['ignore', 'pipe', 'inherit'] });
const killer = setTimeout(() => child.kill('SIGKILL'), (hold + 90) * 1000);
let during = null;
// Sample once the engine holds every connection (it counts them), during the hold.
const t0 = Date.now();
while (Date.now() - t0 < 80_000) {
  await new Promise((r) => setTimeout(r, 250));
  if (engine.stats().connections >= conns) {
    during = await sample();
    if (process.argv.includes('--snapshot')) console.log('snapshot', v8.writeHeapSnapshot(join(process.env.TMPDIR ?? '/tmp', `idle-probe-${process.pid}.heapsnapshot`)));
    break;
  }
}
await new Promise((r) => child.on('exit', r));
clearTimeout(killer);
await engine.close();
if (during === null) { console.log('not every connection opened'); process.exit(1); }
const per = (k) => ((during[k] - before[k]) / conns).toFixed(0);
console.log(JSON.stringify({ dist, conns, before, during }));
console.log(`per connection: main heap ${per('mainHeap')} B, main external ${per('mainExternal')} B, shard heap ${per('shardHeap')} B, RSS ${((during.rssKb - before.rssKb) * 1024 / conns).toFixed(0)} B`);
