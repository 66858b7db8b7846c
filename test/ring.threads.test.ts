/**
 * The ring across real threads: a producer and a verifying consumer on opposite sides of a
 * worker_threads boundary, in both directions (traffic from test/fixtures/ring-worker.ts: seeded
 * lengths from 0 bytes to maxRecordBytes, each record carrying its sequence number and an FNV-1a
 * checksum). Zero loss, duplication, reordering or corruption; the bytes around the ring's region
 * of the SharedArrayBuffer (canaries) untouched; counters started just below 2^32 so they wrap.
 *
 * The lost-wake-up stress keeps a small ring nearly empty so the consumer parks hundreds of
 * thousands of times, with no timeout on any wait: a lost wake-up would hang, so a watchdog fails
 * the test when progress stops for 10 s. A last test runs a deliberately broken producer (it clears
 * the consumer's SLEEPING flag itself) to show that the watchdog does catch such a deadlock.
 *
 * Default size keeps `npm test` short; SHARDCHAT_SOAK=1 runs ~50 M records per direction.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { guardHandles } from './helpers/leaks.js';
import { initRing, RingReader, RingWriter, ringByteLength } from '../engine/ring/index.js';
import { HEADER_BYTES, SLOT_PRODUCER_WAITING, SLOT_READ, SLOT_SLEEPING, SLOT_WRITE } from '../engine/ring/layout.js';
import {
  CTL_CONSUMED, CTL_INTS, CTL_PRODUCED, consume, mulberry32, produce,
  type RoleResult, type RunControl, type Traffic, type WorkerInput,
} from './fixtures/ring-worker.js';

guardHandles();

const SOAK = !!process.env.SHARDCHAT_SOAK;
const WORKER_URL = new URL('./fixtures/ring-worker.js', import.meta.url);
const WATCHDOG_MS = 10_000;

const BULK_RECORDS = SOAK ? 50_000_000 : 2_000_000;
const STRESS_RECORDS = SOAK ? 20_000_000 : 400_000;

type Direction = 'main->worker' | 'worker->main';

interface RunOptions {
  direction: Direction;
  capacity: number;
  startIndex: number;
  traffic: Traffic;
  watchdogMs?: number;
}

interface RunResult {
  producer: RoleResult;
  consumer: RoleResult;
  ms: number;
}

/**
 * A SharedArrayBuffer larger than the ring, the ring at a 64-byte-aligned offset inside it, and
 * seeded canary bytes filling everything before and after the ring's region.
 */
function ringWithCanaries(capacity: number, startIndex: number, seed: number) {
  const rnd = mulberry32(seed);
  const byteOffset = 64 * (1 + (rnd() % 4));
  const tail = 64 * (1 + (rnd() % 4));
  const end = byteOffset + ringByteLength(capacity);
  const sab = new SharedArrayBuffer(end + tail);
  const all = new Uint8Array(sab);
  const canary = (i: number): number => ((i * 37 + seed) & 255) ^ 0xa5;
  for (let i = 0; i < byteOffset; i++) all[i] = canary(i);
  for (let i = end; i < sab.byteLength; i++) all[i] = canary(i);
  initRing(sab, capacity, { byteOffset, startIndex });
  const checkCanaries = (): void => {
    for (let i = 0; i < byteOffset; i++) if (all[i] !== canary(i)) assert.fail(`canary byte ${i} before the ring was overwritten`);
    for (let i = end; i < sab.byteLength; i++) if (all[i] !== canary(i)) assert.fail(`canary byte ${i} after the ring was overwritten`);
  };
  return { sab, byteOffset, checkCanaries };
}

