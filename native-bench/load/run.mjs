#!/usr/bin/env node
/**
 * shardchat load benchmark suite (see native-bench/README.md, "Load benchmarks").
 *
 *   npm run bench:quick   # every kind of scenario once, small: the same-protocol peer (+ A/A), shardchat, plain uWS
 *   npm run bench         # the whole suite: every scenario, every peer
 *   npm run bench -- --scale 1..N   # shardchat with 1..N shards, unpinned: measured against derived throughput
 *   node native-bench/load/run.mjs [--quick] [--scenarios a,b] [--peers p,q] [--shards 1,2] [--runs N] [--reference]
 *        [--duration S] [--warmup S] [--window W] [--threads T] [--no-pin] [--wait-idle S] [--cpu-prof] [--perf] [--out FILE]
 *
 * Scenarios are named parameter sets (SCENARIOS below). Closed-loop ones start every peer's server
 * as a child process on a free 127.0.0.1 port (pinned to core 0 with taskset; the C generator to
 * core 1), all with the same node flags, and interleave the peers' runs (in an order that changes
 * each run); the open-* ones do the same at a fixed offered rate; "sweep" runs every offered rate
 * alike, in a shuffled order; "idle" starts a fresh server per run and measures its RSS per idle
 * connection; "stall" runs shardchat without and with one member that stops reading. Each server
 * is stopped with SIGTERM by its PID (shardchat must exit 0 by itself). Ratios get bootstrap
 * intervals from paired runs (stats.mjs) and verdicts only when the interval decides them.
 * Results go to native-bench/results/local/ (git-ignored; results.mjs); --reference also writes a
 * small committable summary under native-bench/results/reference/.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pairByRunId, pairedRatioInterval, verdictOf, shuffled, fmtInterval } from './stats.mjs';
import { resultPaths, writeResults } from './results.mjs';
import { deriveScale, scaleTable } from './scale.mjs';

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
function list(name, def) { const v = opt(name, null); return v === null ? def : v.split(',').map((s) => s.trim()).filter(Boolean); }
function fail(msg) { process.stderr.write(`run.mjs: ${msg}\n`); process.exit(2); }

/** Named parameter sets. kind: closed (closed loop, window W per sender), open (rate sweep), idle, churn, stall. */
const SCENARIOS = {
  'fanout-10x100': { kind: 'closed', rooms: 10, members: 100, senders: 10, size: 128, peers: ['uws-plain', 'uws-plain-aa', 'ws-rooms', 'socketio-rooms', 'shardchat', 'shardchat-nometrics'],
    about: '10 rooms x 100 members, 10 senders per room, 128 B, closed loop' },
  'fanout-1x1000': { kind: 'closed', rooms: 1, members: 1000, senders: 10, size: 128, peers: ['uws-plain', 'ws-rooms', 'socketio-rooms', 'shardchat'],
    about: '1 room x 1000 members, 10 senders, 128 B, closed loop' },
  'chat-1to1': { kind: 'closed', rooms: 500, members: 2, senders: 2, size: 128, peers: ['uws-plain', 'ws-rooms', 'socketio-rooms', 'shardchat'],
    about: '500 rooms x 2 members, both members send, 128 B, closed loop' },
  sweep: { kind: 'open', rooms: 10, members: 100, senders: 10, size: 128, peers: ['uws-plain', 'ws-rooms', 'socketio-rooms', 'shardchat'],
    about: 'fanout-10x100 open loop: offered deliveries/s raised until a peer saturates' },
  idle: { kind: 'idle', rooms: 100, members: 100, senders: 1, size: 128, peers: ['uws-plain', 'ws-rooms', 'socketio-rooms', 'shardchat'],
    about: '10,000 idle connections (100 rooms x 100, joined, nothing sent): server RSS per connection' },
  churn: { kind: 'churn', rooms: 10, members: 20, senders: 1, size: 128, peers: ['uws-plain', 'ws-rooms', 'socketio-rooms', 'shardchat'],
    about: '200 connection slots, each closes once ready (after join) and reconnects' },
  stall: { kind: 'stall', rooms: 1, members: 100, senders: 10, size: 1024, peers: ['shardchat'],
    about: '1 room x 100 members, 10 senders, 1 KiB bodies, closed loop, without and with one member (not a sender) that stops reading' },
};
// The bar: shardchat against the single-threaded server of the same protocol (uws-protocol), in
// every operating point (issue 15): messages in flight per room, room size, many small rooms,
// echo-style, and open-loop latency at fixed offered rates. uws-plain (no protocol) for scale.
const PEERS_VS = ['uws-protocol', 'shardchat', 'uws-plain'];
SCENARIOS['echo-1x2'] = { kind: 'closed', rooms: 1, members: 2, senders: 2, size: 128, window: 500, peers: PEERS_VS, target: 2,
  about: '1 room x 2 members, both send, 500 in flight each (1000 per room: echo-style), 128 B, closed loop' };
for (const w of [1, 4, 16, 32]) {
  SCENARIOS[`inflight-w${w}`] = { kind: 'closed', rooms: 10, members: 100, senders: 1, size: 128, window: w, peers: PEERS_VS, target: 1,
    about: `10 rooms x 100 members, 1 sender per room with ${w} in flight (${w} per room), 128 B, closed loop` };
}
for (const m of [2, 10, 100, 1000]) {
  SCENARIOS[`roomsize-${m}`] = { kind: 'closed', rooms: Math.max(1, 1000 / m), members: m, senders: 2, size: 128, window: 4, peers: PEERS_VS, target: 1,
    about: `${Math.max(1, 1000 / m)} room${m === 1000 ? '' : 's'} x ${m} members, 2 senders per room, 4 in flight each (8 per room), 128 B, closed loop` };
}
SCENARIOS['many-small-2000x2'] = { kind: 'closed', rooms: 2000, members: 2, senders: 2, size: 128, window: 4, peers: PEERS_VS, target: 1, p99Target: 1.2,
  about: '2,000 rooms x 2 members, both send, 4 in flight each, 128 B, closed loop: how evenly many small rooms are served' };
for (const [nm, rate] of [['light', 10000], ['moderate', 100000]]) {
  SCENARIOS[`open-${nm}`] = { kind: 'closed', open: true, rate, rooms: 10, members: 100, senders: 10, size: 128, peers: PEERS_VS, p99Target: 1.2,
    about: `fanout-10x100 open loop at a fixed ${rate / 1000} k deliveries/s offered (${nm} load): latency at the same offered rate for every peer` };
}
const VS_ORDER = ['echo-1x2', 'inflight-w1', 'inflight-w4', 'inflight-w16', 'inflight-w32', 'roomsize-2', 'roomsize-10', 'roomsize-100', 'roomsize-1000', 'many-small-2000x2', 'open-light', 'open-moderate'];
const QUICK_ORDER = ['fanout-10x100', 'echo-1x2', 'inflight-w16', 'roomsize-1000', 'many-small-2000x2', 'open-light'];
const QUICK_PEERS = { 'fanout-10x100': ['uws-protocol', 'uws-protocol-aa', 'shardchat', 'uws-plain'] };
const SCALE_SCENARIOS = ['roomsize-10', 'many-small-2000x2'];
// History memory: a fresh server per run, rooms filled past their history limit (1000 messages,
// both servers' default), RSS after minus before per stored message.
SCENARIOS['history-200x1'] = { kind: 'history', rooms: 200, members: 1, senders: 1, size: 128, window: 16, peers: ['uws-protocol', 'shardchat'], historyLimit: 1000,
  about: '200 rooms x 1 member sending 128 B bodies, 16 in flight, until every room holds its 1000-message history: server RSS per stored message' };
// Durable storage: once the engine has --store sqlite, shardchat's writes happen in its shard while
// the single-threaded peer does them inline. In the default suite only when the CLI offers --store.
SCENARIOS['durable-10x100'] = { kind: 'closed', rooms: 10, members: 100, senders: 2, size: 128, window: 4, peers: ['uws-protocol-sqlite', 'shardchat-sqlite', 'uws-protocol'],
  about: '10 rooms x 100 members, 2 senders per room, 4 in flight each, 128 B, every message stored in SQLite (WAL) before its ack' };
const engineHasStore = () => {
  const r = spawnSync(process.execPath, [join(root, 'dist', 'engine', 'cli.js'), '--help'], { encoding: 'utf8', timeout: 10000 });
  return /--store\b/.test(`${r.stdout ?? ''}${r.stderr ?? ''}`);
};
const FULL_ORDER = ['fanout-10x100', 'fanout-1x1000', 'chat-1to1', ...VS_ORDER, ...(engineHasStore() ? ['durable-10x100'] : []), 'sweep', 'idle', 'history-200x1', 'churn', 'stall'];
const PEER_NAMES = ['uws-plain', 'uws-plain-aa', 'uws-protocol', 'uws-protocol-aa', 'uws-protocol-sqlite', 'uws-deferred', 'ws-rooms', 'socketio-rooms',
  'shardchat', 'shardchat-nometrics', 'shardchat-sN', 'shardchat-sqlite', 'shardchat-sqlite-base', 'shardchat-base'];
for (const k of ['fanout-10x100', 'fanout-1x1000', 'chat-1to1', 'sweep', 'idle', 'churn']) SCENARIOS[k].peers.splice(1, 0, 'uws-protocol');
SCENARIOS['fanout-10x100'].peers.splice(2, 0, 'uws-protocol-aa');
SCENARIOS['chat-1to1'].target = 1;
SCENARIOS['fanout-1x1000'].target = 1;
SCENARIOS['fanout-10x100'].target = 1;

