#!/usr/bin/env node
// What the slow-consumer check costs the main thread, at as many connections as one process can
// hold here (ulimit -n 20000). Run after `npm run build`:
//   node native-bench/sweep-cost.mjs [connections=19900] [rooms=100]
// The engine runs in this process; a child process opens the connections (raw sockets, each
// joins room r<i % rooms>). Prints, per check, the old full sweep (every connection, every
// 100 ms) and the guard's sweep when idle and when every room was published to.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { encode } from '@msgpack/msgpack';

const [mode, a1, a2, a3] = process.argv.slice(2);

if (mode === 'client') {
  const port = Number(a1); const n = Number(a2); const rooms = Number(a3);
  const key = 'dGhlIHNhbXBsZSBub25jZQ==';
  let upgraded = 0; let i = 0;
  const sockets = [];
  const frame = (room) => {
    const p = encode({ t: 'join', room });
    const out = Buffer.alloc(6 + p.length); // masked, payload < 126 bytes, zero mask
    out[0] = 0x82; out[1] = 0x80 | p.length;
    out.set(p, 6);
    return out;
  };
  const openOne = () => {
    const k = i++;
    const s = net.connect(port, '127.0.0.1');
    sockets.push(s);
    let done = false;
    s.on('data', () => {
      if (done) return;
      done = true; upgraded++;
      s.write(frame(`r${k % rooms}`));
      if (upgraded === n) process.stdout.write('ready\n');
      else if (i < n) openOne();
    });
    s.on('error', (e) => { process.stderr.write(`client socket ${k}: ${e.message}\n`); process.exit(1); });
    s.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  };
  for (let j = 0; j < Math.min(256, n); j++) openOne();
  process.stdin.on('data', () => { for (const s of sockets) s.destroy(); process.exit(0); });
  setTimeout(() => process.exit(2), 120_000).unref();
} else {
  const n = Number(mode ?? 19_900); const rooms = Number(a1 ?? 100);
  const { createEngine } = await import('../dist/engine/index.js');
  const engine = await createEngine({ port: 0, host: '127.0.0.1', shards: 1, logLevel: 'silent', maxConnections: n + 10, idleTimeoutSec: 0, metrics: false, upgradeRatePerSec: 0 });
  await engine.listen();
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'client', String(engine.port), String(n), String(rooms)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const killer = setTimeout(() => { child.kill(); process.exit(3); }, 180_000);
  await new Promise((resolve) => child.stdout.once('data', resolve));
  const t0 = Date.now();
  while (engine.stats().connRooms < n && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 50));
  const conns = engine.conns; const guard = engine.guard; const max = engine.options.maxBufferBytes;
  const time = (f, reps = 31) => {
    const xs = [];
    for (let r = 0; r < reps; r++) { const s = process.hrtime.bigint(); f(); xs.push(Number(process.hrtime.bigint() - s) / 1e6); }
    xs.sort((x, y) => x - y);
    return xs[reps >> 1];
  };
  let over = 0;
  const full = time(() => { for (const ws of conns.values()) if (ws.getBufferedAmount() > max) over++; });
  const idle = time(() => guard.timerSweep());
  const allRooms = time(() => { for (let r = 0; r < rooms; r++) guard.beforePublish(`r${r}`, 100); guard.timerSweep(); });
  const st = engine.stats();
  const memberships = guard.size().memberships;
  const row = (name, ms) => `${name.padEnd(58)} ${ms.toFixed(3)} ms  (${((ms * 1e6) / n).toFixed(1)} ns/conn; at 50,000: ${((ms * 50_000) / n).toFixed(2)} ms, 10 a second = ${((ms * 50_000 * 10) / n / 10).toFixed(2)}% of a core)`;
  console.log(`connections ${st.connections}, memberships ${memberships}, rooms ${rooms}, over limit ${over}`);
  console.log(row('old: full sweep of every connection (each 100 ms)', full));
  console.log(row('new: timer sweep, nothing published since the last', idle));
  console.log(row('new: sweep after a publish to every room (all members)', allRooms));
  child.stdin.write('x');
  await new Promise((resolve) => child.once('exit', resolve));
  clearTimeout(killer);
  await engine.close();
}