async function runAcross(o: RunOptions): Promise<RunResult> {
  const t0 = performance.now();
  const { sab, byteOffset, checkCanaries } = ringWithCanaries(o.capacity, o.startIndex, o.traffic.seed);
  const header = new Int32Array(sab, byteOffset, HEADER_BYTES / 4);
  const ctlSab = new SharedArrayBuffer(CTL_INTS * 4);
  const ctl = new Int32Array(ctlSab);
  const workerRole = o.direction === 'main->worker' ? 'consume' : 'produce';
  const input: WorkerInput = { ringTest: true, role: workerRole, sab, byteOffset, ctl: ctlSab, traffic: o.traffic };
  const worker = new Worker(WORKER_URL, { workerData: input });
  const exited = once(worker, 'exit');
  const fromWorker = new Promise<RoleResult>((resolve, reject) => {
    worker.on('message', (m: { type: string; result?: RoleResult; message?: string }) => {
      if (m.type === 'done' && m.result) resolve(m.result);
      else reject(new Error(`worker (${workerRole}r): ${m.message}`));
    });
    worker.on('error', reject);
    worker.on('exit', (code) => reject(new Error(`worker exited with code ${code} before reporting`)));
  });

  let aborted = false;
  const rc: RunControl = { ctl, aborted: () => aborted, yieldEveryMs: 20 };
  const onMain = o.direction === 'main->worker'
    ? produce(new RingWriter(sab, byteOffset), o.traffic, rc)
    : consume(new RingReader(sab, byteOffset), o.traffic, rc);

  const limit = o.watchdogMs ?? WATCHDOG_MS;
  let timer: NodeJS.Timeout | undefined;
  const watchdog = new Promise<never>((_resolve, reject) => {
    let last = -1;
    let lastChange = Date.now();
    timer = setInterval(() => {
      const progress = Atomics.load(ctl, CTL_CONSUMED) + Atomics.load(ctl, CTL_PRODUCED);
      if (progress !== last) { last = progress; lastChange = Date.now(); return; }
      if (Date.now() - lastChange < limit) return;
      const h = (slot: number): number => Atomics.load(header, slot);
      reject(new Error(
        `no progress for ${limit} ms (lost wake-up?): consumed ${Atomics.load(ctl, CTL_CONSUMED)}, ` +
        `produced ${Atomics.load(ctl, CTL_PRODUCED)} of ${o.traffic.count}; WRITE ${h(SLOT_WRITE) >>> 0}, ` +
        `READ ${h(SLOT_READ) >>> 0}, SLEEPING ${h(SLOT_SLEEPING)}, PRODUCER_WAITING ${h(SLOT_PRODUCER_WAITING)}`));
    }, 100);
  });

  try {
    const [mainResult, workerResult] = await Promise.race([Promise.all([onMain, fromWorker]), watchdog]);
    await exited;
    checkCanaries();
    // both ends are done: everything released, nobody parked
    assert.equal(Atomics.load(header, SLOT_WRITE), Atomics.load(header, SLOT_READ), 'ring drained');
    assert.equal(Atomics.load(header, SLOT_SLEEPING), 0);
    assert.equal(Atomics.load(header, SLOT_PRODUCER_WAITING), 0);
    const producer = o.direction === 'main->worker' ? mainResult : workerResult;
    const consumer = o.direction === 'main->worker' ? workerResult : mainResult;
    assert.equal(producer.role, 'produce');
    assert.equal(consumer.role, 'consume');
    assert.equal(consumer.records, o.traffic.count);
    assert.equal(consumer.bytes, producer.bytes);
    return { producer, consumer, ms: performance.now() - t0 };
  } catch (e) {
    aborted = true;
    // wake our own side if it is parked, then stop the worker
    Atomics.notify(header, SLOT_WRITE);
    Atomics.notify(header, SLOT_READ);
    await worker.terminate();
    await onMain.catch(() => undefined);
    throw e;
  } finally {
    clearInterval(timer);
  }
}

function describe(r: RunResult): string {
  const n = r.consumer.records;
  return `${n} records, ${(r.consumer.bytes / 1e6).toFixed(0)} MB payload in ${(r.ms / 1000).toFixed(2)} s ` +
    `(${(n / r.ms / 1000).toFixed(2)} M rec/s); consumer parked ${r.consumer.parks}x, ` +
    `producer notified ${r.producer.notifies}x, found the ring full ${r.producer.fullWaits}x`;
}

for (const direction of ['main->worker', 'worker->main'] as const) {
  test(`bulk ${direction}: ${BULK_RECORDS} records of 0..max bytes, none lost, duplicated, reordered or corrupt`, async (t) => {
    const r = await runAcross({
      direction,
      capacity: 1 << 16,
      startIndex: 0xfff00000 | 0,            // wraps 2^32 after 1 MiB
      traffic: { mode: 'bulk', count: BULK_RECORDS, seed: direction === 'main->worker' ? 101 : 202 },
    });
    t.diagnostic(describe(r));
  });
}

for (const direction of ['main->worker', 'worker->main'] as const) {
  test(`lost-wake-up stress ${direction}: small ring, tiny bursts, consumer parks constantly, no wait timeouts`, async (t) => {
    const r = await runAcross({
      direction,
      capacity: 256,
      startIndex: 0xffffff00 | 0,
      traffic: { mode: 'stress', count: STRESS_RECORDS, seed: direction === 'main->worker' ? 303 : 404 },
    });
    t.diagnostic(describe(r));
    assert.ok(r.consumer.parks > STRESS_RECORDS / 20, `the consumer parked only ${r.consumer.parks} times`);
    assert.ok(r.producer.fullWaits > 100, `the producer found the ring full only ${r.producer.fullWaits} times`);
  });
}

test('lost-wake-up stress, the engine\'s pattern: notify deferred to once per turn, worker parked in the blocking waitForDataSync', async (t) => {
  const r = await runAcross({
    direction: 'main->worker',
    capacity: 256,
    startIndex: 0xffffff00 | 0,
    traffic: { mode: 'stress', count: STRESS_RECORDS, seed: 606, engineWake: true },
  });
  t.diagnostic(describe(r));
  assert.ok(r.consumer.parks > STRESS_RECORDS / 20, `the consumer parked only ${r.consumer.parks} times`);
  assert.ok(r.producer.notifies > 0, 'the deferred notifies were made');
});

test('the watchdog catches a lost wake-up: a producer that clears SLEEPING itself deadlocks', async (t) => {
  const t0 = performance.now();
  await assert.rejects(runAcross({
    direction: 'worker->main',
    capacity: 256,
    startIndex: 0,
    traffic: { mode: 'broken', count: 1_000_000, seed: 505 },   // ~10 s if it never deadlocked
    watchdogMs: 1000,
  }), /no progress for 1000 ms/);
  t.diagnostic(`deadlock detected after ${((performance.now() - t0) / 1000).toFixed(2)} s`);
});