if (flag('--help') || flag('-h')) {
  process.stdout.write(`usage: node native-bench/load/run.mjs [--quick] [--scenarios LIST] [--peers LIST] [--shards LIST] [--runs N]
  [--duration S] [--warmup S] [--window W] [--threads T] [--no-pin] [--wait-idle S] [--cpu-prof] [--perf] [--out FILE]
  [--sweep-rates LIST] [--sweep-runs N] [--idle-conns N] [--reference] [--scale 1..N]
  --quick       ${QUICK_ORDER.join(', ')}: the same-protocol peer (and its A/A arm), shardchat, plain uWS; 3 runs x (1 s warmup + 3 s window)
  --scenarios   comma list of: ${FULL_ORDER.join(', ')} (default: all of them; --quick: the list above)
  --reference   also write a small committable summary (summary.json + summary.md) to native-bench/results/reference/<time>-<mode>/
  --scale 1..N  run shardchat with 1..N shards, unpinned, on ${SCALE_SCENARIOS.join(', ')}, and print measured against derived throughput
  --peers       comma list overriding every scenario's peers: ${PEER_NAMES.join(', ')}
  --shards      shard counts of shardchat to run besides 1 (e.g. 2,4 adds shardchat-s2, shardchat-s4 to the closed scenarios)
  --runs        generator runs per arm (default 5, --quick 3; a verdict needs at least 5 pairs)
  --duration    measured window of each run, seconds (default 5; sweep points: 3)
  --warmup      seconds of load before the window opens (default 1.5; sweep points: 1)
  --window      messages in flight per sender, for scenarios that do not set their own (closed loop; default 1)
  --sweep-rates offered deliveries/s of the sweep, comma list (default 20000,50000,100000,...,1500000)
  --sweep-runs  runs of every sweep point (default 2), in an order shuffled per run
  --idle-conns  connections of the idle scenario (default 10000; one process holds at most ~19,990)
  --threads     load generator threads (default 1: it has one core)
  --no-pin      do not pin with taskset
  --wait-idle   before each run, wait up to this many seconds (default 4; at most 60 s in all) for other work under 25% of a core
  --cpu-prof    start shardchat with --cpu-prof and print its top self-time functions
  --perf        one extra unmeasured run per peer of the first closed scenario with Linux perf attached (needs perf + root;
                perf record follows the main thread only, or every thread with PERF_ALL=1 in the environment)
`);
  process.exit(0);
}

const quick = flag('--quick');
const reference = flag('--reference');
const scaleArg = opt('--scale', null);
const scaleMax = scaleArg === null ? 0 : Number(/^1\.\.(\d+)$/.exec(scaleArg)?.[1] ?? scaleArg);
if (scaleArg !== null && !(Number.isInteger(scaleMax) && scaleMax >= 1 && scaleMax <= 64)) fail('--scale takes 1..N (N = 1..64)');
const runs = num('--runs', quick ? 3 : 5, 1, 50);
const duration = num('--duration', quick ? 3 : 5, 0.5, 600);
const warmup = num('--warmup', quick ? 1 : 1.5, 0, 120);
const sweepDuration = num('--sweep-duration', 3, 0.5, 60);
const sweepWarmup = num('--sweep-warmup', 1, 0, 60);
const window = num('--window', 1, 1, 1000);
const genThreads = num('--threads', 1, 1, 16);
const cpuProf = flag('--cpu-prof');
const perfMode = flag('--perf');
const waitIdle = num('--wait-idle', 4, 0, 600);
const waitBudgetMs = 60000;
const idleConns = num('--idle-conns', 10000, 100, 19900);
const sweepRates = list('--sweep-rates', ['20000', '50000', '100000', '200000', '400000', '700000', '1000000', '1500000']).map(Number);
const sweepRuns = num('--sweep-runs', 2, 1, 20);
const shardCounts = scaleMax ? Array.from({ length: scaleMax }, (_, i) => i + 1).filter((n) => n !== 1) : list('--shards', []).map(Number).filter((n) => n !== 1);
for (const n of shardCounts) if (!Number.isInteger(n) || n < 1 || n > 64) fail('--shards takes integers 1..64');
const scenarioNames = list('--scenarios', scaleMax ? SCALE_SCENARIOS : quick ? QUICK_ORDER : FULL_ORDER);
for (const s of scenarioNames) if (!(s in SCENARIOS)) fail(`unknown scenario ${s} (known: ${[...FULL_ORDER, 'durable-10x100'].filter((x, i, a) => a.indexOf(x) === i).join(', ')})`);
const peerOverride = list('--peers', scaleMax ? ['uws-protocol', 'shardchat'] : null);
const mode = scaleMax ? 'scale' : quick ? 'quick' : 'suite';
const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d{3}Z$/, 'Z');
const paths = resultPaths(benchDir, stamp, mode);
const outFile = opt('--out', null) === null ? null : resolve(opt('--out', null));

// ---- helpers -----------------------------------------------------------------------------------

