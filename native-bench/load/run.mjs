#!/usr/bin/env node
/**
 * shardchat load benchmarks (see native-bench/README.md, "Load benchmarks").
 *
 *   npm run bench:quick            # = npm run build && node native-bench/load/run.mjs --quick
 *   node native-bench/load/run.mjs [--quick] [--runs 3] [--duration 5] [--warmup 1.5] [--window 1]
 *        [--peers uws-plain,shardchat] [--threads 1] [--no-pin] [--wait-idle 4] [--cpu-prof] [--perf] [--out FILE]
 *
 * Scenario "fanout-10x100": 10 rooms x 100 members, 10 senders per room (members), every message
 * to the whole room including its sender, 128 B bodies, closed loop with a window of W messages
 * in flight per sender. For each peer: builds the C load generator (native-bench/load/build.sh),
 * starts the server as a child process on a free 127.0.0.1 port (pinned to core 0 with taskset
 * when available; the generator to core 1), waits until it accepts, runs the generator --runs
 * times (runs of the peers interleaved: A1 B1 A2 B2 ...), stops each server with SIGTERM by its
 * PID (shardchat must then exit 0 by itself), writes native-bench/results/quick-latest.json (or
 * latest.json without --quick) and prints a markdown table with the ratio shardchat / plain uWS.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const benchDir = resolve(here, '..');

// ---- arguments ---------------------------------------------------------------------------------

const argv = process.argv.slice(2);
function flag(name) { return argv.includes(name); }
function opt(name, def) {
  const i = argv.indexOf(name);
  if (i < 0) return def;
  const v = argv[i + 1];
  if (v === undefined || v.startsWith('--')) { fail(`${name} needs a value`); }
  return v;
}
function num(name, def, min, max) {
  const v = Number(opt(name, String(def)));
  if (!Number.isFinite(v) || v < min || v > max) fail(`${name} must be a number in ${min}..${max}`);
  return v;
}
function fail(msg) { process.stderr.write(`run.mjs: ${msg}\n`); process.exit(2); }

if (flag('--help') || flag('-h')) {
  process.stdout.write(`usage: node native-bench/load/run.mjs [--quick] [--runs N] [--duration S] [--warmup S] [--window W]
  [--peers uws-plain,shardchat] [--threads T] [--no-pin] [--wait-idle S] [--cpu-prof] [--perf] [--out FILE]
  --quick      3 runs x (1.5 s warmup + 5 s window) per peer, results/quick-latest.json (default: 5 x (3 + 10 s), results/latest.json)
  --runs       generator runs per peer (median reported)
  --duration   measured window of each run, seconds
  --warmup     seconds of load before the window opens
  --window     messages in flight per sender (closed loop; default 1: send the next when the last came back)
  --peers      comma list of: ${Object.keys(PEERS_DOC()).join(', ')} (default uws-plain,shardchat;
               uws-deferred is a diagnostic: plain uWS publishing once per event-loop turn)
  --threads    load generator threads (default 1: it has one core)
  --no-pin     do not pin with taskset
  --wait-idle  before each run, wait up to this many seconds (default 4) for the machine to be quiet
               (other work under 25% of a core over 0.5 s); 0: do not wait
  --cpu-prof   start shardchat with --cpu-prof (profiles in native-bench/results/tmp/prof/) and print its top self-time functions
  --perf       before the measured runs, one extra unmeasured run per peer with Linux perf attached to the server:
               syscall counts (deliveries per sendto) and a call-graph profile of its main thread (needs perf + root)
`);
  process.exit(0);
}
function PEERS_DOC() { return { 'uws-plain': 1, shardchat: 1, 'uws-deferred': 1 }; }

const quick = flag('--quick');
const runs = num('--runs', quick ? 3 : 5, 1, 50);
const duration = num('--duration', quick ? 5 : 10, 0.5, 600);
const warmup = num('--warmup', quick ? 1.5 : 3, 0, 120);
const window = num('--window', 1, 1, 1000);
const genThreads = num('--threads', 1, 1, 16);
const peerNames = opt('--peers', 'uws-plain,shardchat').split(',').map((s) => s.trim()).filter(Boolean);
const cpuProf = flag('--cpu-prof');
const perfMode = flag('--perf');
const waitIdle = num('--wait-idle', 4, 0, 600);
const outFile = resolve(opt('--out', join(benchDir, 'results', quick ? 'quick-latest.json' : 'latest.json')));
for (const p of peerNames) if (!(p in PEERS_DOC())) fail(`unknown peer ${p} (known: ${Object.keys(PEERS_DOC()).join(', ')})`);

const SCENARIO = { name: 'fanout-10x100', rooms: 10, members: 100, sendersPerRoom: 10, size: 128, window };

// ---- helpers -----------------------------------------------------------------------------------

const log = (s) => process.stderr.write(`${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

async function waitAccepting(port, child, timeoutMs) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`server exited early (code ${child.exitCode}, signal ${child.signalCode})`);
    const ok = await new Promise((r) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (ok) return Date.now() - t0;
    await sleep(50);
  }
  throw new Error(`server did not accept on port ${port} within ${timeoutMs} ms`);
}

function haveTaskset() {
  const r = spawnSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
  return r.status === 0;
}

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

// ---- setup -------------------------------------------------------------------------------------

const ncpu = os.availableParallelism?.() ?? os.cpus().length;
const pin = !flag('--no-pin') && ncpu >= 2 && haveTaskset();
const SERVER_CPU = 0;
const GEN_CPU = 1;
const pinNote = pin ? `server on core ${SERVER_CPU}, generator on core ${GEN_CPU} (taskset)`
  : flag('--no-pin') ? 'not pinned (--no-pin)'
    : ncpu < 2 ? 'not pinned (one core)' : 'not pinned (taskset not found: install util-linux)';
const withPin = (cpu, cmd, args) => (pin ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args]);

log(`building the load generator (${relative(root, join(here, 'build.sh'))})`);
{
  const r = spawnSync('sh', [join(here, 'build.sh')], { stdio: 'inherit' });
  if (r.status !== 0) fail('building the load generator failed (needs a C compiler: cc)');
}
const loadgen = join(here, 'build', 'loadgen');
const cliJs = join(root, 'dist', 'engine', 'cli.js');
if (peerNames.includes('shardchat') && !existsSync(cliJs)) fail(`${relative(root, cliJs)} is missing: run "npm run build" first`);
const profDir = join(benchDir, 'results', 'tmp', 'prof');
if (cpuProf) mkdirSync(profDir, { recursive: true });

const PEERS = {
  'uws-plain': {
    label: 'plain uWS pub/sub (1 thread)',
    proto: 'plain',
    args: (port) => [join(benchDir, 'peers', 'uws-plain.mjs'), '--port', String(port), '--host', '127.0.0.1'],
  },
  'uws-deferred': {
    label: 'uWS pub/sub, publish deferred to setImmediate (diagnostic)',
    proto: 'plain',
    args: (port) => [join(benchDir, 'peers', 'uws-deferred.mjs'), '--port', String(port), '--host', '127.0.0.1'],
  },
  shardchat: {
    label: 'shardchat --shards 1',
    proto: 'shardchat',
    args: (port) => [
      ...(cpuProf ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []),
      cliJs, '--port', String(port), '--host', '127.0.0.1', '--rate-per-sec', '1000000000', '--rate-burst', '1000000000',
      '--log-level', 'warn', '--shards', '1',
    ],
  },
};

/** Starts one server; collects its output lines (warnings become findings). */
async function startServer(name) {
  const peer = PEERS[name];
  const port = await freePort();
  const [cmd, args] = withPin(SERVER_CPU, process.execPath, peer.args(port));
  const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  const keep = (buf) => {
    for (const l of buf.toString().split('\n')) if (l.trim() && lines.length < 2000) lines.push(l);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  let ms;
  try {
    ms = await waitAccepting(port, child, 20000);
  } catch (e) {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
    throw new Error(`${name}: ${e.message}${lines.length ? `; its output: ${lines.slice(-5).join(' | ')}` : ''}`);
  }
  log(`${name}: pid ${child.pid}, port ${port}, accepting after ${ms} ms`);
  return { name, peer, port, child, pid: child.pid, lines, exited };
}

async function stopServer(s, timeoutMs) {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return { ...(await s.exited), ms: 0, killed: false, early: true };
  const t0 = Date.now();
  process.kill(s.pid, 'SIGTERM');
  let timer;
  const r = await Promise.race([s.exited, new Promise((res) => { timer = setTimeout(() => res(null), timeoutMs); })]);
  clearTimeout(timer);
  if (r !== null) return { ...r, ms: Date.now() - t0, killed: false };
  log(`${s.name}: did not exit ${timeoutMs} ms after SIGTERM; SIGKILL pid ${s.pid}`);
  process.kill(s.pid, 'SIGKILL');
  return { ...(await s.exited), ms: Date.now() - t0, killed: true };
}

function runGenerator(s) {
  const a = [
    '--port', String(s.port), '--host', '127.0.0.1', '--proto', s.peer.proto,
    '--rooms', String(SCENARIO.rooms), '--members', String(SCENARIO.members), '--senders', String(SCENARIO.sendersPerRoom),
    '--size', String(SCENARIO.size), '--window', String(window), '--threads', String(genThreads),
    '--warmup', String(warmup), '--duration', String(duration), '--drain', '10', '--server-pid', String(s.pid),
  ];
  const [cmd, args] = withPin(GEN_CPU, loadgen, a);
  const limitMs = (warmup + duration + 10 + 30 + 15) * 1000;
  return new Promise((res) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => { log(`loadgen pid ${child.pid} overran ${limitMs} ms: SIGKILL`); child.kill('SIGKILL'); }, limitMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      let json = null;
      try { json = JSON.parse(out); } catch { /* reported below */ }
      res({ code, json, stderr: err.trim() });
    });
  });
}

