#!/usr/bin/env node
/**
 * Shows that steady-state publishing allocates no buffers per message on the main thread: the
 * engine runs in this process (one shard), a load generator in a child process publishes N
 * messages into one room of M members; this process samples, after a forced GC, the main
 * thread's ArrayBuffer bytes (process.memoryUsage().arrayBuffers: every Buffer/ArrayBuffer
 * backing store Node allocated) and heap, before and after, and the shard pool's counters.
 * A per-message buffer would show as N x its size in arrayBuffers or as pool growth.
 *
 *   node --expose-gc native-bench/alloc/main-thread.mjs [--messages 200000] [--members 10]
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createEngine } from '../../dist/engine/index.js';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const MESSAGES = arg('messages', 200_000);
const MEMBERS = arg('members', 10);

if (process.argv[2] === '--child') {
  // The load: MEMBERS clients join one room; client 0 publishes, keeping a window of 64 in flight.
  const { default: WebSocket } = await import('ws');
  const { encode, decode } = await import('@msgpack/msgpack');
  const port = Number(process.argv[3]);
  const members = Number(process.argv[4]);
  const clients = await Promise.all(Array.from({ length: members }, (_, i) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?user=u${i}`);
    ws.binaryType = 'nodebuffer';
    ws.once('message', () => resolve(ws)); // hello
  })));
  await Promise.all(clients.map((ws) => new Promise((resolve) => {
    ws.once('message', resolve);
    ws.send(encode({ t: 'join', room: 'alloc' }));
  })));
  const body = 'x'.repeat(100);
  let sent = 0; let acked = 0;
  const pub = clients[0];
  const phase = (count) => new Promise((resolve) => {
    const target = acked + count;
    const pump = () => { while (sent < target && sent - acked < 64) { pub.send(encode({ t: 'pub', room: 'alloc', body })); sent++; } };
    pub.on('message', function onMsg(d) {
      if (decode(d).t === 'ack' && ++acked === target) { pub.off('message', onMsg); resolve(); } else pump();
    });
    pump();
  });
  process.on('message', async (m) => {
    if (m.phase) { await phase(m.phase); process.send({ done: m.phase }); }
    if (m.exit) { for (const c of clients) c.close(); process.disconnect(); }
  });
  process.send({ ready: true });
} else {
  if (typeof globalThis.gc !== 'function') { console.error('run with node --expose-gc'); process.exit(2); }
  const engine = await createEngine({ port: 0, host: '127.0.0.1', shards: 1, logLevel: 'silent', ratePerSec: 1e9, rateBurst: 1e9, historyLimit: 1000 });
  await engine.listen();
  const child = fork(fileURLToPath(import.meta.url), ['--child', String(engine.port), String(MEMBERS)]);
  const next = () => new Promise((resolve) => child.once('message', resolve));
  await next();
  const sample = () => { globalThis.gc(); globalThis.gc(); const m = process.memoryUsage(); return { arrayBuffers: m.arrayBuffers, heapUsed: m.heapUsed }; };
  // Warm up (history fills to its limit, JIT settles), then measure a steady phase.
  child.send({ phase: 5000 }); await next();
  await new Promise((r) => setTimeout(r, 600)); // shard stats publish every 500 ms
  const before = sample();
  const poolBefore = engine.stats().shards[0];
  const t0 = process.hrtime.bigint();
  child.send({ phase: MESSAGES }); await next();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await new Promise((r) => setTimeout(r, 600));
  const after = sample();
  const poolAfter = engine.stats().shards[0];
  child.send({ exit: true });
  await new Promise((r) => child.once('exit', r));
  await engine.close();
  const per = (k) => ((after[k] - before[k]) / MESSAGES).toFixed(3);
  console.log(JSON.stringify({
    messages: MESSAGES, members: MEMBERS, deliveries: MESSAGES * MEMBERS, seconds: secs.toFixed(2),
    mainThread: { before, after, arrayBufferBytesPerMessage: per('arrayBuffers'), heapBytesPerMessage: per('heapUsed') },
    shardPool: { inUseBefore: poolBefore.poolInUse, inUseAfter: poolAfter.poolInUse, historyMessages: poolAfter.historyMessages },
  }, null, 2));
}