const log = (s) => process.stderr.write(`${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0Suite = Date.now();
const elapsed = () => { const s = Math.round((Date.now() - t0Suite) / 1000); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`; };
/** Progress line on stderr: [elapsed] [step k/n] text */
let stepNo = 0;
let stepTotal = 0;
const progress = (s) => log(`[${elapsed()}]${stepTotal ? ` [${stepNo}/${stepTotal}]` : ''} ${s}`);

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
const ratio = (b, a) => (typeof a === 'number' && typeof b === 'number' && a > 0 ? b / a : null);
const f1 = (x, d = 1) => (x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d));
const kps = (x) => (x === null || x === undefined ? 'n/a' : x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`);

// ---- setup -------------------------------------------------------------------------------------

const ncpu = os.availableParallelism?.() ?? os.cpus().length;
const pin = !flag('--no-pin') && !scaleMax && ncpu >= 2 && haveTaskset();
const SERVER_CPU = 0;
const GEN_CPU = 1;
const pinNote = pin ? `server on core ${SERVER_CPU}, generator on core ${GEN_CPU} (taskset)`
  : flag('--no-pin') ? 'not pinned (--no-pin)' : scaleMax ? 'not pinned (--scale: shards may use every core)'
    : ncpu < 2 ? 'not pinned (one core)' : 'not pinned (taskset not found: install util-linux)';
const withPin = (cpu, cmd, args) => (pin ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args]);

log(`building the load generator (${relative(root, join(here, 'build.sh'))})`);
{
  const r = spawnSync('sh', [join(here, 'build.sh')], { stdio: 'inherit' });
  if (r.status !== 0) fail('building the load generator failed (needs a C compiler: cc)');
}
const loadgen = join(here, 'build', 'loadgen');
const cliJs = join(root, 'dist', 'engine', 'cli.js');
mkdirSync(paths.tmp, { recursive: true }); // server scratch files (SQLite databases of the durable peers, profiles)
const profDir = join(paths.tmp, 'prof');
if (cpuProf) mkdirSync(profDir, { recursive: true });

// shardchat runs as `npm start` runs it: the node flags of package.json's start script (the
// young-generation cap the CLI's shebang also sets), then the CLI.
const startScript = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts?.start ?? '';
const startNodeFlags = (/^node((?:\s+--[\w-]+(?:=\S+)?)*)\s+dist\/engine\/cli\.js\b/.exec(startScript)?.[1] ?? '').trim().split(/\s+/).filter(Boolean);
if (!/^node\b/.test(startScript)) fail(`package.json's start script is not "node [flags] dist/engine/cli.js": ${startScript}`);
const shardchatArgs = (port, extra, cli = cliJs) => [
  ...startNodeFlags,
  ...(cpuProf ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []),
  cli, '--port', String(port), '--host', '127.0.0.1', '--rate-per-sec', '1000000000', '--rate-burst', '1000000000',
  '--upgrade-rate-per-sec', '0', // the idle scenario measures how fast connections open: no admission limit
  '--log-level', 'warn', '--max-connections', '50000',
  // The CLI is durable by default: the memory arms say --store memory; the sqlite arm gets a data dir of its own under tmp.
  ...(extra.includes('--store') ? ['--data-dir', join(paths.tmp, `shardchat-data-${port}-${Date.now()}`)] : ['--store', 'memory']), ...extra,
];
const SIO_PATH = '/socket.io/?EIO=4&transport=websocket';
/** Peers: each a server started as a child process; proto is what the C generator speaks to it. */
function peerDef(name) {
  // every peer runs with the same node flags as shardchat (npm start's), e.g. --max-semi-space-size=1
  const peerFile = (f, extra = []) => (port) => [...startNodeFlags, join(benchDir, 'peers', f), '--port', String(port), '--host', '127.0.0.1', ...extra];
  const noRate = ['--rate-per-sec', '1000000000', '--rate-burst', '1000000000', '--max-buffer-bytes', String(64 << 20)];
  switch (name) {
    case 'uws-plain': return { label: 'plain uWS pub/sub (1 thread)', proto: 'plain', args: peerFile('uws-plain.mjs') };
    case 'uws-plain-aa': return { label: 'plain uWS again (A/A)', proto: 'plain', args: peerFile('uws-plain.mjs'), aaOf: 'uws-plain' };
    case 'uws-protocol': return { label: 'same protocol, 1 thread (uws-protocol)', proto: 'shardchat', args: peerFile('uws-protocol.mjs', noRate) };
    case 'uws-protocol-aa': return { label: 'same protocol again (A/A)', proto: 'shardchat', args: peerFile('uws-protocol.mjs', noRate), aaOf: 'uws-protocol' };
    case 'uws-protocol-sqlite': return { label: 'same protocol + SQLite inline (1 thread)', proto: 'shardchat', durable: true,
      args: (p) => peerFile('uws-protocol-sqlite.mjs', [...noRate, '--db', join(paths.tmp, `peer-sqlite-${p}.db`)])(p) };
    case 'shardchat-sqlite': return { label: 'shardchat --shards 1 --store sqlite', proto: 'shardchat', shardchat: true, durable: true, args: (p) => shardchatArgs(p, ['--shards', '1', '--store', 'sqlite',
      ...(process.env.SHARDCHAT_BENCH_STORE_ARGS ?? '').split(/\s+/).filter(Boolean).map((a) => a.replace('{port}', String(p)))]) };
    // A before/after arm in one run: another build's CLI (e.g. a copy of dist/ from the base commit), same arguments.
    case 'shardchat-sqlite-base': {
      const cli = process.env.SHARDCHAT_BENCH_BASE_CLI;
      if (!cli || !existsSync(cli)) fail('peer shardchat-sqlite-base needs SHARDCHAT_BENCH_BASE_CLI=<path to another build\'s dist/engine/cli.js>');
      return { label: `shardchat --shards 1 --store sqlite, ${relative(root, cli)}`, proto: 'shardchat', shardchat: true, durable: true,
        args: (p) => shardchatArgs(p, ['--shards', '1', '--store', 'sqlite'], cli) };
    }
    // The same before/after arm with the memory store (e.g. the idle scenario): shardchat --shards 1 of another build.
    case 'shardchat-base': {
      const cli = process.env.SHARDCHAT_BENCH_BASE_CLI;
      if (!cli || !existsSync(cli)) fail('peer shardchat-base needs SHARDCHAT_BENCH_BASE_CLI=<path to another build\'s dist/engine/cli.js>');
      return { label: `shardchat --shards 1, ${relative(root, cli)}`, proto: 'shardchat', shardchat: true, args: (p) => shardchatArgs(p, ['--shards', '1'], cli) };
    }
    case 'uws-deferred': return { label: 'uWS pub/sub, publish deferred (diagnostic)', proto: 'plain', args: peerFile('uws-deferred.mjs') };
    case 'ws-rooms': return { label: 'ws + room map', proto: 'plain', args: peerFile('ws-rooms.mjs'), npm: true };
    case 'socketio-rooms': return { label: 'Socket.IO 4 rooms', proto: 'socketio', path: SIO_PATH, args: peerFile('socketio-rooms.mjs'), npm: true };
    case 'shardchat': return { label: 'shardchat --shards 1', proto: 'shardchat', shardchat: true, args: (p) => shardchatArgs(p, ['--shards', '1']) };
    case 'shardchat-nometrics': return { label: 'shardchat --shards 1 --metrics false', proto: 'shardchat', shardchat: true, args: (p) => shardchatArgs(p, ['--shards', '1', '--metrics', 'false']) };
    default: {
      const m = /^shardchat-s(\d+)$/.exec(name);
      if (m) return { label: `shardchat --shards ${m[1]}`, proto: 'shardchat', shardchat: true, args: (p) => shardchatArgs(p, ['--shards', m[1]]) };
      return null;
    }
  }
}

function peersOf(sc) {
  const base = peerOverride ?? (quick ? QUICK_PEERS[sc] ?? ['uws-protocol', 'shardchat'] : SCENARIOS[sc].peers);
  const extra = SCENARIOS[sc].kind === 'closed' && (!peerOverride || scaleMax) ? shardCounts.map((n) => `shardchat-s${n}`) : [];
  const out = [...base, ...extra];
  for (const p of out) if (!peerDef(p)) fail(`unknown peer ${p} (known: ${PEER_NAMES.join(', ')})`);
  return out;
}
const allPeers = new Set(scenarioNames.flatMap(peersOf));
if ([...allPeers].some((p) => peerDef(p).shardchat) && !existsSync(cliJs)) fail(`${relative(root, cliJs)} is missing: run "npm run build" first`);
if ([...allPeers].some((p) => peerDef(p).npm)) {
  const need = ['ws', 'socket.io'].filter((m) => !existsSync(join(benchDir, 'node_modules', m, 'package.json')));
  if (need.length) {
    log(`installing the peers' libraries into native-bench/node_modules (npm install --prefix native-bench; missing: ${need.join(', ')})`);
    const r = spawnSync('npm', ['install', '--prefix', benchDir, '--no-audit', '--no-fund'], { stdio: 'inherit' });
    if (r.status !== 0) fail('npm install --prefix native-bench failed (the ws and Socket.IO peers need it)');
  }
}

/** Starts one server; collects its output lines (warnings become findings). */
async function startServer(name) {
  const peer = peerDef(name);
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
  progress(`${name}: pid ${child.pid}, port ${port}, accepting after ${ms} ms`);
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

/** Runs the C generator once against server s with scenario sc; extra: more flags (--rate, --stall, ...). */
function runGenerator(s, sc, extra = [], times = {}) {
  const w = times.warmup ?? warmup;
  const d = times.duration ?? duration;
  const a = [
    '--port', String(s.port), '--host', '127.0.0.1', '--proto', s.peer.proto, ...(s.peer.path ? ['--path', s.peer.path] : []),
    '--rooms', String(sc.rooms), '--members', String(sc.members), '--senders', String(sc.senders),
    '--size', String(sc.size), '--window', String(sc.window ?? window), '--threads', String(genThreads),
    '--warmup', String(w), '--duration', String(d), '--drain', '10', '--server-pid', String(s.pid), ...extra,
  ];
  const [cmd, args] = withPin(GEN_CPU, loadgen, a);
  const limitMs = (w + d + 10 + 60 + 15) * 1000;
  return new Promise((res) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (x) => { out += x; });
    child.stderr.on('data', (x) => { err += x; });
    const timer = setTimeout(() => { log(`loadgen pid ${child.pid} overran ${limitMs} ms: SIGKILL`); child.kill('SIGKILL'); }, limitMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      let json = null;
      try { json = JSON.parse(out); } catch { /* reported by the caller */ }
      res({ code, json, stderr: err.trim() });
    });
  });
}

/** Shard threads of a peer: shardchat-sN has N, shardchat 1, the single-threaded peers none. */
function shardsOf(peerName) {
  const def = peerDef(peerName);
  if (!def?.shardchat) return 0;
  return Number(/-s(\d+)$/.exec(peerName)?.[1] ?? 1);
}

/**
 * Derived numbers of one generator run. Per-thread CPU comes from /proc/PID/task/TID/stat (the
 * generator reads it; the engine exposes no per-thread CPU of its own). Node names every thread
 * "node", so the shards are taken to be the `nShards` busiest threads other than the main one
 * (a shard does all of a room's work; V8's and libuv's helper threads use little).
 */
function derive(j, nShards = 0) {
  const d = j.window_delivered;
  const main = j.server.threads.find((t) => t.main);
  const others = j.server.threads.filter((t) => !t.main).sort((a, b) => b.cpu_s - a.cpu_s);
  const per1k = (s) => (d > 0 ? (s / (d / 1000)) * 1000 : null); // ms of CPU per 1000 delivered
  const shards = others.slice(0, nShards);
  const shardSum = shards.reduce((a, t) => a + t.cpu_s, 0);
  const rest = others.slice(nShards).reduce((a, t) => a + t.cpu_s, 0);
  const core = (c) => j.cores.find((x) => x.cpu === c)?.busy_pct ?? null;
  const idleConnsReady = j.idle?.connections ?? 0;
  return {
    deliveredPerSec: j.delivered_per_s,
    sentPerSec: j.sent_per_s,
    offeredPerSec: j.offered_deliveries_per_s || null,
    skipped: j.window_skipped ?? 0,
    p50ms: j.latency_us.p50 >= 0 ? j.latency_us.p50 / 1000 : null,
    p99ms: j.latency_us.p99 >= 0 ? j.latency_us.p99 / 1000 : null,
    serverCpuS: j.server.cpu_s,
    serverCpuMsPer1k: per1k(j.server.cpu_s),
    mainCpuMsPer1k: main ? per1k(main.cpu_s) : null,
    busiestOtherThreadCpuMsPer1k: others.length ? per1k(others[0].cpu_s) : null,
    shardCpuMsPer1k: nShards ? per1k(shardSum) : null,
    perShardCpuMsPer1k: shards.map((t) => per1k(t.cpu_s)),
    busiestShardShare: nShards && shardSum > 0 ? shards[0].cpu_s / shardSum : null,
    helperThreadsCpuMsPer1k: per1k(rest),
    threadComms: [...new Set(j.server.threads.map((t) => t.comm))].join(','),
    generatorBound: j.generator.cpu_pct > 85 ? 1 : 0,
    serverCpuPct: j.window_s > 0 ? (100 * j.server.cpu_s) / j.window_s : null,
    mainCpuPct: main && j.window_s > 0 ? (100 * main.cpu_s) / j.window_s : null,
    serverCoreBusyPct: pin ? core(SERVER_CPU) : null,
    genCpuPct: j.generator.cpu_pct,
    genCpuMsPer1k: per1k(j.generator.cpu_s),
    genCoreBusyPct: pin ? core(GEN_CPU) : null,
    otherCpuPct: j.machine?.unattributed_pct_of_core ?? null,
    deliveriesPerRead: j.deliveries_per_read,
    setupS: j.setup_ms / 1000,
    connections: j.connections_ready,
    rssBeforeKb: j.idle?.server_rss_kb_before ?? null,
    rssAfterKb: j.idle?.server_rss_kb_after ?? null,
    kbPerIdleConn: j.idle && j.idle.server_rss_kb_after > 0 && idleConnsReady > 0 ? (j.idle.server_rss_kb_after - j.idle.server_rss_kb_before) / idleConnsReady : null,
    cyclesPerSec: j.churn?.cycles_per_s ?? null,
    stalledClosed: j.stalled_closed ?? 0,
    errors: j.totals.errors.overloaded + j.totals.errors.rate_limited + j.totals.errors.shutting_down + j.totals.errors.other,
    closes: Object.values(j.totals.closed_by_server).reduce((a, b) => a + b, 0),
    missing: j.totals.missing,
    gaps: j.totals.gaps + j.totals.repeats + j.totals.wrong_room + j.totals.seq_gaps,
  };
}