/** Derived numbers of one generator run. */
function derive(j) {
  const d = j.window_delivered;
  const main = j.server.threads.find((t) => t.main);
  const others = j.server.threads.filter((t) => !t.main).sort((a, b) => b.cpu_s - a.cpu_s);
  const per1k = (s) => (d > 0 ? (s / (d / 1000)) * 1000 : null); // ms of CPU per 1000 delivered
  const core = (c) => j.cores.find((x) => x.cpu === c)?.busy_pct ?? null;
  return {
    deliveredPerSec: j.delivered_per_s,
    sentPerSec: j.sent_per_s,
    p50ms: j.latency_us.p50 / 1000,
    p99ms: j.latency_us.p99 / 1000,
    serverCpuS: j.server.cpu_s,
    serverCpuMsPer1k: per1k(j.server.cpu_s),
    mainCpuMsPer1k: main ? per1k(main.cpu_s) : null,
    busiestOtherThreadCpuMsPer1k: others.length ? per1k(others[0].cpu_s) : null,
    serverCpuPct: (100 * j.server.cpu_s) / j.window_s,
    mainCpuPct: main ? (100 * main.cpu_s) / j.window_s : null,
    serverCoreBusyPct: pin ? core(SERVER_CPU) : null,
    genCpuPct: j.generator.cpu_pct,
    genCpuMsPer1k: per1k(j.generator.cpu_s),
    genCoreBusyPct: pin ? core(GEN_CPU) : null,
    otherCpuPct: j.machine?.unattributed_pct_of_core ?? null,
    deliveriesPerRead: j.deliveries_per_read,
    errors: j.totals.errors.overloaded + j.totals.errors.rate_limited + j.totals.errors.shutting_down + j.totals.errors.other,
    closes: Object.values(j.totals.closed_by_server).reduce((a, b) => a + b, 0),
    missing: j.totals.missing,
    gaps: j.totals.gaps + j.totals.repeats + j.totals.wrong_room + j.totals.seq_gaps,
  };
}

