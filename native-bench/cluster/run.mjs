#!/usr/bin/env node
/**
 * Cluster benchmark (issue 12): shardchat with and without Redis, and across nodes, in one run.
 *
 *   npm run build && node native-bench/cluster/run.mjs [--scenarios fanout-10x100,chat-1to1]
 *        [--arms shardchat,shardchat-redis,shardchat-redis-x2] [--runs 3] [--warmup 1] [--duration 3]
 *
 * Arms (every server started fresh for each run, stopped with SIGTERM by its PID afterwards):
 *   shardchat           1 node, --shards 1, --store memory (the single-node baseline)
 *   shardchat-redis     1 node, --shards 1, --redis (its own redis-server, no persistence)
 *   shardchat-redis-x2  2 nodes, --shards 1 each, one redis-server; every room's members split
 *                       over the two (odd members on node B: loadgen --port2), so every message
 *                       crosses Redis to reach half its members
 * Scenarios: the load suite's fanout-10x100 (10 rooms x 100 members, 10 senders each) and
 * chat-1to1 (500 rooms x 2 members, both send), 128 B bodies, closed loop, window 1.
 * The C generator (native-bench/load/loadgen) checks order and completeness as in the suite.
 * Redis CPU per published message: redis-server's main-thread CPU (INFO cpu) from the end of the
 * generator's setup (all members joined) to the end of its run, divided by the acks of that run
 * (every pub's script, PUBLISH fan-out to the nodes, plus the nodes' heartbeats and probes).
 * Nothing is pinned: Redis, the nodes and the generator share the machine's cores (2 here), so
 * the figures are ratios within one run, not capacities. Results: a table on stdout and JSON in
 * native-bench/results/local/cluster-<time>.json (git-ignored).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const cliJs = join(root, 'dist', 'engine', 'cli.js');
const loadgen = join(root, 'native-bench', 'load', 'build', 'loadgen');

const argv = process.argv.slice(2);
const opt = (name, def) => { const i = argv.indexOf(name); return i < 0 ? def : argv[i + 1]; };
const list = (name, def) => (opt(name, null) ?? def).split(',').map((s) => s.trim()).filter(Boolean);
const runs = Number(opt('--runs', '3'));
const warmup = Number(opt('--warmup', '1'));
const duration = Number(opt('--duration', '3'));
const SCENARIOS = {
  'fanout-10x100': { rooms: 10, members: 100, senders: 10, size: 128, window: 1 },
  'chat-1to1': { rooms: 500, members: 2, senders: 2, size: 128, window: 1 },
};
const ARMS = ['shardchat', 'shardchat-redis', 'shardchat-redis-x2'];
const scenarios = list('--scenarios', Object.keys(SCENARIOS).join(','));
const arms = list('--arms', ARMS.join(','));
for (const s of scenarios) if (!(s in SCENARIOS)) fail(`unknown scenario ${s}`);
for (const a of arms) if (!ARMS.includes(a)) fail(`unknown arm ${a} (known: ${ARMS.join(', ')})`);
if (!existsSync(cliJs)) fail('dist/engine/cli.js is missing: run "npm run build" first');

function fail(msg) { process.stderr.write(`cluster/run.mjs: ${msg}\n`); process.exit(2); }
const log = (s) => process.stderr.write(`${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

{
  const r = spawnSync('sh', [join(root, 'native-bench', 'load', 'build.sh')], { stdio: 'inherit' });
  if (r.status !== 0) fail('building the load generator failed');
}
const redisBin = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
if (!redisBin) fail('redis-server is missing: install the Debian package redis-server');

function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

/** A child process whose output is kept (last 200 lines) and whose exit is awaited. */
function child(cmd, args) {
  const c = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const keep = (b) => { for (const l of b.toString().split('\n')) if (l.trim()) { lines.push(l); if (lines.length > 200) lines.shift(); } };
  c.stdout.on('data', keep);
  c.stderr.on('data', keep);
  const exited = new Promise((r) => c.once('exit', (code, signal) => r({ code, signal })));
  return { c, pid: c.pid, lines, exited };
}

async function stop(p, ms = 15000) {
  if (p.c.exitCode !== null || p.c.signalCode !== null) return p.exited;
  process.kill(p.pid, 'SIGTERM');
  let timer;
  const r = await Promise.race([p.exited, new Promise((res) => { timer = setTimeout(() => res(null), ms); })]);
  clearTimeout(timer);
  if (r !== null) return r;
  process.kill(p.pid, 'SIGKILL');
  return { ...(await p.exited), killed: true };
}

async function waitFor(cond, what, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await cond()) return; await sleep(50); }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}