function findingsOf(name, j, { stall = 0, mode = 'closed' } = {}) {
  const f = [];
  const t = j.totals;
  const total = j.rooms * j.members;
  if (!j.setup_ok) f.push(`${name}: only ${j.connections_ready}/${total} connections became ready`);
  for (const [k, v] of Object.entries(t.errors)) if (v > 0) f.push(`${name}: ${v} err ${k}`);
  for (const [k, v] of Object.entries(t.closed_by_server)) {
    if (stall > 0 && k === '4008' && v === stall) continue; // expected: the stalled member
    f.push(`${name}: ${v} connections closed by the server (code ${k}${Number(k) < 0 ? ': TCP close without a close frame' : ''})`);
  }
  if (stall > 0 && (j.stalled_closed ?? 0) < stall) f.push(`${name}: the stalled member was not closed by the server within the drain (${j.stalled_delivered} messages reached it)`);
  if (stall > 0 && !t.closed_by_server['4008']) f.push(`${name}: the stalled member did not get close code 4008 (closes: ${JSON.stringify(t.closed_by_server)})`);
  if (t.missing !== 0) f.push(`${name}: delivered ${t.delivered} of ${t.expected_deliveries} expected (missing ${t.missing})`);
  if (t.gaps || t.repeats || t.wrong_room || t.seq_gaps) f.push(`${name}: order check: gaps ${t.gaps}, repeats ${t.repeats}, wrong room ${t.wrong_room}, seq gaps ${t.seq_gaps}`);
  if (t.unanswered_pubs) f.push(`${name}: ${t.unanswered_pubs} pubs got neither ack nor err (${t.acks} acks, ${t.pub_errors} errs, ${t.sent} sent)`);
  if (t.inflight_after_drain > 0 && mode !== 'open') f.push(`${name}: ${t.inflight_after_drain} own messages never came back within the drain`);
  if (t.unknown_frames || t.bad_frames || t.text_frames) f.push(`${name}: unexpected frames: unknown ${t.unknown_frames}, bad ${t.bad_frames}, text ${t.text_frames}`);
  const other = j.machine?.unattributed_pct_of_core;
  if (other > 20) f.push(`${name}: DISTURBED: other work used ${other}% of a core during the window: its throughput and latency are disturbed (CPU per message less so)`);
  if (j.generator.cpu_pct > 85) f.push(`${name}: the load generator used ${j.generator.cpu_pct}% of its core (the server ${(100 * j.server.cpu_s / Math.max(j.window_s, 1e-9)).toFixed(0)}%): it may be the limit`);
  return f;
}
// ---- perf (optional diagnostics) --------------------------------------------------------------

const PERF_SYSCALLS = ['sendto', 'recvfrom', 'epoll_pwait', 'epoll_wait', 'futex', 'write', 'read'];