function findingsOf(name, j) {
  const f = [];
  const t = j.totals;
  if (!j.setup_ok) f.push(`${name}: only ${j.connections_ready}/1000 connections became ready`);
  for (const [k, v] of Object.entries(t.errors)) if (v > 0) f.push(`${name}: ${v} err ${k}`);
  for (const [k, v] of Object.entries(t.closed_by_server)) f.push(`${name}: ${v} connections closed by the server (code ${k}${Number(k) < 0 ? ': TCP close without a close frame' : ''})`);
  if (t.missing !== 0) f.push(`${name}: delivered ${t.delivered} of ${t.expected_deliveries} expected (missing ${t.missing})`);
  if (t.gaps || t.repeats || t.wrong_room || t.seq_gaps) f.push(`${name}: order check: gaps ${t.gaps}, repeats ${t.repeats}, wrong room ${t.wrong_room}, seq gaps ${t.seq_gaps}`);
  if (t.unanswered_pubs) f.push(`${name}: ${t.unanswered_pubs} pubs got neither ack nor err (${t.acks} acks, ${t.pub_errors} errs, ${t.sent} sent)`);
  if (t.inflight_after_drain > 0) f.push(`${name}: ${t.inflight_after_drain} own messages never came back within the drain`);
  if (t.unknown_frames || t.bad_frames || t.text_frames) f.push(`${name}: unexpected frames: unknown ${t.unknown_frames}, bad ${t.bad_frames}, text ${t.text_frames}`);
  const other = j.machine?.unattributed_pct_of_core;
  if (other > 20) f.push(`${name}: other work used ${other}% of a core during the window: its throughput and latency are disturbed (CPU per message less so)`);
  if (j.generator.cpu_pct > 85) f.push(`${name}: the load generator used ${j.generator.cpu_pct}% of its core (the server ${(100 * j.server.cpu_s / j.window_s).toFixed(0)}%): it may be the limit`);
  return f;
}

