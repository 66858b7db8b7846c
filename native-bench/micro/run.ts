/**
 * shardchat micro benchmarks: `npm run bench:micro` (see native-bench/README.md).
 *
 * One run measures, on this machine and across real threads:
 *  1. messages/s main -> worker for 64 B, 256 B and 4 KiB records: the SAB ring (publish once per
 *     64 records, and publish per record), worker.postMessage(Uint8Array), and a MessagePort with
 *     a transferred ArrayBuffer per message; counted from what the worker received; plus the main
 *     thread's own time per message. Timed loops, REPS repetitions interleaved across arms.
 *  2. the 4 KiB copy ceiling: Uint8Array.prototype.set of 4 KiB into a SharedArrayBuffer.
 *  3. wake-up latency from an idle ring, both directions.
 *  4. BufferPool acquire+release vs new Uint8Array(n) (benchmark.js).
 * It prints a table and writes native-bench/results/local/micro-latest.json (git-ignored).
 *
 * Knobs (environment): MICRO_REPS (7), MICRO_REP_MS (300), MICRO_LAT_SAMPLES (3000),
 * MICRO_BENCH_MAX_TIME (seconds per benchmark.js benchmark, 1), MICRO_RING_CAPACITY (1 MiB).
 * For diagnosis, a partial run (its JSON goes to native-bench/results/tmp/micro-partial.json, with
 * the ratios and targets it cannot compute null): MICRO_SECTIONS (comma list of
 * throughput,latency,copy,producer,pool), MICRO_ARMS (ring-batch,ring-each,post,port,sabset),
 * MICRO_SIZES (64,256,4096).
 */
import Benchmark from 'benchmark';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { BufferPool } from '../../engine/pool/index.js';
import { createRing, RingReader, RingWriter } from '../../engine/ring/index.js';
import { HEADER_BYTES, SLOT_READ, SLOT_WRITE } from '../../engine/ring/layout.js';
import {
  CONSUMER_SPIN_US, spinForData, CTRL_BYTES, CTRL_ERRORS, CTRL_RECV, CTRL_STOP, DRAIN_BATCH, IDLE_RECHECK_MS, getTime, lcg, now,
  putTime, sleepMs,
  type LatencyReport, type LatencyWorkerData, type ThroughputKind, type ThroughputTotals,
  type ThroughputWorkerData,
} from './shared.js';

// ---------------------------------------------------------------------------------------------
// Settings

function envNum(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`${name} must be a positive number, got ${v}`);
  return n;
}

function envList(name: string, def: readonly string[]): string[] {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return [...def];
  const xs = v.split(',').map((x) => x.trim()).filter((x) => x !== '');
  for (const x of xs) if (!def.includes(x)) throw new RangeError(`${name}: unknown entry ${x} (known: ${def.join(', ')})`);
  return xs;
}

const SECTIONS = new Set(envList('MICRO_SECTIONS', ['throughput', 'latency', 'copy', 'producer', 'pool']));
const ARM_KINDS = envList('MICRO_ARMS', ['ring-batch', 'ring-each', 'post', 'post-batch', 'port', 'sabset']) as ArmKind[];
const SIZES = envList('MICRO_SIZES', ['64', '256', '4096']).map(Number);
const REPS = Math.max(1, Math.round(envNum('MICRO_REPS', 7)));
const REP_MS = envNum('MICRO_REP_MS', 300);
const WARMUP_MS = Math.min(REP_MS, 200);
const LAT_SAMPLES = Math.round(envNum('MICRO_LAT_SAMPLES', 3000));
const LAT_GAP_MIN_MS = 1;
const LAT_GAP_MAX_MS = 2;
const BENCH_MAX_TIME = envNum('MICRO_BENCH_MAX_TIME', 1);
const RING_CAPACITY = envNum('MICRO_RING_CAPACITY', 1 << 20);
/** Records per publish in the batched ring arm, and per burst (one clock read) in every arm. */
const BATCH = 64;
/** postMessage arms: at most this many messages sent and not yet received. */
const POST_WINDOW = 8192;
/** A rep that cannot finish (worker stuck) fails the run after this long. */
const STALL_NS = 15_000_000_000n;

const here = dirname(fileURLToPath(import.meta.url));
// dist/native-bench/micro -> repository root
const repoRoot = resolve(here, '..', '..', '..');
/** A partial run (MICRO_SECTIONS / MICRO_ARMS / MICRO_SIZES) must not overwrite the full results. */
const PARTIAL = ['MICRO_SECTIONS', 'MICRO_ARMS', 'MICRO_SIZES'].some((k) => (process.env[k] ?? '').trim() !== '');
const resultsPath = PARTIAL
  ? join(repoRoot, 'native-bench', 'results', 'tmp', 'micro-partial.json')
  : join(repoRoot, 'native-bench', 'results', 'local', 'micro-latest.json');

const progress = (msg: string): void => { process.stderr.write(`[bench:micro] ${msg}\n`); };