function perfReportLines(file, args) {
  const r = spawnSync('perf', ['report', '-i', file, '--stdio', '-g', 'none', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return (r.stdout ?? '').split('\n').filter((l) => /^\s+\d+\.\d+%/.test(l));
}

/** One unmeasured generator run with perf stat (whole server) and perf record (its main thread) attached mid-window. */
async function perfRun(s, sc) {
  const d = Math.max(1, duration - 1.5);
  const dataFile = join(paths.tmp, `perf-${s.name}.data`);
  mkdirSync(dirname(dataFile), { recursive: true });
  const gen = runGenerator(s, sc);
  await sleep((warmup + 1) * 1000);
  const stat = spawn('perf', ['stat', '-x', ',', '-e', PERF_SYSCALLS.map((c) => `syscalls:sys_enter_${c}`).join(','), '-p', String(s.pid), '--', 'sleep', String(d)], { stdio: ['ignore', 'ignore', 'pipe'] });
  const rec = spawn('perf', ['record', '-F', '999', '-g', ...(process.env.PERF_ALL ? ['-p'] : ['-t']), String(s.pid), '-o', dataFile, '--', 'sleep', String(d)], { stdio: ['ignore', 'ignore', 'pipe'] });
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
let waitedTotalMs = 0;
async function quiet() {
  const t0 = Date.now();
  let b = null;
  do {
    b = await machineBusy(500);
    if (b === null || b < 25) break;
  } while (Date.now() - t0 < waitIdle * 1000 && waitedTotalMs + Date.now() - t0 < waitBudgetMs);
  waitedTotalMs += Date.now() - t0;
  return { busyPct: b, waitedMs: Date.now() - t0 };
}

// ---- scenario executors ------------------------------------------------------------------------

const findings = [];
let failed = false;
let scrape = null;

/** GET http://127.0.0.1:port/path -> { status, body } */
function httpGet(port, path) {
  return new Promise((res) => {
    const req = http.get({ host: '127.0.0.1', port, path, timeout: 5000 }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c) => { body += c; });
      r.on('end', () => res({ status: r.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => res({ status: null, body: '', error: e.message }));
  });
}

async function stopAll(scName, servers, out) {
  for (const s of servers) {
    const st = await stopServer(s, 15000);
    const ok = st.code === 0 && !st.killed;
    const warn = s.lines.filter((l) => (/"level":(40|50|60)/.test(l) || /error|warn/i.test(l)) && !(scName === 'stall' && /"event":"slow_consumer"/.test(l)));
    (out[s.name] ??= {}).exits ??= [];
    out[s.name].exits.push({ ...st, logLines: s.lines.length, warnings: warn.length, firstWarnings: warn.slice(0, 5) });
    if (!ok) {
      findings.push(`${scName}/${s.name}: did not exit 0 by itself after SIGTERM (code ${st.code}, signal ${st.signal}, killed ${st.killed})`);
      if (s.peer.shardchat) failed = true;
    }
    if (warn.length) findings.push(`${scName}/${s.name}: ${warn.length} warning/error log lines, first: ${warn[0].slice(0, 300)}`);
  }
}

/** Runs a scenario's body: a runner error becomes a finding (and fails the run); its servers are stopped either way. */
async function guarded(scName, servers, serverInfo, body) {
  try {
    await body();
  } catch (e) {
    failed = true;
    findings.push(`${scName}: runner: ${e.message}`);
    log(`run.mjs: ${e.message}`);
  } finally {
    await stopAll(scName, [...servers.values()], serverInfo);
  }
}

/**
 * Runs arms (each: key, peer = server name, extra generator flags, stall) `n` times, interleaved.
 * fresh: a new server per run (idle memory); otherwise one server per distinct peer, shared by its arms.
 */
async function runArms(scName, sc, arms, { n = runs, fresh = false, times = {}, beforeStop = null, measure = null } = {}) {
  const res = {};
  const serverInfo = {};
  for (const a of arms) res[a.key] = { label: a.label, peer: a.peer, derived: [], runs: [] };
  const servers = new Map();
  await guarded(scName, servers, serverInfo, async () => {
    if (!fresh) for (const a of arms) if (!servers.has(a.peer)) servers.set(a.peer, await startServer(a.peer));
    if (perfMode && sc.kind === 'closed' && scName === scenarioNames.find((x) => SCENARIOS[x].kind === 'closed')) {
      for (const s of servers.values()) {
        progress(`${scName}/${s.name}: extra run with perf attached (not part of the medians)`);
        res[s.name].perf = await perfRun(s, sc);
      }
    }
    for (let r = 0; r < n; r++) {
      // The order changes each run, so that no arm always follows the same one: a server that
      // leaves work behind on the server core (Socket.IO after its run) slowed whichever arm came
      // next by 7-10% (measured), and a plain rotation keeps every arm's predecessor.
      // Williams rows balance who follows whom for an even number of arms; the seeded shuffle on
      // top (per run) keeps an odd number of arms from always running in one rotation.
      for (const a of arms.length % 2 ? shuffled(arms, 7919 * (r + 1) + scenarioNames.indexOf(scName)) : williamsRow(arms, r)) {
        stepNo++;
        const s = fresh ? await startServer(a.peer) : servers.get(a.peer);
        const q = waitIdle > 0 ? await quiet() : null;
        const m0 = measure ? await measure.before(s) : null;
        const g = await runGenerator(s, sc, a.extra ?? [], times);
        const m1 = measure && g.json ? await measure.after(s, m0, g.json) : null;
        if (fresh) await stopAll(scName, [s], serverInfo);
        if (g.json === null) {
          failed = true;
          findings.push(`${scName}/${a.key} run ${r + 1}: the load generator failed (exit ${g.code}): ${g.stderr.split('\n').slice(-3).join(' | ')}`);
          progress(`${scName}/${a.key} run ${r + 1}: FAILED (exit ${g.code})\n${g.stderr}`);
          continue;
        }
        if (g.stderr) for (const l of g.stderr.split('\n').slice(0, 8)) if (!/connections ready/.test(l)) log(`  [loadgen ${a.key}] ${l}`);
        const d = derive(g.json, shardsOf(a.peer));
        d.runId = r; // pairs are matched by this, not by position: a failed run shifts nothing
        if (q) { d.busyBeforeRunPct = q.busyPct; d.waitedForIdleMs = q.waitedMs; }
        if (m1) Object.assign(d, m1);
        res[a.key].runs.push(g.json);
        res[a.key].derived.push(d);
        for (const f of findingsOf(`${scName}/${a.key} run ${r + 1}`, g.json, { stall: a.stall ?? 0, mode: sc.open ? 'open' : sc.kind })) findings.push(f);
        progress(`${scName}/${a.key} run ${r + 1}/${n}: ${describe(sc, d)}`);
      }
    }
    if (beforeStop) await beforeStop(servers);
  });
  for (const a of Object.values(res)) a.summary = summarize(a.derived);
  return { arms: res, servers: serverInfo };
}

/**
 * Row r of a Williams design: 0, 1, n-1, 2, n-2, ... shifted by r (mod n). Over n runs (n even)
 * every arm comes right after every other arm exactly once; fewer runs still vary it.
 */
function williamsRow(arms, r) {
  const n = arms.length;
  const base = [];
  for (let i = 0, lo = 1, hi = n - 1; i < n; i++) base.push(i === 0 ? 0 : i % 2 === 1 ? lo++ : hi--);
  return base.map((x) => arms[(x + r) % n]);
}

/** VmRSS of a process in KiB, or null. */
function rssKb(pid) {
  try { return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN); } catch { return null; }
}
async function rssSettled(pid) {
  await sleep(2000);
  const xs = [];
  for (let i = 0; i < 3; i++) { xs.push(rssKb(pid)); await sleep(300); }
  return median(xs);
}
/** History memory: RSS before the load and 2 s after it, per message the rooms' histories hold. */
function historyMeasure(sc) {
  return {
    before: async (s) => rssSettled(s.pid),
    after: async (s, before, j) => {
      const after = await rssSettled(s.pid);
      // the generator spreads sends evenly over the rooms' senders; a room keeps its last historyLimit
      const stored = sc.rooms * Math.min(sc.historyLimit, Math.floor(j.totals.sent / sc.rooms));
      return { rssBeforeKb: before, rssAfterKb: after, storedMsgs: stored,
        bytesPerStoredMsg: before > 0 && after > 0 && stored > 0 ? ((after - before) * 1024) / stored : null };
    },
  };
}

function describe(sc, d) {
  if (sc.kind === 'history') return `${d.storedMsgs} messages kept, server RSS ${f1(d.rssBeforeKb / 1024, 1)} -> ${f1(d.rssAfterKb / 1024, 1)} MB: ${f1(d.bytesPerStoredMsg, 0)} B per stored message`;
  if (sc.kind === 'idle') return `${d.connections} connections in ${f1(d.setupS, 2)} s, server RSS ${f1(d.rssBeforeKb / 1024, 1)} -> ${f1(d.rssAfterKb / 1024, 1)} MB: ${f1(d.kbPerIdleConn, 2)} KB per connection`;
  if (sc.kind === 'churn') return `${f1(d.cyclesPerSec, 0)} connect+close cycles/s, connect-to-ready p50 ${f1(d.p50ms, 2)} ms, p99 ${f1(d.p99ms, 2)} ms, server ${f1(d.serverCpuPct, 0)}% CPU`;
  return `${kps(d.deliveredPerSec)} delivered/s${d.offeredPerSec ? ` of ${kps(d.offeredPerSec)} offered` : ''}, p50 ${f1(d.p50ms, 2)} ms, p99 ${f1(d.p99ms, 2)} ms, ` +
    `server ${f1(d.serverCpuMsPer1k, 3)} ms CPU/1k, generator ${f1(d.genCpuPct, 0)}% CPU, other ${f1(d.otherCpuPct, 0)}%`;
}

function summarize(derived) {
  const m = {};
  const keys = derived.length ? Object.keys(derived[0]) : [];
  for (const k of keys) m[k] = median(derived.map((d) => d[k]));
  m.runs = derived.length;
  m.deliveredPerSecRuns = derived.map((d) => Math.round(d.deliveredPerSec));
  m.errorsSum = derived.reduce((a, d) => a + d.errors, 0);
  m.closesSum = derived.reduce((a, d) => a + d.closes, 0);
  m.missingSum = derived.reduce((a, d) => a + d.missing, 0);
  m.orderSum = derived.reduce((a, d) => a + d.gaps, 0);
  m.maxOtherCpuPct = derived.reduce((a, d) => Math.max(a, d.otherCpuPct ?? 0), 0);
  m.generatorBoundRuns = derived.reduce((a, d) => a + (d.generatorBound ?? 0), 0);
  return m;
}

/** B relative to A: ratios of the medians, and the median of the ratios of the interleaved pairs. */
function ratiosOf(arms, b, a) {
  const A = arms[a]?.summary;
  const B = arms[b]?.summary;
  if (!A || !B || !A.runs || !B.runs) return null;
  const pairsOf = (k) => pairByRunId(arms[b].derived.map((d) => ({ runId: d.runId, value: d[k] })), arms[a].derived.map((d) => ({ runId: d.runId, value: d[k] })));
  const pairs = (k) => median(pairsOf(k).map((x) => x.ratio));
  const ci = (k) => pairedRatioInterval(pairsOf(k));
  return {
    of: b, to: a,
    pairsMatched: pairsOf('deliveredPerSec').length,
    generatorBound: [...arms[b].derived, ...arms[a].derived].some((d) => d.generatorBound) ? 1 : 0,
    ci: { throughput: ci('deliveredPerSec'), p50: ci('p50ms'), p99: ci('p99ms'), serverCpuPerMsg: ci('serverCpuMsPer1k'), mainThreadCpuPerMsg: ci('mainCpuMsPer1k'),
      cyclesPerSec: ci('cyclesPerSec'), kbPerIdleConn: ci('kbPerIdleConn'), bytesPerStoredMsg: ci('bytesPerStoredMsg') },
    throughput: ratio(B.deliveredPerSec, A.deliveredPerSec),
    throughputPerPairMedian: pairs('deliveredPerSec'),
    p50: ratio(B.p50ms, A.p50ms),
    p99: ratio(B.p99ms, A.p99ms),
    serverCpuPerMsg: ratio(B.serverCpuMsPer1k, A.serverCpuMsPer1k),
    serverCpuPerMsgPerPairMedian: pairs('serverCpuMsPer1k'),
    mainThreadCpuPerMsg: ratio(B.mainCpuMsPer1k, A.mainCpuMsPer1k),
    cyclesPerSec: ratio(B.cyclesPerSec, A.cyclesPerSec),
    kbPerIdleConn: ratio(B.kbPerIdleConn, A.kbPerIdleConn),
  };
}

function closedRatios(arms) {
  const keys = Object.keys(arms);
  const out = [];
  const isSc = (k) => peerDef(arms[k].peer)?.shardchat;
  for (const b of keys.filter(isSc)) {
    for (const a of keys.filter((k) => !isSc(k) && !peerDef(arms[k].peer)?.aaOf)) { const r = ratiosOf(arms, b, a); if (r) out.push(r); }
  }
  // The durable engine against the memory one, and against another build of itself (before/after).
  for (const [b, a] of [['shardchat-sqlite', 'shardchat'], ['shardchat-sqlite', 'shardchat-sqlite-base'], ['shardchat-sqlite-base', 'shardchat']]) {
    if (arms[b] && arms[a]) { const r = ratiosOf(arms, b, a); if (r) out.push(r); }
  }
  return out;
}
/** The A/A arm: the same server twice (uws-protocol-aa, else uws-plain-aa); its interval is the noise floor. */
const aaRatio = (arms) => {
  for (const k of ['uws-protocol-aa', 'uws-plain-aa']) if (arms[k] && arms[peerDef(k).aaOf]) return ratiosOf(arms, k, peerDef(k).aaOf);
  return null;
};
const metricsRatio = (arms) => (arms.shardchat && arms['shardchat-nometrics'] ? ratiosOf(arms, 'shardchat', 'shardchat-nometrics') : null);

// ---- sweep -------------------------------------------------------------------------------------

/**
 * The open-loop rate sweep: every (peer, offered rate) point is run alike, `sweepRuns` times, in
 * an order shuffled per run (seeded), so drift on the machine hits every point and peer alike. A
 * point is saturated by delivery and CPU, not by a latency bound: delivered < 97% of sent x members, sends
 * skipped (a sender's output over 128 KiB or > 50 ms behind schedule), or the server at >= 95% of
 * its core. A point where the generator was at its own limit is marked generator-bound. A peer's
 * saturation point is the highest offered rate below its first saturated one. Latency is compared
 * at fixed offered rates (the open-* scenarios), not at a fraction of someone's saturation.
 */
async function runSweep(scName, sc, peers) {
  const points = Object.fromEntries(peers.map((p) => [p, []]));
  const servers = new Map();
  const serverInfo = {};
  const saturation = {};
  await guarded(scName, servers, serverInfo, async () => {
    for (const p of peers) servers.set(p, await startServer(p));
    const cells = peers.flatMap((p) => sweepRates.map((rate) => ({ p, rate })));
    const byCell = new Map(cells.map((c) => [`${c.p}@${c.rate}`, []]));
    for (let r = 0; r < sweepRuns; r++) {
      for (const c of shuffled(cells, 104729 * (r + 1))) {
        stepNo++;
        const q = waitIdle > 0 ? await quiet() : null;
        const g = await runGenerator(servers.get(c.p), sc, ['--rate', String(c.rate / sc.members), '--drain', '3'], { warmup: sweepWarmup, duration: sweepDuration });
        if (g.json === null) { findings.push(`${scName}/${c.p} at ${kps(c.rate)}/s run ${r + 1}: the load generator failed (exit ${g.code})`); continue; }
        const d = derive(g.json, shardsOf(c.p));
        d.runId = r;
        d.setupOk = g.json.setup_ok ? 1 : 0;
        if (q) d.busyBeforeRunPct = q.busyPct;
        if ((d.otherCpuPct ?? 0) > 20) findings.push(`${scName}/${c.p} at ${kps(c.rate)}/s: DISTURBED (other work ${d.otherCpuPct}% of a core)`);
        byCell.get(`${c.p}@${c.rate}`).push(d);
        progress(`${scName}/${c.p} offered ${kps(c.rate)}/s run ${r + 1}/${sweepRuns}: ${describe(sc, d)}`);
      }
    }
    for (const p of peers) {
      let open = true;
      for (const rate of sweepRates) {
        const runsHere = byCell.get(`${p}@${rate}`);
        if (!runsHere.length) { open = false; continue; }
        const m = summarize(runsHere);
        const why = [];
        if (runsHere.some((d) => !d.setupOk)) why.push('setup');
        if (m.skipped > 0) why.push(`${m.skipped} sends skipped`);
        // the server's share: what it delivered of what the generator sent; the generator's
        // share: whether it sent what was offered (if not, the point is generator-bound)
        if (m.deliveredPerSec < 0.97 * m.sentPerSec * sc.members) why.push('delivered < 97% of sent x members');
        if (pin && m.serverCpuPct >= 95) why.push(`server at ${f1(m.serverCpuPct, 0)}% of its core`);
        if (m.errorsSum > 0) why.push(`${m.errorsSum} err`);
        const genBound = m.generatorBoundRuns > 0 || m.sentPerSec < 0.97 * (rate / sc.members);
        const ok = why.length === 0 && !genBound;
        points[p].push({ offeredPerSec: rate, ok, generatorBound: genBound, why, attempts: runsHere.length, p99msRuns: runsHere.map((x) => x.p99ms), derived: runsHere, ...m });
        if (!ok) open = false;
        if (open) saturation[p] = rate;
      }
    }
  });
  return { points, saturation, servers: serverInfo };
}

/** Hand-written SVG: delivered vs offered and p99 vs offered (log axes), one line per peer. */
function sweepSvg(sw, title) {
  const W = 960, H = 420, m = { l: 70, r: 20, t: 50, b: 60 }, gap = 80;
  const pw = (W - m.l - m.r - gap) / 2, ph = H - m.t - m.b;
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2'];
  const all = Object.values(sw.points).flat();
  if (!all.length) return null;
  const xs = all.map((p) => p.offeredPerSec);
  const xmin = Math.min(...xs) / 1.2, xmax = Math.max(...xs) * 1.2;
  const ymaxT = Math.max(xmax, ...all.map((p) => p.deliveredPerSec || 1)) ;
  const lat = all.map((p) => p.p99ms).filter((v) => v > 0);
  const lmin = Math.max(0.05, Math.min(...lat) / 1.5), lmax = Math.max(...lat) * 1.5;
  const lx = (v, x0) => x0 + (Math.log10(v / xmin) / Math.log10(xmax / xmin)) * pw;
  const ly = (v, lo, hi) => m.t + ph - (Math.log10(Math.max(v, lo) / lo) / Math.log10(hi / lo)) * ph;
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const o = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`);
  const ticks = (lo, hi) => { const t = []; for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) for (const k of [1, 2, 5]) { const v = k * 10 ** e; if (v >= lo && v <= hi) t.push(v); } return t; };
  const fmt = (v) => (v >= 1e6 ? `${v / 1e6}M` : v >= 1e3 ? `${v / 1e3}k` : `${v}`);
  const panels = [
    { x0: m.l, name: 'delivered msgs/s', lo: xmin, hi: ymaxT * 1.2, val: (p) => p.deliveredPerSec, diag: true },
    { x0: m.l + pw + gap, name: 'p99 latency, ms', lo: lmin, hi: lmax, val: (p) => p.p99ms, bound: null },
  ];
  for (const P of panels) {
    o.push(`<rect x="${P.x0}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
    for (const t of ticks(xmin, xmax)) { const x = lx(t, P.x0); o.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + ph}" stroke="#eee"/><text x="${x}" y="${m.t + ph + 15}" text-anchor="middle">${fmt(t)}</text>`); }
    for (const t of ticks(P.lo, P.hi)) { const y = ly(t, P.lo, P.hi); o.push(`<line x1="${P.x0}" y1="${y}" x2="${P.x0 + pw}" y2="${y}" stroke="#eee"/><text x="${P.x0 - 5}" y="${y + 4}" text-anchor="end">${fmt(t)}</text>`); }
    o.push(`<text x="${P.x0 + pw / 2}" y="${m.t + ph + 35}" text-anchor="middle">offered deliveries/s (log)</text>`);
    o.push(`<text x="${P.x0 - 50}" y="${m.t + ph / 2}" text-anchor="middle" transform="rotate(-90 ${P.x0 - 50} ${m.t + ph / 2})">${P.name} (log)</text>`);
    if (P.diag) o.push(`<line x1="${lx(xmin, P.x0)}" y1="${ly(xmin, P.lo, P.hi)}" x2="${lx(xmax, P.x0)}" y2="${ly(xmax, P.lo, P.hi)}" stroke="#999" stroke-dasharray="4 4"/>`);
    if (P.bound) { const y = ly(P.bound, P.lo, P.hi); o.push(`<line x1="${P.x0}" y1="${y}" x2="${P.x0 + pw}" y2="${y}" stroke="#999" stroke-dasharray="4 4"/><text x="${P.x0 + pw - 4}" y="${y - 4}" text-anchor="end" fill="#666">bound ${P.bound} ms</text>`); }
    Object.entries(sw.points).forEach(([, pts], i) => {
      const c = colors[i % colors.length];
      const xy = pts.filter((p) => P.val(p) > 0).map((p) => [lx(p.offeredPerSec, P.x0), ly(P.val(p), P.lo, P.hi), p.ok]);
      if (xy.length) o.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`);
      for (const [x, y, ok] of xy) o.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${ok ? c : 'white'}" stroke="${c}"/>`);
    });
  }
  Object.keys(sw.points).forEach((peer, i) => {
    const x = m.l + i * 190;
    o.push(`<rect x="${x}" y="${H - 18}" width="12" height="12" fill="${colors[i % colors.length]}"/><text x="${x + 16}" y="${H - 8}">${esc(peerDef(peer).label)}${sw.saturation[peer] ? ` (sat. ${fmt(sw.saturation[peer])})` : ''}</text>`);
  });
  o.push(`<text x="${W - m.r}" y="${H - 8}" text-anchor="end" fill="#666">hollow: saturated point</text>`);
  o.push('</svg>');
  return `${o.join('\n')}\n`;
}

// ---- run the suite -----------------------------------------------------------------------------

const busyBefore = await machineBusy(1000);
if (busyBefore !== null && busyBefore > 20) log(`note: the machine was ${busyBefore.toFixed(0)}% of a core busy before the benchmark started (other work): expect noise`);
const commit = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).stdout?.trim() || null;
const dirty = (spawnSync('git', ['status', '--porcelain', '--', 'engine', 'workers'], { cwd: root, encoding: 'utf8' }).stdout ?? '').trim() !== '';
// planned steps, for the progress display
for (const name of scenarioNames) {
  const sc = SCENARIOS[name];
  const np = peersOf(name).length;
  stepTotal += sc.kind === 'open' ? np * sweepRates.length * sweepRuns : sc.kind === 'stall' ? 2 * runs : np * runs;
}
progress(`scenarios ${scenarioNames.join(', ')}; ${runs} runs per arm; ${pinNote}; at most ${stepTotal} generator runs`);