// ---- perf (optional diagnostics) --------------------------------------------------------------

const PERF_SYSCALLS = ['sendto', 'recvfrom', 'epoll_pwait', 'epoll_wait', 'futex', 'write', 'read'];

function perfReportLines(file, args) {
  const r = spawnSync('perf', ['report', '-i', file, '--stdio', '-g', 'none', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return (r.stdout ?? '').split('\n').filter((l) => /^\s+\d+\.\d+%/.test(l));
}

/** One unmeasured generator run with perf stat (whole server) and perf record (its main thread) attached mid-window. */
async function perfRun(s) {
  const d = Math.max(1, duration - 1.5);
  const dataFile = join(benchDir, 'results', 'tmp', `perf-${s.name}.data`);
  mkdirSync(dirname(dataFile), { recursive: true });
  const gen = runGenerator(s);
  await sleep((warmup + 1) * 1000);
  const stat = spawn('perf', ['stat', '-x', ',', '-e', PERF_SYSCALLS.map((c) => `syscalls:sys_enter_${c}`).join(','), '-p', String(s.pid), '--', 'sleep', String(d)], { stdio: ['ignore', 'ignore', 'pipe'] });
  const rec = spawn('perf', ['record', '-F', '999', '-g', '-t', String(s.pid), '-o', dataFile, '--', 'sleep', String(d)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let statErr = '';
  stat.stderr.on('data', (b) => { statErr += b; });
  rec.stderr.on('data', () => undefined);
  const [statCode, recCode] = await Promise.all([stat, rec].map((c) => new Promise((r) => c.once('exit', r))));
  const g = await gen;
  const out = { ok: statCode === 0 && recCode === 0, seconds: d, syscallsPerSec: {}, deliveredPerSec: g.json?.delivered_per_s ?? null };
  for (const line of statErr.split('\n')) {
    const f = line.split(',');
    const m = /syscalls:sys_enter_(\w+)/.exec(line);
    if (m && /^\d+$/.test(f[0] ?? '')) out.syscallsPerSec[m[1]] = Math.round(Number(f[0]) / d);
  }
  const sends = out.syscallsPerSec.sendto;
  out.deliveriesPerSendto = sends && out.deliveredPerSec ? out.deliveredPerSec / sends : null;
  if (recCode === 0) {
    out.mainThreadByDso = perfReportLines(dataFile, ['--no-children', '--sort', 'dso']).slice(0, 6).map((l) => l.trim());
    out.mainThreadTopSelf = perfReportLines(dataFile, ['--no-children', '--sort', 'sym']).slice(0, 15).map((l) => l.trim().slice(0, 160));
    out.mainThreadInclusive = perfReportLines(dataFile, ['--children', '--sort', 'sym'])
      .filter((l) => /__send\b|__sys_sendto|__sys_recvfrom|futex|epoll_wait|ep_poll|JS:\S+|uWS::TopicTree|us_loop|uv__io_poll|uv_run|v8::internal::Builtin/.test(l))
      .slice(0, 20).map((l) => l.trim().slice(0, 160));
  }
  out.file = relative(root, dataFile);
  return out;
}

// ---- run ---------------------------------------------------------------------------------------

/** Busy share of all cores over `ms` (from /proc/stat), in % of one core; null off Linux. */
async function machineBusy(ms) {
  const read = () => {
    try {
      const l = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
      const idle = l[3] + (l[4] ?? 0);
      return { total: l.slice(0, 8).reduce((a, b) => a + b, 0), idle };
    } catch { return null; }
  };
  const a = read();
  await sleep(ms);
  const b = read();
  if (!a || !b || b.total === a.total) return null;
  return (100 * ncpu * (1 - (b.idle - a.idle) / (b.total - a.total)));
}

/** Waits (at most waitIdle s) until the machine is quiet; returns the last busy figure (% of a core). */
async function quiet() {
  const t0 = Date.now();
  let b = null;
  do {
    b = await machineBusy(500);
    if (b === null || b < 25) break;
  } while (Date.now() - t0 < waitIdle * 1000);
  return { busyPct: b, waitedMs: Date.now() - t0 };
}

const started = Date.now();
const busyBefore = await machineBusy(1000);
if (busyBefore !== null && busyBefore > 20) log(`note: the machine was ${busyBefore.toFixed(0)}% of a core busy before the benchmark started (other work): expect noise`);
const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).stdout?.trim() || null;
const dirty = (spawnSync('git', ['status', '--porcelain', '--', 'engine', 'workers'], { cwd: root, encoding: 'utf8' }).stdout ?? '').trim() !== '';
log(`scenario ${SCENARIO.name}: ${SCENARIO.rooms} rooms x ${SCENARIO.members} members, ${SCENARIO.sendersPerRoom} senders/room, ` +
  `${SCENARIO.size} B, window ${window}; ${runs} runs x (${warmup} s warmup + ${duration} s window); ${pinNote}`);

const servers = [];
const results = {};
const findings = [];
let failed = false;
try {
  for (const name of peerNames) {
    servers.push(await startServer(name));
    results[name] = { label: PEERS[name].label, runs: [], derived: [] };
  }
  if (perfMode) {
    for (const s of servers) {
      log(`${s.name}: extra run with perf attached (not part of the medians)`);
      results[s.name].perf = await perfRun(s);
      const p = results[s.name].perf;
      log(`${s.name}: perf: ${p.ok ? '' : '(perf failed) '}${JSON.stringify(p.syscallsPerSec)} syscalls/s, ${p.deliveriesPerSendto?.toFixed(1) ?? '?'} deliveries per sendto`);
    }
  }
  for (let r = 0; r < runs; r++) {
    for (const s of servers) {
      const q = waitIdle > 0 ? await quiet() : null;
      const g = await runGenerator(s);
      if (g.json === null) {
        failed = true;
        findings.push(`${s.name} run ${r + 1}: the load generator failed (exit ${g.code}): ${g.stderr.split('\n').slice(-3).join(' | ')}`);
        log(`${s.name} run ${r + 1}: FAILED (exit ${g.code})\n${g.stderr}`);
        continue;
      }
      if (g.stderr) for (const l of g.stderr.split('\n')) if (!/connections ready/.test(l)) log(`  [loadgen ${s.name}] ${l}`);
      const d = derive(g.json);
      if (q) { d.busyBeforeRunPct = q.busyPct; d.waitedForIdleMs = q.waitedMs; }
      results[s.name].runs.push(g.json);
      results[s.name].derived.push(d);
      for (const f of findingsOf(`${s.name} run ${r + 1}`, g.json)) findings.push(f);
      log(`${s.name} run ${r + 1}/${runs}: ${(d.deliveredPerSec / 1e3).toFixed(1)} k delivered/s, p50 ${d.p50ms.toFixed(2)} ms, ` +
        `p99 ${d.p99ms.toFixed(2)} ms, server ${d.serverCpuMsPer1k?.toFixed(3)} ms CPU/1k, generator ${d.genCpuPct.toFixed(0)}% CPU`);
    }
  }
} catch (e) {
  failed = true;
  findings.push(`runner: ${e.message}`);
  log(`run.mjs: ${e.message}`);
} finally {
  for (const s of servers) {
    const st = await stopServer(s, 15000);
    results[s.name].exit = st;
    const ok = st.code === 0 && !st.killed;
    log(`${s.name}: exit code ${st.code}${st.signal ? ` signal ${st.signal}` : ''} ${st.ms} ms after SIGTERM`);
    if (!ok) {
      findings.push(`${s.name}: did not exit 0 by itself after SIGTERM (code ${st.code}, signal ${st.signal}, killed ${st.killed})`);
      if (s.name === 'shardchat') failed = true;
    }
    const warn = s.lines.filter((l) => /"level":(40|50|60)/.test(l) || /error|warn/i.test(l));
    results[s.name].serverLog = { lines: s.lines.length, warnings: warn.length, firstWarnings: warn.slice(0, 10) };
    if (warn.length) findings.push(`${s.name}: ${warn.length} warning/error log lines, first: ${warn[0].slice(0, 300)}`);
  }
}

// ---- summary -----------------------------------------------------------------------------------

const summary = {};
for (const [name, r] of Object.entries(results)) {
  const m = {};
  const keys = r.derived.length ? Object.keys(r.derived[0]) : [];
  for (const k of keys) m[k] = median(r.derived.map((d) => d[k]));
  m.runs = r.derived.length;
  m.deliveredPerSecRuns = r.derived.map((d) => Math.round(d.deliveredPerSec));
  summary[name] = m;
}
const ratio = (b, a) => (a && b && a > 0 ? b / a : null);
/** shardchat relative to one baseline peer: ratios of the medians, and the median of per-pair ratios. */
function ratiosTo(base) {
  const A = summary[base];
  const B = summary.shardchat;
  if (!A || !B) return null;
  const pairs = (k) => median(results.shardchat.derived.map((d, i) => ratio(d[k], results[base].derived[i]?.[k])));
  return {
    throughput: ratio(B.deliveredPerSec, A.deliveredPerSec),
    serverCpuPerMsg: ratio(B.serverCpuMsPer1k, A.serverCpuMsPer1k),
    mainThreadCpuPerMsg: ratio(B.mainCpuMsPer1k, A.mainCpuMsPer1k),
    p50: ratio(B.p50ms, A.p50ms),
    p99: ratio(B.p99ms, A.p99ms),
    // the same per interleaved pair of runs (run i of each peer), then their median
    throughputPerPairMedian: pairs('deliveredPerSec'),
    serverCpuPerMsgPerPairMedian: pairs('serverCpuMsPer1k'),
  };
}
const ratios = ratiosTo('uws-plain');
const ratiosDeferred = ratiosTo('uws-deferred');

const f1 = (x, d = 1) => (x === null || x === undefined ? 'n/a' : x.toFixed(d));
const kps = (x) => (x === null || x === undefined ? 'n/a' : x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`);
const rows = [];
rows.push(`### ${SCENARIO.name}: ${SCENARIO.rooms} rooms x ${SCENARIO.members} members, ${SCENARIO.sendersPerRoom} senders/room, ${SCENARIO.size} B, closed loop, window ${window}/sender`);
rows.push('');
rows.push(`Medians of ${runs} runs (${duration} s window after ${warmup} s warmup each, peers interleaved); ${pinNote}; ${os.cpus()[0]?.model?.trim() ?? 'cpu?'}, ${ncpu} cores, Node ${process.versions.node}; commit ${commit ?? '?'}${dirty ? ' + uncommitted engine changes' : ''}; machine ${busyBefore === null ? '?' : busyBefore.toFixed(0)}% of a core busy before the start.`);
rows.push('');
rows.push('| peer | delivered msgs/s | runs (k/s) | p50 ms | p99 ms | server CPU ms / 1k msgs | main thread CPU ms / 1k msgs | server CPU % | server core busy % | generator CPU % | generator core busy % | other CPU % | err / closes / missing / order |');
rows.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const [name, m] of Object.entries(summary)) {
  const r = results[name];
  const errs = r.derived.reduce((a, d) => a + d.errors, 0);
  const closes = r.derived.reduce((a, d) => a + d.closes, 0);
  const missing = r.derived.reduce((a, d) => a + d.missing, 0);
  const order = r.derived.reduce((a, d) => a + d.gaps, 0);
  rows.push(`| ${r.label} | ${kps(m.deliveredPerSec)} | ${m.deliveredPerSecRuns.map((x) => (x / 1e3).toFixed(0)).join(' / ')} | ${f1(m.p50ms, 2)} | ${f1(m.p99ms, 2)} | ` +
    `${f1(m.serverCpuMsPer1k, 3)} | ${f1(m.mainCpuMsPer1k, 3)} | ${f1(m.serverCpuPct, 0)} | ${f1(m.serverCoreBusyPct, 0)} | ${f1(m.genCpuPct, 0)} | ${f1(m.genCoreBusyPct, 0)} | ${f1(m.otherCpuPct, 0)} | ${errs} / ${closes} / ${missing} / ${order} |`);
}
for (const [r, name] of [[ratios, 'plain uWS'], [ratiosDeferred, 'uWS deferred']]) {
  if (!r) continue;
  rows.push(`| **ratio shardchat / ${name}** | **${f1(r.throughput, 2)}x** | pairs: ${f1(r.throughputPerPairMedian, 2)}x | ${f1(r.p50, 2)}x | ${f1(r.p99, 2)}x | **${f1(r.serverCpuPerMsg, 2)}x** | ${f1(r.mainThreadCpuPerMsg, 2)}x | | | | | | |`);
}
rows.push('');
rows.push(findings.length ? `Findings:\n${findings.map((f) => `- ${f}`).join('\n')}` : 'Findings: none (no errors, no closes, every message delivered to every member in order).');
const table = rows.join('\n');

const out = {
  scenario: SCENARIO,
  settings: { quick, runs, warmupS: warmup, durationS: duration, window, generatorThreads: genThreads, pinning: pinNote, waitIdleS: waitIdle, cpuProf, perf: perfMode },
  machine: { cpu: os.cpus()[0]?.model?.trim(), cores: ncpu, node: process.versions.node, platform: `${process.platform}-${process.arch}`, loadavg: os.loadavg(), busyBeforePctOfCore: busyBefore },
  commit, engineDirty: dirty, date: new Date().toISOString(), elapsedS: (Date.now() - started) / 1000,
  summary, ratios, ratiosDeferred, findings,
  peers: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, { label: v.label, exit: v.exit, serverLog: v.serverLog, perf: v.perf, derived: v.derived, runs: v.runs }])),
  table,
};
mkdirSync(dirname(outFile), { recursive: true });
writeFileSync(outFile, `${JSON.stringify(out, null, 2)}\n`);
process.stdout.write(`\n${table}\n\nwrote ${relative(root, outFile)} in ${out.elapsedS.toFixed(0)} s\n`);