// ---------------------------------------------------------------------------------------------
// Small statistics helpers

function median(xs: readonly number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 === 1 ? a[m]! : (a[m - 1]! + a[m]!) / 2;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

interface Spread { min: number; max: number; /** (max - min) / median, percent */ relPct: number }

function spread(xs: readonly number[]): Spread {
  const min = Math.min(...xs), max = Math.max(...xs), med = median(xs);
  return { min, max, relPct: med === 0 ? 0 : ((max - min) / med) * 100 };
}

function si(n: number, digits = 3): string {
  if (!Number.isFinite(n)) return String(n);
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toPrecision(digits)} G`;
  if (a >= 1e6) return `${(n / 1e6).toPrecision(digits)} M`;
  if (a >= 1e3) return `${(n / 1e3).toPrecision(digits)} k`;
  return n.toPrecision(digits);
}

function table(headers: string[], rows: string[][], rightAlign: boolean[]): string {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (cells: string[]): string => cells.map((c, i) =>
    rightAlign[i] ? c.padStart(w[i]!) : c.padEnd(w[i]!)).join('  ').trimEnd();
  return [fmt(headers), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(fmt)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// JSON result model

interface Result {
  name: string;
  group: 'throughput' | 'copy' | 'latency' | 'pool' | 'producer';
  size?: number;
  opsPerSec: number;
  bytesPerSec?: number;
  /** Number of samples behind the figure (reps, benchmark.js samples, or latency samples). */
  samples: number;
  /** benchmark.js relative margin of error, percent. */
  rme?: number;
  /** Main-thread (producer) time per message, ns, median over reps. */
  nsPerOpProducer?: number;
  cpuNsPerOpProducer?: number | null;
  [extra: string]: unknown;
}

const results: Result[] = [];

// ---------------------------------------------------------------------------------------------
// 1. Cross-thread throughput

type ArmKind = 'ring-batch' | 'ring-each' | 'post' | 'post-batch' | 'port' | 'sabset';

interface Rep {
  msgs: number;
  elapsedNs: number;
  producerNs: number;
  /** The producer's own CPU time in the send loop (on-CPU time from schedstat, waits excluded), or NaN. */
  producerCpuNs: number;
  /** Time the main thread was runnable but not running during the rep (Linux schedstat), or NaN. */
  preemptedNs: number;
}

/**
 * Nanoseconds this thread has spent waiting on a run queue (runnable, not running), from
 * /proc/thread-self/schedstat; NaN where that is not available. A busy machine shows up here.
 */
function runQueueWaitNs(): number {
  return schedstat(1);
}

/**
 * Field k of /proc/thread-self/schedstat (0: ns this thread ran on a CPU, 1: ns it waited
 * runnable), NaN where that is not available. Field 0 is CPU time in ns, not in 10 ms ticks.
 */
function schedstat(k: 0 | 1): number {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ')[k]);
  } catch {
    return NaN;
  }
}

interface Arm {
  kind: ArmKind;
  size: number;
  label: string;
  src: Uint8Array;
  ctrl: Int32Array;
  worker?: Worker;
  writer?: RingWriter;
  port?: MessagePort;
  /** post-batch: the buffer BATCH records are copied into before each postMessage. */
  batchBuf?: Uint8Array;
  /** sabset: destination and rotating offset. */
  dst?: Uint8Array;
  dstOff: number;
  reps: Rep[];
  sentTotal: number;
  totals?: ThroughputTotals;
}

const ARM_LABEL: Record<ArmKind, string> = {
  'ring-batch': 'ring, publish per 64 records',
  'ring-each': 'ring, publish per record',
  post: 'worker.postMessage(u8) (clone)',
  'post-batch': 'worker.postMessage, 64 records per message',
  port: 'MessagePort + transferred ArrayBuffer',
  sabset: 'plain u8.set into SAB (1 thread)',
};

function makeSource(size: number): Uint8Array {
  const src = new Uint8Array(size);
  for (let i = 0; i < size; i++) src[i] = (i * 31 + 7) & 0xff;
  return src;
}

/** Spins briefly, then sleeps in 20 us steps until `cond()`; false after the stall deadline. */
function waitUntil(cond: () => boolean, sleeper: Int32Array): boolean {
  for (let i = 0; i < 1000; i++) if (cond()) return true;
  const deadline = now() + STALL_NS;
  while (!cond()) {
    if (now() > deadline) return false;
    sleepMs(sleeper, 0.02);
  }
  return true;
}

async function startArm(kind: ArmKind, size: number): Promise<Arm> {
  const ctrlSab = new SharedArrayBuffer(CTRL_BYTES);
  const arm: Arm = {
    kind, size, label: ARM_LABEL[kind], src: makeSource(size), ctrl: new Int32Array(ctrlSab),
    dstOff: 0, reps: [], sentTotal: 0,
  };
  if (kind === 'sabset') {
    arm.dst = new Uint8Array(new SharedArrayBuffer(RING_CAPACITY));
    return arm;
  }
  const wkind: ThroughputKind = kind === 'ring-batch' || kind === 'ring-each' ? 'ring' : kind;
  if (kind === 'post-batch') arm.batchBuf = new Uint8Array(BATCH * size);
  const data: ThroughputWorkerData = { kind: wkind, size, ctrl: ctrlSab };
  const transfer: MessagePort[] = [];
  if (wkind === 'ring') {
    data.ring = createRing(RING_CAPACITY);
    arm.writer = new RingWriter(data.ring);
  } else if (wkind === 'port') {
    const ch = new MessageChannel();
    arm.port = ch.port1;
    data.port = ch.port2;
    transfer.push(ch.port2);
  }
  const worker = new Worker(new URL('./throughput-worker.js', import.meta.url), {
    workerData: data, transferList: transfer,
  });
  arm.worker = worker;
  worker.on('error', (e) => { progress(`worker ${kind} ${size} B failed: ${String(e)}`); process.exitCode = 1; });
  await new Promise<void>((res) => worker.once('online', () => res()));
  return arm;
}

/** One timed repetition: produce for `ms`, then wait until the worker has received everything. */
function runRep(arm: Arm, ms: number): Rep {
  const c = arm.ctrl;
  const src = arm.src;
  const size = arm.size;
  const base = Atomics.load(c, CTRL_RECV);
  let sent = 0;
  let waitNs = 0n;
  let waitCpuNs = 0;
  const q0 = runQueueWaitNs();
  const cpu0 = schedstat(0);
  const t0 = now();
  const stopAt = t0 + BigInt(Math.round(ms * 1e6));
  const stalled = (what: string): never => {
    throw new Error(`${arm.label} ${size} B: stalled waiting for ${what} (sent ${sent}, received ${Atomics.load(c, CTRL_RECV) - base})`);
  };

  switch (arm.kind) {
    case 'ring-batch': {
      const w = arm.writer!;
      const hasRoom = (): boolean => w.canFit(size);
      do {
        for (let k = 0; k < BATCH;) {
          if (w.push(src)) { k++; continue; }
          w.publish();
          const tw = now();
          const cw = schedstat(0);
          if (!waitUntil(hasRoom, c)) stalled('ring space');
          waitNs += now() - tw;
          waitCpuNs += schedstat(0) - cw;
        }
        w.publish();
        sent += BATCH;
      } while (now() < stopAt);
      break;
    }
    case 'ring-each': {
      const w = arm.writer!;
      const hasRoom = (): boolean => w.canFit(size);
      do {
        for (let k = 0; k < BATCH;) {
          if (w.write(src)) { k++; continue; }
          const tw = now();
          const cw = schedstat(0);
          if (!waitUntil(hasRoom, c)) stalled('ring space');
          waitNs += now() - tw;
          waitCpuNs += schedstat(0) - cw;
        }
        sent += BATCH;
      } while (now() < stopAt);
      break;
    }
    case 'post':
    case 'port': {
      const worker = arm.worker!;
      const port = arm.port;
      const windowOpen = (): boolean => sent - (Atomics.load(c, CTRL_RECV) - base) <= POST_WINDOW - BATCH;
      do {
        if (!windowOpen()) {
          const tw = now();
          const cw = schedstat(0);
          if (!waitUntil(windowOpen, c)) stalled('the worker to catch up');
          waitNs += now() - tw;
          waitCpuNs += schedstat(0) - cw;
        }
        if (port === undefined) {
          for (let k = 0; k < BATCH; k++) worker.postMessage(src);
        } else {
          for (let k = 0; k < BATCH; k++) {
            const u = new Uint8Array(size);
            u.set(src);
            port.postMessage(u, [u.buffer]);
          }
        }
        sent += BATCH;
      } while (now() < stopAt);
      break;
    }
    case 'post-batch': {
      const worker = arm.worker!;
      const buf = arm.batchBuf!;
      const windowOpen = (): boolean => sent - (Atomics.load(c, CTRL_RECV) - base) <= POST_WINDOW - BATCH;
      do {
        if (!windowOpen()) {
          const tw = now();
          const cw = schedstat(0);
          if (!waitUntil(windowOpen, c)) stalled('the worker to catch up');
          waitNs += now() - tw;
          waitCpuNs += schedstat(0) - cw;
        }
        // each record copied in, as a producer batching its records would
        for (let k = 0; k < BATCH; k++) buf.set(src, k * size);
        worker.postMessage(buf);
        sent += BATCH;
      } while (now() < stopAt);
      break;
    }
    case 'sabset': {
      const dst = arm.dst!;
      const mask = dst.byteLength - 1;
      let off = arm.dstOff;
      do {
        for (let k = 0; k < BATCH; k++) {
          dst.set(src, off);
          off = (off + size) & mask;
        }
        sent += BATCH;
      } while (now() < stopAt);
      arm.dstOff = off;
      break;
    }
  }
  const tProduced = now();
  const cpuProduced = schedstat(0);
  if (arm.kind !== 'sabset') {
    if (!waitUntil(() => Atomics.load(c, CTRL_RECV) - base >= sent, c)) stalled('the last records');
  }
  const t1 = now();
  const errors = Atomics.load(c, CTRL_ERRORS);
  if (errors !== 0) throw new Error(`${arm.label} ${size} B: worker saw ${errors} records of the wrong length`);
  const got = arm.kind === 'sabset' ? sent : Atomics.load(c, CTRL_RECV) - base;
  if (got !== sent) throw new Error(`${arm.label} ${size} B: worker received ${got}, sent ${sent}`);
  arm.sentTotal += sent;
  return {
    msgs: got, elapsedNs: Number(t1 - t0), producerNs: Number(tProduced - t0 - waitNs),
    producerCpuNs: cpuProduced - cpu0 - waitCpuNs,
    preemptedNs: runQueueWaitNs() - q0,
  };
}

async function stopArm(arm: Arm): Promise<void> {
  const worker = arm.worker;
  if (worker === undefined) return;
  const totals = new Promise<ThroughputTotals>((res) => {
    worker.on('message', (m: { type: string; totals: ThroughputTotals }) => {
      if (m.type === 'totals') res(m.totals);
    });
  });
  Atomics.store(arm.ctrl, CTRL_STOP, 1);
  worker.postMessage('stop');
  arm.totals = await Promise.race([
    totals,
    new Promise<ThroughputTotals>((_, rej) => setTimeout(
      () => rej(new Error(`${arm.label} ${arm.size} B: no totals from the worker`)), 5000).unref()),
  ]);
  if (arm.totals.received !== arm.sentTotal) {
    throw new Error(`${arm.label} ${arm.size} B: worker reports ${arm.totals.received} received, ${arm.sentTotal} sent`);
  }
  arm.port?.close();
  await worker.terminate();
}

interface ThroughputRow {
  arm: Arm;
  rates: number[];
  producerNsPerMsg: number[];
  /** CPU time (not wall time: preemption excluded) per message. */
  producerCpuNsPerMsg: number[];
}

async function throughput(): Promise<ThroughputRow[]> {
  const arms: Arm[] = [];
  for (const size of SIZES) {
    for (const kind of ARM_KINDS) if (kind !== 'sabset') arms.push(await startArm(kind, size));
  }
  if (ARM_KINDS.includes('sabset') && SIZES.includes(4096)) arms.push(await startArm('sabset', 4096));
  let failure: unknown;
  try {
    progress(`throughput: ${arms.length} arms, warm-up ${WARMUP_MS} ms + ${REPS} x ${REP_MS} ms each, interleaved`);
    for (const arm of arms) runRep(arm, WARMUP_MS);
    for (let r = 0; r < REPS; r++) {
      for (const arm of arms) arm.reps.push(runRep(arm, REP_MS));
      progress(`throughput: rep ${r + 1}/${REPS} done`);
    }
  } catch (e) {
    failure = e;
  }
  // Stop every worker whatever happened; the first error wins.
  for (const arm of arms) {
    try {
      if (failure === undefined) await stopArm(arm);
      else await arm.worker?.terminate();
    } catch (e) {
      failure ??= e;
      await arm.worker?.terminate();
    }
  }
  if (failure !== undefined) throw failure;
  return arms.map((arm) => ({
    arm,
    rates: arm.reps.map((r) => r.msgs / (r.elapsedNs / 1e9)),
    producerNsPerMsg: arm.reps.map((r) => r.producerNs / r.msgs),
    producerCpuNsPerMsg: arm.reps.map((r) => r.producerCpuNs / r.msgs),
  }));
}

// ---------------------------------------------------------------------------------------------
// 3. Wake-up latency

interface LatencyRow { direction: 'main -> worker' | 'worker -> main'; sortedUs: Float64Array; parks: number }

async function latencyM2W(): Promise<LatencyRow> {
  const ring = createRing(1 << 16);
  const ctrlSab = new SharedArrayBuffer(CTRL_BYTES);
  const ctrl = new Int32Array(ctrlSab);
  const data: LatencyWorkerData = {
    direction: 'm2w', ring, ctrl: ctrlSab, samples: LAT_SAMPLES, gapMinMs: LAT_GAP_MIN_MS, gapMaxMs: LAT_GAP_MAX_MS,
  };
  const worker = new Worker(new URL('./latency-worker.js', import.meta.url), { workerData: data });
  try {
    await new Promise<void>((res) => worker.once('online', () => res()));
    const report = new Promise<LatencyReport>((res, rej) => {
      worker.once('message', (m: LatencyReport) => res(m));
      worker.once('error', rej);
    });
    const w = new RingWriter(ring);
    const rnd = lcg(0x5eed);
    sleepMs(ctrl, 50); // the worker reaches its parked state
    for (let i = 0; i < LAT_SAMPLES; i++) {
      sleepMs(ctrl, LAT_GAP_MIN_MS + rnd() * (LAT_GAP_MAX_MS - LAT_GAP_MIN_MS));
      const off = w.reserve(8);
      if (off < 0) throw new Error('latency ring full: the worker is not consuming');
      putTime(w.bytes, off, now());
      w.commit();
      w.publish();
    }
    w.reserve(0);
    w.commit();
    w.publish();
    const rep = await report;
    const us = Float64Array.from(rep.delaysNs!, (ns) => ns / 1000).sort();
    if (us.length !== LAT_SAMPLES) throw new Error(`latency m2w: ${us.length} samples of ${LAT_SAMPLES}`);
    return { direction: 'main -> worker', sortedUs: us, parks: rep.parks };
  } finally {
    await worker.terminate();
  }
}

async function latencyW2M(): Promise<LatencyRow> {
  const ring = createRing(1 << 16);
  const ctrlSab = new SharedArrayBuffer(CTRL_BYTES);
  const data: LatencyWorkerData = {
    direction: 'w2m', ring, ctrl: ctrlSab, samples: LAT_SAMPLES, gapMinMs: LAT_GAP_MIN_MS, gapMaxMs: LAT_GAP_MAX_MS,
  };
  const reader = new RingReader(ring);
  const hasNext = (): boolean => reader.hasNext();
  const delays = new Float64Array(LAT_SAMPLES);
  let n = 0;
  const onRecord = (bytes: Uint8Array, offset: number): void => {
    const t = now();
    if (n < delays.length) delays[n++] = Number(t - getTime(bytes, offset));
  };
  const worker = new Worker(new URL('./latency-worker.js', import.meta.url), { workerData: data });
  try {
    const done = new Promise<LatencyReport>((res, rej) => {
      worker.once('message', (m: LatencyReport) => res(m));
      worker.once('error', rej);
    });
    const deadline = now() + STALL_NS + BigInt(LAT_SAMPLES * LAT_GAP_MAX_MS * 1e6);
    while (n < LAT_SAMPLES) {
      if (reader.drain(onRecord) > 0) continue;
      if (spinForData(hasNext)) continue;
      if (now() > deadline) throw new Error(`latency w2m: stalled at ${n} samples`);
      await reader.waitForData(IDLE_RECHECK_MS);
    }
    await done;
    const us = Float64Array.from(delays, (ns) => ns / 1000).sort();
    return { direction: 'worker -> main', sortedUs: us, parks: reader.parks };
  } finally {
    await worker.terminate();
  }
}

// ---------------------------------------------------------------------------------------------
// 2 + 4. Single-thread benchmarks with benchmark.js

interface BenchRow { name: string; group: Result['group']; size: number; hz: number; rme: number; samples: number; perOp: number }

// Results of measured expressions land here so the optimiser cannot drop them.
let _sink: unknown;

function runSuite(title: string, group: Result['group'],
  entries: { name: string; size: number; perOp?: number; fn: () => void }[]): BenchRow[] {
  const suite = new Benchmark.Suite(title);
  for (const e of entries) suite.add(e.name, e.fn, { maxTime: BENCH_MAX_TIME, minSamples: 5 });
  const rows: BenchRow[] = [];
  suite.on('cycle', (ev: Benchmark.Event) => {
    const b = ev.target as unknown as Benchmark;
    if (b.error) throw b.error;
    progress(`${title}: ${String(b)}`);
  });
  suite.run({ async: false });
  suite.forEach((b: Benchmark) => {
    const e = entries.find((x) => x.name === b.name)!;
    rows.push({
      name: e.name, group, size: e.size, hz: b.hz, rme: b.stats.rme, samples: b.stats.sample.length,
      perOp: e.perOp ?? 1,
    });
  });
  return rows;
}

function copyCeiling(): BenchRow[] {
  const mk = (size: number): (() => void) => {
    const src = makeSource(size);
    const dst = new Uint8Array(new SharedArrayBuffer(RING_CAPACITY));
    const mask = dst.byteLength - 1;
    let off = 0;
    return () => {
      dst.set(src, off);
      off = (off + size) & mask;
    };
  };
  return runSuite('copy ceiling', 'copy', [
    { name: 'u8.set 64 B into SAB', size: 64, fn: mk(64) },
    { name: 'u8.set 4 KiB into SAB', size: 4096, fn: mk(4096) },
  ]);
}

/** The producer's main-thread cost alone: 64 pushes + one publish, the consumer a stub. */
function producerOnly(): BenchRow[] {
  const mk = (size: number): (() => void) => {
    const sab = createRing(RING_CAPACITY);
    const w = new RingWriter(sab);
    const h = new Int32Array(sab, 0, HEADER_BYTES / 4);
    const src = makeSource(size);
    return () => {
      for (let k = 0; k < BATCH; k++) if (!w.push(src)) throw new Error('producer-only ring full');
      w.publish();
      // Stub consumer: release everything published (2 atomics per batch).
      Atomics.store(h, SLOT_READ, Atomics.load(h, SLOT_WRITE));
    };
  };
  return runSuite('ring producer, same thread', 'producer', [
    { name: 'ring 64 x push(64 B) + publish', size: 64, perOp: BATCH, fn: mk(64) },
    { name: 'ring 64 x push(4 KiB) + publish', size: 4096, perOp: BATCH, fn: mk(4096) },
  ]);
}

function poolVsNew(): BenchRow[] {
  const pool = new BufferPool();
  const entries: { name: string; size: number; fn: () => void }[] = [];
  for (const [size, label] of [[64, '64 B'], [1024, '1 KiB'], [16384, '16 KiB']] as const) {
    entries.push({
      name: `pool acquire+release ${label}`, size,
      fn: () => {
        const b = pool.acquire(size);
        _sink = b;
        pool.release(b);
      },
    });
    entries.push({ name: `new Uint8Array(${size})`, size, fn: () => { _sink = new Uint8Array(size); } });
  }
  const rows = runSuite('pool vs new Uint8Array', 'pool', entries);
  const s = pool.stats();
  if (s.inUse !== 0) throw new Error(`pool benchmark leaked ${s.inUse} buffers`);
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Main

function cpuModel(): string {
  const c = os.cpus();
  return c[0]?.model.trim() ?? 'unknown';
}

async function main(): Promise<void> {
  const tStart = now();
  const machine = {
    cpus: cpuModel(),
    nproc: os.availableParallelism(),
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    date: new Date().toISOString(),
    loadavgStart: os.loadavg().map((x) => Number(x.toFixed(2))),
    loadavgEnd: [] as number[],
  };
  progress(`${machine.cpus}, ${machine.nproc} CPUs, node ${machine.node}, load ${machine.loadavgStart.join(' ')}`);

  const tp = SECTIONS.has('throughput') ? await throughput() : [];
  const lat: LatencyRow[] = [];
  if (SECTIONS.has('latency')) {
    progress('latency main -> worker');
    lat.push(await latencyM2W());
    progress('latency worker -> main');
    lat.push(await latencyW2M());
  }
  const copy = SECTIONS.has('copy') ? copyCeiling() : [];
  const prod = SECTIONS.has('producer') ? producerOnly() : [];
  const pool = SECTIONS.has('pool') ? poolVsNew() : [];
  machine.loadavgEnd = os.loadavg().map((x) => Number(x.toFixed(2)));

  // ---- results
  const find = (kind: ArmKind, size: number): ThroughputRow | undefined =>
    tp.find((r) => r.arm.kind === kind && r.arm.size === size);
  for (const row of tp) {
    const { arm } = row;
    const med = median(row.rates);
    const res: Result = {
      name: `throughput ${arm.kind} ${arm.size} B`,
      group: arm.kind === 'sabset' ? 'copy' : 'throughput',
      arm: arm.kind, label: arm.label, size: arm.size,
      opsPerSec: Math.round(med),
      bytesPerSec: Math.round(med * arm.size),
      samples: row.rates.length,
      repMs: REP_MS,
      rates: row.rates.map(Math.round),
      spread: spread(row.rates),
      nsPerOpProducer: Number(median(row.producerNsPerMsg).toFixed(1)),
      producerNsSamples: row.producerNsPerMsg.map((x) => Number(x.toFixed(1))),
      cpuNsPerOpProducer: Number.isFinite(median(row.producerCpuNsPerMsg)) ? Number(median(row.producerCpuNsPerMsg).toFixed(1)) : null,
      producerShareOfWall: Number(median(arm.reps.map((r) => r.producerNs / r.elapsedNs)).toFixed(3)),
      mainPreemptedShare: arm.reps.map((r) => (Number.isFinite(r.preemptedNs) ? Number((r.preemptedNs / r.elapsedNs).toFixed(3)) : null)),
      received: arm.totals?.received ?? arm.sentTotal,
    };
    if (arm.writer) res.notifiesPer1kMsgs = Number(((arm.writer.notifies / arm.sentTotal) * 1000).toFixed(3));
    if (arm.totals && arm.kind.startsWith('ring')) res.consumerParks = arm.totals.parks;
    results.push(res);
  }
  for (const l of lat) {
    const s = l.sortedUs;
    results.push({
      name: `wake-up latency ${l.direction}`, group: 'latency',
      opsPerSec: 0, samples: s.length,
      p50Us: Number(percentile(s, 50).toFixed(1)), p90Us: Number(percentile(s, 90).toFixed(1)),
      p99Us: Number(percentile(s, 99).toFixed(1)), maxUs: Number(s[s.length - 1]!.toFixed(1)),
      minUs: Number(s[0]!.toFixed(1)), parks: l.parks, idleGapMs: [LAT_GAP_MIN_MS, LAT_GAP_MAX_MS],
    });
  }
  for (const b of [...copy, ...prod, ...pool]) {
    results.push({
      name: b.name, group: b.group, size: b.size,
      opsPerSec: Math.round(b.hz * b.perOp),
      bytesPerSec: Math.round(b.hz * b.perOp * b.size),
      samples: b.samples, rme: Number(b.rme.toFixed(2)),
      nsPerOp: Number((1e9 / (b.hz * b.perOp)).toFixed(1)),
      ...(b.perOp !== 1 ? { recordsPerOp: b.perOp } : {}),
    });
  }

  const rate = (kind: ArmKind, size: number): number => {
    const row = find(kind, size);
    return row === undefined ? NaN : median(row.rates);
  };
  const sabSet4k = copy.find((b) => b.size === 4096)?.hz ?? NaN;
  const ring4k = rate('ring-batch', 4096);
  const sabRates = find('sabset', 4096)?.rates;
  const pairedRatios = sabRates === undefined ? [NaN]
    : (find('ring-batch', 4096)?.rates ?? [NaN]).map((r, i) => r / sabRates[i]!);
  const ratios: Record<string, number | null> = {};
  for (const size of SIZES) {
    ratios[`ringBatch${size}VsPostMessage`] = rate('ring-batch', size) / rate('post', size);
    ratios[`ringEach${size}VsPostMessage`] = rate('ring-each', size) / rate('post', size);
    ratios[`ringBatch${size}VsPortTransfer`] = rate('ring-batch', size) / rate('port', size);
    ratios[`ringBatch${size}VsRingEach`] = rate('ring-batch', size) / rate('ring-each', size);
    // the fair comparison for a batching producer: postMessage also carrying 64 records per call
    ratios[`ringBatch${size}VsPostBatch`] = rate('ring-batch', size) / rate('post-batch', size);
  }
  ratios.ring4kVsSabSet = ring4k / sabSet4k;
  ratios.ring4kVsSabSetPairedTimedLoop = median(pairedRatios);
  // NaN (an arm left out of a partial run) becomes null in the JSON.
  for (const k of Object.keys(ratios)) {
    const v = ratios[k]!;
    ratios[k] = Number.isFinite(v) ? Number(v.toFixed(3)) : null;
  }

  const ring64VsPost = rate('ring-batch', 64) / rate('post', 64);
  const prod64Row = find('ring-batch', 64);
  // CPU time per record (schedstat on-CPU ns), not wall time: preemption by other load is excluded
  const prod64Cpu = prod64Row === undefined ? NaN : median(prod64Row.producerCpuNsPerMsg);
  const prod64 = Number.isFinite(prod64Cpu) ? prod64Cpu : prod64Row === undefined ? NaN : median(prod64Row.producerNsPerMsg);
  // paired per repetition with the timed-loop copy ceiling measured next to it (not divided by
  // the benchmark.js ceiling of another moment)
  const ring4kVsSab = median(pairedRatios);
  const target = (value: number, goal: number, atLeast: boolean, digits: number) => ({
    value: Number.isFinite(value) ? Number(value.toFixed(digits)) : null,
    target: goal,
    met: Number.isFinite(value) ? (atLeast ? value >= goal : value <= goal) : null,
  });
  const targets = {
    ring64VsPostMessage: target(ring64VsPost, 20, true, 2),
    ring64VsPostBatch: { value: ratios.ringBatch64VsPostBatch ?? null, target: null, met: null },
    producerNsPerRecord64Batched: target(prod64, 150, false, 1),
    ring4kVsSabSet: target(ring4kVsSab, 0.6, true, 3),
  };
  const verdict = (t: { met: boolean | null }): string => (t.met === null ? 'n/a' : t.met ? 'MET' : 'MISSED');
  const fmtNum = (v: number | null, f: (x: number) => string): string => (v === null ? 'n/a' : f(v));
  const wallSeconds = Number((Number(now() - tStart) / 1e9).toFixed(1));
  const json = {
    machine,
    settings: {
      reps: REPS, repMs: REP_MS, warmupMs: WARMUP_MS, ringCapacity: RING_CAPACITY, batch: BATCH,
      drainBatch: DRAIN_BATCH, consumerSpinUs: CONSUMER_SPIN_US, postWindow: POST_WINDOW, latencySamples: LAT_SAMPLES,
      latencyGapMs: [LAT_GAP_MIN_MS, LAT_GAP_MAX_MS], benchMaxTimeS: BENCH_MAX_TIME, wallSeconds,
    },
    results, ratios, targets,
  };
  mkdirSync(dirname(resultsPath), { recursive: true });
  writeFileSync(resultsPath, `${JSON.stringify(json, null, 2)}\n`);

  // ---- table
  const out: string[] = [];
  out.push(`shardchat micro benchmarks  ${machine.date}`);
  out.push(`${machine.cpus}, ${machine.nproc} CPUs, node ${machine.node}, loadavg ${machine.loadavgStart.join(' ')} -> ${machine.loadavgEnd.join(' ')}`);
  if (tp.length > 0) {
    out.push('', `1. main -> worker throughput (messages the worker received; median of ${REPS} x ${REP_MS} ms, interleaved; ring ${RING_CAPACITY / 1024} KiB)`);
    out.push(table(
      ['arm', 'size', 'msgs/s', 'min..max', 'spread', 'MB/s', 'main ns/msg', 'main CPU ns/msg', 'notify/1k', 'preempted'],
      tp.map(({ arm, rates, producerNsPerMsg, producerCpuNsPerMsg }) => {
        const sp = spread(rates);
        const med = median(rates);
        const pre = Math.max(...arm.reps.map((r) => r.preemptedNs / r.elapsedNs));
        return [arm.label, `${arm.size} B`, si(med), `${si(sp.min)}..${si(sp.max)}`, `${sp.relPct.toFixed(0)}%`,
          (med * arm.size / 1e6).toFixed(0), median(producerNsPerMsg).toFixed(0),
          Number.isFinite(median(producerCpuNsPerMsg)) ? median(producerCpuNsPerMsg).toFixed(0) : 'n/a',
          arm.writer ? ((arm.writer.notifies / arm.sentTotal) * 1000).toFixed(1) : '',
          Number.isFinite(pre) ? `${(pre * 100).toFixed(0)}%` : 'n/a'];
      }),
      [false, true, true, true, true, true, true, true, true, true]));
    out.push('   main ns/msg: wall time in the send loop minus waits (includes preemption); main CPU ns/msg: the thread\'s on-CPU time there (schedstat)');
    out.push(`   notify/1k: producer Atomics.notify calls per 1000 messages (worker parked; it polls ${CONSUMER_SPIN_US} us before parking)`);
    out.push('   preempted: largest share of a repetition the main thread spent runnable but not running (other load)');
  }
  if (copy.length + prod.length > 0) {
    out.push('', '2. copy ceiling and producer cost (benchmark.js, one thread)');
    out.push(table(
      ['benchmark', 'ops/s', 'ns/op', '±rme', 'samples', 'GB/s'],
      [...copy, ...prod].map((b) => {
        const ops = b.hz * b.perOp;
        return [b.name + (b.perOp !== 1 ? ' (per record)' : ''), si(ops), (1e9 / ops).toFixed(1), `${b.rme.toFixed(1)}%`,
          String(b.samples), (ops * b.size / 1e9).toFixed(2)];
      }),
      [false, true, true, true, true, true]));
    const pct = (v: number | null): string => fmtNum(v, (x) => (x * 100).toFixed(0));
    if (Number.isFinite(ring4k)) out.push(`   ring 4 KiB cross-thread ${si(ring4k)} msgs/s = ${pct(ratios.ring4kVsSabSet!)}% of u8.set 4 KiB into SAB` +
      ` (paired timed loop per rep: ${pct(ratios.ring4kVsSabSetPairedTimedLoop!)}%)`);
  }
  if (lat.length > 0) {
    out.push('', `3. wake-up latency from an idle ring (consumer parked in waitForData, ${LAT_GAP_MIN_MS}-${LAT_GAP_MAX_MS} ms idle gaps)`);
    out.push(table(
      ['direction', 'samples', 'parks', 'min us', 'p50 us', 'p90 us', 'p99 us', 'max us'],
      lat.map((l) => [l.direction, String(l.sortedUs.length), String(l.parks),
        ...[0, 50, 90, 99, 100].map((p) => percentile(l.sortedUs, p).toFixed(1))]),
      [false, true, true, true, true, true, true, true]));
  }
  if (pool.length > 0) {
    out.push('', '4. BufferPool acquire+release vs new Uint8Array (benchmark.js)');
    out.push(table(
      ['benchmark', 'ops/s', 'ns/op', '±rme', 'samples'],
      pool.map((b) => [b.name, si(b.hz), (1e9 / b.hz).toFixed(1), `${b.rme.toFixed(1)}%`, String(b.samples)]),
      [false, true, true, true, true]));
  }
  out.push('');
  out.push('targets');
  out.push(table(
    ['target', 'value', 'goal', 'verdict'],
    [
      ['ring 64 B msgs/s vs postMessage per record', fmtNum(targets.ring64VsPostMessage.value, (v) => `${v.toFixed(1)}x`), '>= 20x',
        verdict(targets.ring64VsPostMessage)],
      ['ring 64 B msgs/s vs postMessage of 64 records', fmtNum(targets.ring64VsPostBatch.value, (v) => `${v.toFixed(1)}x`), '(no goal)', '-'],
      ['main CPU ns per 64 B record, publish per 64', fmtNum(targets.producerNsPerRecord64Batched.value, (v) => v.toFixed(1)), '<= 150',
        verdict(targets.producerNsPerRecord64Batched)],
      ['ring 4 KiB rate vs u8.set into SAB, paired per rep', fmtNum(targets.ring4kVsSabSet.value, (v) => `${(v * 100).toFixed(0)}%`), '>= 60%',
        verdict(targets.ring4kVsSabSet)],
    ],
    [false, true, true, false]));
  out.push('');
  out.push(`JSON: ${relative(process.cwd(), resultsPath) || resultsPath}   (wall ${wallSeconds} s; compare figures only within one run)`);
  process.stdout.write(`${out.join('\n')}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`[bench:micro] failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