const scenarioResults = {};
for (const name of scenarioNames) {
  const sc = { ...SCENARIOS[name] };
  const peers = peersOf(name);
  progress(`== ${name}: ${sc.about}; peers ${peers.join(', ')}`);
  if (sc.kind === 'closed') {
    const openExtra = sc.open ? ['--rate', String(sc.rate / sc.members), '--drain', '3'] : [];
    const arms = peers.map((p) => ({ key: p, peer: p, label: peerDef(p).label, extra: openExtra }));
    const beforeStop = async (servers) => {
      const s = servers.get('shardchat');
      if (!s || scrape || name !== 'fanout-10x100') return;
      const r = await httpGet(s.port, '/metrics');
      scrape = { scenario: name, status: r.status, bytes: r.body.length, error: r.error };
      if (r.status === 200) { mkdirSync(paths.local, { recursive: true }); writeFileSync(paths.scrape, r.body); }
      else findings.push(`${name}/shardchat: GET /metrics answered ${r.status ?? r.error}`);
    };
    const r = await runArms(name, sc, arms, { beforeStop });
    scenarioResults[name] = { kind: sc.kind, params: sc, ...r, ratios: closedRatios(r.arms), aa: aaRatio(r.arms), metricsOverhead: metricsRatio(r.arms) };
  } else if (sc.kind === 'churn') {
    const arms = peers.map((p) => ({ key: p, peer: p, label: peerDef(p).label, extra: ['--churn', '1'] }));
    const r = await runArms(name, sc, arms, { times: { warmup: 1, duration: Math.min(duration, 4) } });
    scenarioResults[name] = { kind: sc.kind, params: sc, ...r, ratios: closedRatios(r.arms) };
  } else if (sc.kind === 'idle') {
    sc.rooms = Math.ceil(idleConns / sc.members);
    const arms = peers.map((p) => ({ key: p, peer: p, label: peerDef(p).label, extra: ['--idle-hold', '2', '--connect-inflight', '256', '--setup-timeout', '60'] }));
    const r = await runArms(name, sc, arms, { fresh: true });
    scenarioResults[name] = { kind: sc.kind, params: sc, ...r, ratios: closedRatios(r.arms) };
  } else if (sc.kind === 'history') {
    const arms = peers.map((p) => ({ key: p, peer: p, label: peerDef(p).label }));
    const r = await runArms(name, sc, arms, { fresh: true, times: { warmup: 0.5, duration: Math.max(duration, 3) }, measure: historyMeasure(sc) });
    scenarioResults[name] = { kind: 'history', params: sc, ...r, ratios: closedRatios(r.arms) };
  } else if (sc.kind === 'stall') {
    const arms = peers.flatMap((p) => [
      { key: p, peer: p, label: `${peerDef(p).label}, no stalled member` },
      { key: `${p}+stalled`, peer: p, label: `${peerDef(p).label}, 1 stalled member`, extra: ['--stall', '1'], stall: 1 },
    ]);
    const r = await runArms(name, sc, arms);
    const stallRatios = peers.map((p) => ratiosOf(r.arms, `${p}+stalled`, p)).filter(Boolean);
    scenarioResults[name] = { kind: sc.kind, params: sc, ...r, ratios: stallRatios };
  } else if (sc.kind === 'open') {
    const r = await runSweep(name, sc, peers);
    scenarioResults[name] = { kind: sc.kind, params: sc, ...r };
    const svg = sweepSvg(r, `shardchat sweep: fanout-10x100 open loop, ${new Date().toISOString().slice(0, 16)}Z, commit ${commit ?? '?'}`);
    if (svg) { mkdirSync(paths.local, { recursive: true }); writeFileSync(paths.sweepSvg, svg); }
  }
}