/** One inline Redis command over a fresh socket; resolves with the reply's text. */
function redisCmd(port, cmd) {
  return new Promise((res, rej) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); rej(new Error(`redis ${cmd}: no reply`)); }, 3000);
    s.on('connect', () => s.write(`${cmd}\r\n`));
    s.on('data', (d) => {
      buf += d.toString('utf8');
      const m = /^\$(\d+)\r\n/.exec(buf);
      if ((m && Buffer.byteLength(buf) >= m[0].length + Number(m[1]) + 2) || (!m && buf.endsWith('\r\n') && !buf.startsWith('$'))) {
        clearTimeout(timer);
        s.destroy();
        res(buf);
      }
    });
    s.on('error', (e) => { clearTimeout(timer); rej(e); });
  });
}

async function redisCpuS(port) {
  const info = await redisCmd(port, 'INFO cpu');
  const f = (k) => Number(new RegExp(`${k}:([\\d.]+)`).exec(info)?.[1] ?? NaN);
  return f('used_cpu_user_main_thread') + f('used_cpu_sys_main_thread');
}

async function startRedis(dir) {
  const port = await freePort();
  const p = child(redisBin, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--logfile', '']);
  await waitFor(() => p.lines.some((l) => /Ready to accept connections/.test(l)), 'redis-server ready', 10000);
  return { ...p, port };
}

async function startNode(dir, id, redisPort) {
  const port = await freePort();
  const args = ['--max-semi-space-size=1', cliJs, '--port', String(port), '--host', '127.0.0.1', '--shards', '1',
    '--rate-per-sec', '1000000000', '--rate-burst', '1000000000', '--upgrade-rate-per-sec', '0', '--room-create-rate', '1000000',
    '--room-create-burst', '1000000', '--log-level', 'warn', '--max-connections', '50000', '--web', 'false', '--data-dir', join(dir, id),
    ...(redisPort ? ['--redis', `redis://127.0.0.1:${redisPort}`, '--node-id', id] : ['--store', 'memory'])];
  const p = child(process.execPath, args);
  await waitFor(async () => {
    if (p.c.exitCode !== null) throw new Error(`node ${id} exited: ${p.lines.slice(-5).join(' | ')}`);
    return (await httpStatus(port, '/readyz')) === 200;
  }, `node ${id} /readyz 200`, 20000);
  return { ...p, port, id };
}

function httpStatus(port, path) {
  return new Promise((res) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    s.on('connect', () => s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    s.on('data', (d) => { buf += d; });
    s.on('close', () => res(Number(/^HTTP\/1\.1 (\d+)/.exec(buf)?.[1] ?? 0)));
    s.on('error', () => res(0));
  });
}

/** Runs the generator once; `onReady` is called when its connections are set up (joined), before any pub. */
function runGen(ports, sc, serverPid, onReady = () => undefined) {
  const a = ['--port', String(ports[0]), ...(ports[1] ? ['--port2', String(ports[1])] : []), '--host', '127.0.0.1', '--proto', 'shardchat',
    '--rooms', String(sc.rooms), '--members', String(sc.members), '--senders', String(sc.senders), '--size', String(sc.size),
    '--window', String(sc.window), '--warmup', String(warmup), '--duration', String(duration), '--drain', '10', '--server-pid', String(serverPid)];
  return new Promise((res) => {
    const g = spawn(loadgen, a, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    g.stdout.on('data', (x) => { out += x; });
    let ready = false;
    g.stderr.on('data', (x) => {
      err += x;
      if (!ready && /connections ready/.test(err)) { ready = true; onReady(); }
    });
    const timer = setTimeout(() => g.kill('SIGKILL'), (warmup + duration + 90) * 1000);
    g.once('exit', (code) => {
      clearTimeout(timer);
      let json = null;
      try { json = JSON.parse(out); } catch { /* reported below */ }
      res({ code, json, err: err.trim() });
    });
  });
}

/** One run of one arm: fresh servers, one generator run, servers stopped. */
async function runArm(arm, sc) {
  const dir = mkdtempSync(join(os.tmpdir(), 'shardchat-cluster-bench-'));
  const procs = [];
  try {
    let redis = null;
    if (arm !== 'shardchat') { redis = await startRedis(dir); procs.push(redis); }
    const nodes = [];
    for (const id of arm === 'shardchat-redis-x2' ? ['nA', 'nB'] : ['nA']) {
      const n = await startNode(dir, id, redis?.port);
      procs.push(n);
      nodes.push(n);
    }
    // Redis CPU from the end of setup (every member joined) to the end of the run: the pubs' share, not the joins'.
    let cpu0 = null;
    const g = await runGen(nodes.map((n) => n.port), sc, nodes[0].pid, () => { if (redis) cpu0 = redisCpuS(redis.port); });
    cpu0 = cpu0 === null ? null : await cpu0;
    const cpu1 = redis ? await redisCpuS(redis.port) : null;
    if (!g.json) throw new Error(`loadgen failed (exit ${g.code}): ${g.err.split('\n').slice(-3).join(' | ')}`);
    const j = g.json;
    const t = j.totals;
    const problems = [];
    if (t.missing !== 0) problems.push(`missing ${t.missing}`);
    if (t.gaps || t.repeats || t.wrong_room || t.seq_gaps) problems.push(`order: gaps ${t.gaps} repeats ${t.repeats} wrong room ${t.wrong_room} seq gaps ${t.seq_gaps}`);
    for (const [k, v] of Object.entries(t.errors)) if (v) problems.push(`err ${k} ${v}`);
    const errLines = g.err.split('\n').filter((l) => /got err/.test(l));
    if (errLines.length) problems.push(`loadgen saw: ${[...new Set(errLines.map((l) => l.replace(/conn \d+ /, '')))].slice(0, 3).join(' | ')}`);
    return {
      deliveredPerSec: j.delivered_per_s,
      p50ms: j.latency_us.p50 / 1000,
      p99ms: j.latency_us.p99 / 1000,
      nodeACpuMsPer1k: j.window_delivered > 0 ? (j.server.cpu_s / (j.window_delivered / 1000)) * 1000 : null,
      acks: t.acks,
      redisCpuUsPerMsg: redis && t.acks > 0 ? ((cpu1 - cpu0) * 1e6) / t.acks : null,
      generatorCpuPct: j.generator.cpu_pct,
      otherCpuPct: j.machine?.unattributed_pct_of_core ?? null,
      problems,
    };
  } finally {
    for (const p of procs.reverse()) await stop(p);
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs) => { const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b); if (!v.length) return null; const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2; };
const f = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d));