if (perfMode) {
  for (const [name, r] of Object.entries(results)) {
    const p = r.perf;
    if (!p) continue;
    process.stdout.write(`\nperf, ${name} (${p.seconds} s of an extra run at ${kps(p.deliveredPerSec)} delivered/s; ${p.file}):\n` +
      `  syscalls/s: ${Object.entries(p.syscallsPerSec).map(([k, v]) => `${k} ${v}`).join(', ')}; deliveries per sendto: ${f1(p.deliveriesPerSendto, 1)}\n` +
      `  main thread by object: ${(p.mainThreadByDso ?? []).join(' | ')}\n` +
      `  main thread, inclusive:\n${(p.mainThreadInclusive ?? []).map((l) => `    ${l}`).join('\n')}\n` +
      `  main thread, top self:\n${(p.mainThreadTopSelf ?? []).map((l) => `    ${l}`).join('\n')}\n`);
  }
}
if (cpuProf) {
  const profs = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(profDir, f));
  if (profs.length) {
    const r = spawnSync(process.execPath, [join(here, 'prof-top.mjs'), ...profs], { encoding: 'utf8' });
    process.stdout.write(`\nCPU profiles (${relative(root, profDir)}):\n${r.stdout}${r.stderr}`);
  }
}
process.exitCode = failed ? 1 : 0;