// ---- tables ------------------------------------------------------------------------------------

const md = [];
const rx = (x) => (x === null || x === undefined ? 'n/a' : `${x.toFixed(2)}x`);
md.push(`## shardchat load benchmarks (${mode})`);
md.push('');
md.push(`${new Date().toISOString()}; ${pinNote}; ${os.cpus()[0]?.model?.trim() ?? 'cpu?'}, ${ncpu} cores, Node ${process.versions.node}; commit ${commit ?? '?'}${dirty ? ' + uncommitted engine changes' : ''}; ` +
  `machine ${busyBefore === null ? '?' : busyBefore.toFixed(0)}% of a core busy before the start. Medians of ${runs} runs per arm, arms interleaved, in an order that changes each run (a Williams design for an even number of arms, a seeded shuffle for an odd one: no arm always follows the same one). Ratios: medians of run-id-paired ratios with bootstrap 95% intervals; a verdict needs 5 pairs. ` +
  `"other CPU %" above ~20 marks a disturbed run.`);
for (const [name, r] of Object.entries(scenarioResults)) {
  const sc = r.params;
  md.push('');
  if (r.kind === 'closed' || r.kind === 'stall') {
    md.push(`### ${name}: ${sc.about}${r.kind === 'closed' && !sc.open ? `, window ${sc.window ?? window}/sender` : ''} (${warmup} s warmup + ${duration} s window)`);
    md.push('');
    md.push('| arm | delivered msgs/s | runs (k/s) | p50 ms | p99 ms | server CPU ms / 1k msgs | main thread CPU ms / 1k msgs | shard(s) CPU ms / 1k msgs | server CPU % | generator CPU % | other CPU % (max) | err / closes / missing / order |');
    md.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const a of Object.values(r.arms)) {
      const m = a.summary;
      md.push(`| ${a.label} | ${kps(m.deliveredPerSec)} | ${m.deliveredPerSecRuns.map((x) => (x / 1e3).toFixed(0)).join(' / ')} | ${f1(m.p50ms, 2)} | ${f1(m.p99ms, 2)} | ` +
        `${f1(m.serverCpuMsPer1k, 3)} | ${f1(m.mainCpuMsPer1k, 3)} | ${m.shardCpuMsPer1k === null ? '-' : f1(m.shardCpuMsPer1k, 3)} | ${f1(m.serverCpuPct, 0)} | ${f1(m.genCpuPct, 0)}${m.generatorBoundRuns ? ` (${m.generatorBoundRuns} at its limit)` : ''} | ${f1(m.otherCpuPct, 0)} (${f1(m.maxOtherCpuPct, 0)}) | ${m.errorsSum} / ${m.closesSum} / ${m.missingSum} / ${m.orderSum} |`);
    }
    const lab = (k) => r.arms[k]?.label ?? k;
    const ratioRow = (x, title) => `| **${title}**${x.generatorBound ? ' (generator-bound: no verdict)' : ''} | **${fmtInterval(x.ci?.throughput)}** | median of ratios ${rx(x.throughput)}; ${x.pairsMatched} pairs | ${fmtInterval(x.ci?.p50)} | ${fmtInterval(x.ci?.p99)} | ${fmtInterval(x.ci?.serverCpuPerMsg)} | ${fmtInterval(x.ci?.mainThreadCpuPerMsg)} | | | | | |`;
    for (const x of r.ratios ?? []) md.push(ratioRow(x, r.kind === 'stall' ? `${lab(x.to)}: with / without the stalled member` : `${lab(x.of)} / ${lab(x.to)}`));
    if (r.aa) md.push(ratioRow(r.aa, `noise floor: A/A, ${lab(r.aa.of)} / ${lab(r.aa.to)}`));
    if (r.metricsOverhead) md.push(ratioRow(r.metricsOverhead, 'metrics on / off (shardchat)'));
    md.push('');
    md.push('Ratio rows: the median of the paired ratios (pairs matched by run id) and its bootstrap 95% interval [lo, hi].');
    const scArm = r.arms.shardchat?.summary;
    if (scArm && scArm.mainCpuMsPer1k > 0 && scArm.shardCpuMsPer1k !== null && r.kind === 'closed') {
      const cost = { mainUs: scArm.mainCpuMsPer1k, shardUs: scArm.shardCpuMsPer1k, rooms: sc.rooms };
      md.push('');
      md.push(`Derived from shardchat's CPU per delivery here (main ${f1(cost.mainUs, 3)} us, shard ${f1(cost.shardUs, 3)} us; ${sc.rooms} room(s) spread evenly): what N shards on N+1 cores should reach.`);
      md.push('');
      const measured = Object.fromEntries(Object.values(r.arms).filter((a) => peerDef(a.peer)?.shardchat && !a.peer.includes('nometrics') && !peerDef(a.peer).durable).map((a) => [shardsOf(a.peer), a.summary.deliveredPerSec]));
      // pinned: the server has core 0; unpinned: every core but the one the generator keeps busy
      for (const row of scaleTable(cost, Math.max(4, scaleMax), pin ? 1 : Math.max(1, ncpu - 1), measured)) md.push(row);
      r.derivedScale = Object.fromEntries([1, 2, 4, 8].map((n) => [n, deriveScale(cost, n, n + 1)]));
    }
  } else if (r.kind === 'history') {
    md.push(`### ${name}: ${sc.about} (a fresh server per run; RSS sampled 2 s after start and 2 s after the load, median of 3)`);
    md.push('');
    md.push('| peer | messages kept | server RSS before, MB | after, MB | bytes per stored message | runs |');
    md.push('|---|---|---|---|---|---|');
    for (const a of Object.values(r.arms)) {
      const m = a.summary;
      md.push(`| ${a.label} | ${f1(m.storedMsgs, 0)} | ${f1(m.rssBeforeKb / 1024, 1)} | ${f1(m.rssAfterKb / 1024, 1)} | ${f1(m.bytesPerStoredMsg, 0)} | ${a.derived.map((d) => f1(d.bytesPerStoredMsg, 0)).join(' / ')} |`);
    }
    for (const x of r.ratios ?? []) md.push(`\n${r.arms[x.of]?.label} / ${r.arms[x.to]?.label}: bytes per stored message ${fmtInterval(x.ci?.bytesPerStoredMsg)}`);
  } else if (r.kind === 'idle') {
    md.push(`### ${name}: ${sc.about.replace('10,000', idleConns.toLocaleString('en'))}`);
    md.push('');
    md.push('| peer | connections | time to open, s | server RSS before, MB | after, MB | KB per idle connection | vs plain uWS |');
    md.push('|---|---|---|---|---|---|---|');
    const base = r.arms['uws-plain']?.summary?.kbPerIdleConn;
    for (const a of Object.values(r.arms)) {
      const m = a.summary;
      md.push(`| ${a.label} | ${f1(m.connections, 0)} | ${f1(m.setupS, 2)} | ${f1(m.rssBeforeKb / 1024, 1)} | ${f1(m.rssAfterKb / 1024, 1)} | ${f1(m.kbPerIdleConn, 2)} | ${base && a.peer !== 'uws-plain' ? `${m.kbPerIdleConn - base >= 0 ? '+' : ''}${f1(m.kbPerIdleConn - base, 2)} KB (${rx(ratio(m.kbPerIdleConn, base))})` : ''} |`);
    }
  } else if (r.kind === 'churn') {
    md.push(`### ${name}: ${sc.about}`);
    md.push('');
    md.push('| peer | connect+close cycles/s | runs | connect-to-ready p50 ms | p99 ms | server CPU % | closes by server / failures | vs shardchat |');
    md.push('|---|---|---|---|---|---|---|---|');
    const sc0 = r.arms.shardchat?.summary?.cyclesPerSec;
    for (const a of Object.values(r.arms)) {
      const m = a.summary;
      md.push(`| ${a.label} | ${f1(m.cyclesPerSec, 0)} | ${a.derived.map((d) => f1(d.cyclesPerSec, 0)).join(' / ')} | ${f1(m.p50ms, 2)} | ${f1(m.p99ms, 2)} | ${f1(m.serverCpuPct, 0)} | ${m.closesSum} / ${a.runs.reduce((x, j) => x + j.totals.conn_failures, 0)} | ${a.peer !== 'shardchat' && sc0 ? `shardchat ${rx(ratio(sc0, m.cyclesPerSec))}` : ''} |`);
    }
  } else if (r.kind === 'open') {
    md.push(`### ${name}: ${sc.about} (${sweepWarmup} s warmup + ${sweepDuration} s window per point; every point run ${sweepRuns} times, in an order shuffled per run; saturated = delivered < 97% of sent x members, sends skipped, or the server at >= 95% of its core; "gen" = the generator was at its own limit or sent < 97% of the offered rate: no verdict)`);
    md.push('');
    md.push(`| peer | saturation (highest offered rate below the first saturated point) | ${sweepRates.map(kps).join(' | ')} |`);
    md.push(`|---|---|${sweepRates.map(() => '---').join('|')}|`);
    for (const [p, pts] of Object.entries(r.points)) {
      md.push(`| ${peerDef(p).label} | ${r.saturation[p] ? kps(r.saturation[p]) : 'below the lowest rate'} | ${sweepRates.map((rate) => { const q = pts.find((x) => x.offeredPerSec === rate); return q ? `${q.generatorBound ? 'gen ' : q.ok ? '' : '✗ '}${kps(q.deliveredPerSec)}, p99 ${f1(q.p99ms, 1)}, CPU ${f1(q.serverCpuPct, 0)}%` : ''; }).join(' | ')} |`);
    }
  }
}

// ---- targets -----------------------------------------------------------------------------------
// Each target's verdict comes from the bootstrap 95% interval of the paired ratios (stats.mjs):
// "met" only when the whole interval clears the limit; a ratio whose runs had the generator at
// its own limit gets no verdict.