const results = {};
let bad = false;
for (const scName of scenarios) {
  const sc = SCENARIOS[scName];
  results[scName] = Object.fromEntries(arms.map((a) => [a, []]));
  for (let r = 0; r < runs; r++) {
    const order = r % 2 ? [...arms].reverse() : arms;
    for (const arm of order) {
      try {
        const d = await runArm(arm, sc);
        results[scName][arm].push(d);
        if (d.problems.length) { bad = true; log(`  ${scName}/${arm} run ${r + 1}: PROBLEMS: ${d.problems.join('; ')}`); }
        log(`${scName}/${arm} run ${r + 1}/${runs}: ${Math.round(d.deliveredPerSec)} delivered/s, p99 ${f(d.p99ms, 2)} ms, redis ${f(d.redisCpuUsPerMsg)} us/msg`);
      } catch (e) {
        bad = true;
        log(`${scName}/${arm} run ${r + 1}: FAILED: ${e.message}`);
      }
    }
  }
}

const lines = [`cluster benchmark: ${runs} runs x (${warmup} s warmup + ${duration} s window), not pinned, ${os.availableParallelism?.() ?? os.cpus().length} cores shared by Redis, the nodes and the generator`, ''];
lines.push('| scenario | arm | delivered/s (median) | vs shardchat | p50 ms | p99 ms | node A CPU ms / 1k deliveries | Redis CPU us / published msg | runs |');
lines.push('|---|---|---|---|---|---|---|---|---|');
for (const scName of scenarios) {
  const base = median(results[scName].shardchat?.map((d) => d.deliveredPerSec) ?? []);
  for (const arm of arms) {
    const ds = results[scName][arm];
    const dps = median(ds.map((d) => d.deliveredPerSec));
    lines.push(`| ${scName} | ${arm} | ${dps === null ? 'n/a' : Math.round(dps)} | ${base && dps ? f(dps / base, 2) : 'n/a'} | ${f(median(ds.map((d) => d.p50ms)), 2)} | ${f(median(ds.map((d) => d.p99ms)), 2)} | ${f(median(ds.map((d) => d.nodeACpuMsPer1k)), 2)} | ${f(median(ds.map((d) => d.redisCpuUsPerMsg)))} | ${ds.length} |`);
  }
}
process.stdout.write(`${lines.join('\n')}\n`);
const outDir = join(root, 'native-bench', 'results', 'local');
mkdirSync(outDir, { recursive: true });
const file = join(outDir, `cluster-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ runs, warmup, duration, scenarios, arms, results }, null, 2));
log(`results: ${file}`);
process.exit(bad ? 1 : 0);