const targets = [];
/** dir '>=' or '<=': the ratio must be at least / at most limit. */
function target(name, x, key, limit, dir, note = '') {
  const ci = x?.ci?.[key] ?? null;
  const v = verdictOf(ci, limit, dir, { generatorBound: !!x?.generatorBound });
  targets.push({ name, value: ci?.point ?? null, lo: ci?.lo ?? null, hi: ci?.hi ?? null, n: ci?.n ?? 0, limit: `${dir} ${limit}x`, verdict: v.verdict, runsNeeded: v.runsNeeded, tooFew: !!v.tooFew, note });
}
const rto = (scName, of, to) => scenarioResults[scName]?.ratios?.find((x) => x.of === of && x.to === to) ?? null;
for (const name of scenarioNames) {
  const sc = SCENARIOS[name];
  const r = scenarioResults[name];
  if (!r || sc.kind !== 'closed') continue;
  const aa = r.aa ? ` (A/A ${fmtInterval(r.aa.ci?.throughput)})` : '';
  if (sc.target) target(`${name}: throughput, shardchat / same protocol 1 thread`, rto(name, 'shardchat', 'uws-protocol'), 'throughput', sc.target, '>=', aa);
  if (sc.p99Target) target(`${name}: p99, shardchat / same protocol 1 thread`, rto(name, 'shardchat', 'uws-protocol'), 'p99', sc.p99Target, '<=', r.aa ? ` (A/A ${fmtInterval(r.aa.ci?.p99)})` : '');
  if (rto(name, 'shardchat-sqlite', 'uws-protocol-sqlite')) target(`${name}: durable throughput, shardchat --store sqlite / same protocol + SQLite inline`, rto(name, 'shardchat-sqlite', 'uws-protocol-sqlite'), 'throughput', 1, '>=');
}
{
  const f = 'fanout-10x100';
  const aa = scenarioResults[f]?.aa;
  // only the targets whose arms this run had (a subset run reports no "not measured" rows for them)
  const had = (k) => !!scenarioResults[f]?.arms?.[k];
  if (had('uws-plain')) target(`${f}: main-thread CPU per delivery, shardchat / plain uWS`, rto(f, 'shardchat', 'uws-plain'), 'mainThreadCpuPerMsg', 1.1, '<=', aa ? ` (A/A ${fmtInterval(aa.ci?.mainThreadCpuPerMsg)})` : '');
  if (had('ws-rooms')) target(`${f}: throughput, shardchat / ws`, rto(f, 'shardchat', 'ws-rooms'), 'throughput', 10, '>=');
  if (had('socketio-rooms')) target(`${f}: throughput, shardchat / Socket.IO`, rto(f, 'shardchat', 'socketio-rooms'), 'throughput', 10, '>=');
  // metrics cost < 3%  <=>  throughput(metrics on) / throughput(off) > 0.97
  if (had('shardchat-nometrics')) target(`${f}: metrics cost, throughput metrics on / --metrics false (cost < 3%)`, scenarioResults[f]?.metricsOverhead, 'throughput', 0.97, '>=');
  const id = scenarioResults.idle?.arms?.shardchat?.derived;
  if (id?.length) {
    // no more than today's 1,348 bytes per idle connection (issue 15): an interval of the runs' values
    const ci = pairedRatioInterval(id.map((d) => ({ runId: d.runId, a: 1, b: d.kbPerIdleConn, ratio: d.kbPerIdleConn })));
    const v = verdictOf(ci, 1.348, '<=');
    targets.push({ name: 'idle: KB per idle connection, shardchat (<= 1.348 KB, today\'s)', value: ci?.point ?? null, lo: ci?.lo ?? null, hi: ci?.hi ?? null, n: ci?.n ?? 0, limit: '<= 1.348 KB', verdict: v.verdict, runsNeeded: v.runsNeeded, tooFew: !!v.tooFew, note: '', kb: true });
  }
  const hs = scenarioResults['history-200x1'];
  if (hs) {
    const x = rto('history-200x1', 'shardchat', 'uws-protocol');
    const ci = x?.ci?.bytesPerStoredMsg ?? null;
    const v = verdictOf(ci, 1, '<=');
    targets.push({ name: 'history-200x1: memory per stored message, shardchat / same protocol 1 thread', value: ci?.point ?? null, lo: ci?.lo ?? null, hi: ci?.hi ?? null, n: ci?.n ?? 0, limit: '<= 1x', verdict: v.verdict, runsNeeded: v.runsNeeded, tooFew: !!v.tooFew, note: '' });
  }
  const fx = (name, x) => { if (x) targets.push({ name, value: x.point, lo: x.lo, hi: x.hi, n: x.n, limit: '-', verdict: 'noise floor', runsNeeded: null, note: '' }); };
  for (const n of scenarioNames) fx(`${n}: A/A throughput (noise floor)`, scenarioResults[n]?.aa?.ci?.throughput);
}
md.push('');
md.push('### Targets (this run; value = median of the paired ratios, [95% bootstrap interval])');
md.push('');
md.push('| target | value [95% interval] | limit | verdict | runs that would decide it |');
md.push('|---|---|---|---|---|');
for (const t of targets) {
  const f2 = (x) => (x === null || x === undefined ? '?' : t.kb ? x.toFixed(3) : x.toFixed(2));
  const v = t.value === null ? 'not measured' : `${f2(t.value)}${t.kb ? ' KB' : 'x'}${t.lo === null ? ` (${t.n} run)` : ` [${f2(t.lo)}, ${f2(t.hi)}]`}`;
  const verdict = t.verdict === 'met' ? 'met' : t.verdict === 'not met' ? '**not met**' : t.verdict;
  md.push(`| ${t.name} | ${v}${t.note ?? ''} | ${t.limit} | ${verdict} | ${t.verdict !== 'inconclusive' ? '' : t.tooFew ? `at least ${t.runsNeeded} pairs (this run: ${t.n})` : t.runsNeeded === null ? 'none: the point sits on the limit' : `about ${t.runsNeeded} pairs`} |`);
}
if (scrape) md.push(`\n/metrics scrape of shardchat after ${scrape.scenario}: HTTP ${scrape.status}, ${scrape.bytes} bytes -> native-bench/results/sample-scrape.txt`);
md.push('');
md.push(findings.length ? `Findings:\n${findings.map((f) => `- ${f}`).join('\n')}` : 'Findings: none (no errors, no closes, every message delivered to every member in order, no disturbed run).');
const table = md.join('\n');

// ---- output ------------------------------------------------------------------------------------

const strip = (arms) => Object.fromEntries(Object.entries(arms ?? {}).map(([k, a]) => [k, { label: a.label, peer: a.peer, summary: a.summary, derived: a.derived, runs: a.runs, perf: a.perf }]));
const out = {
  schema: 'shardchat-load-bench/3',
  mode,
  date: new Date().toISOString(), elapsedS: (Date.now() - t0Suite) / 1000, commit, engineDirty: dirty,
  machine: { cpu: os.cpus()[0]?.model?.trim(), cores: ncpu, node: process.versions.node, platform: `${process.platform}-${process.arch}`, loadavg: os.loadavg(), busyBeforePctOfCore: busyBefore, pinning: pinNote },
  settings: { quick, runs, warmupS: warmup, durationS: duration, sweepWarmupS: sweepWarmup, sweepDurationS: sweepDuration, window, generatorThreads: genThreads, waitIdleS: waitIdle, sweepRates, sweepRuns, idleConns, scale: scaleMax || null, reference, shards: [1, ...shardCounts], scenarios: scenarioNames, peers: peerOverride, cpuProf, perf: perfMode },
  scenarios: Object.fromEntries(Object.entries(scenarioResults).map(([k, r]) => [k, r.kind === 'open'
    ? { kind: r.kind, params: r.params, saturation: r.saturation, points: r.points, servers: r.servers }
    : { kind: r.kind, params: r.params, arms: strip(r.arms), ratios: r.ratios, aa: r.aa ?? null, metricsOverhead: r.metricsOverhead ?? null, derivedScale: r.derivedScale ?? null, servers: r.servers }])),
  targets, scrape, findings, failed,
  table,
};
const machineNote = `Machine: ${out.machine.cpu ?? 'cpu?'}, ${ncpu} cores, ${Math.round(os.totalmem() / 2 ** 20)} MiB, ${os.type()} ${os.release()}, Node ${process.versions.node}; ${pinNote}; ` +
  `${busyBefore === null ? '?' : busyBefore.toFixed(0)}% of a core busy before the start; commit ${commit ?? '?'}${dirty ? ' + uncommitted engine changes' : ''}; \`${process.argv.slice(2).join(' ') || '(no flags)'}\`.`;
const written = writeResults(paths, out, table, { outFile, reference, machineNote });
process.stdout.write(`\n${table}\n\nwrote ${written.map((f) => relative(root, f)).join(', ')}${scenarioResults.sweep ? `, ${relative(root, paths.sweepSvg)}` : ''} in ${out.elapsedS.toFixed(0)} s\n`);

if (perfMode) {
  for (const r of Object.values(scenarioResults)) {
    for (const [name, a] of Object.entries(r.arms ?? {})) {
      const p = a.perf;
      if (!p) continue;
      process.stdout.write(`\nperf, ${name} (${p.seconds} s of an extra run at ${kps(p.deliveredPerSec)} delivered/s; ${p.file}):\n` +
        `  syscalls/s: ${Object.entries(p.syscallsPerSec).map(([k, v]) => `${k} ${v}`).join(', ')}; deliveries per sendto: ${f1(p.deliveriesPerSendto, 1)}\n` +
        `  main thread by object: ${(p.mainThreadByDso ?? []).join(' | ')}\n` +
        `  main thread, inclusive:\n${(p.mainThreadInclusive ?? []).map((l) => `    ${l}`).join('\n')}\n` +
        `  main thread, top self:\n${(p.mainThreadTopSelf ?? []).map((l) => `    ${l}`).join('\n')}\n`);
    }
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
