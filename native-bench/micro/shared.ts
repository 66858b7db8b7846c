/**
 * Constants and helpers shared by the micro-benchmark driver (run.ts) and its workers.
 */
import type { MessagePort } from 'node:worker_threads';

/** Int32 slots of the control SharedArrayBuffer, each on its own 64-byte line. */
export const CTRL_RECV = 0;        // records the worker has received so far (worker writes)
export const CTRL_ERRORS = 16;     // records with a wrong length (worker writes)
export const CTRL_STOP = 32;       // main sets 1: the worker reports and stops
export const CTRL_SLEEP = 48;      // never written: a word to Atomics.wait on as a precise sleep
export const CTRL_BYTES = 64 * 4;

/**
 * How long a consumer that found its ring empty keeps polling before it parks in waitForData().
 * Parking is cheap for the consumer but not for the producer: an Atomics.notify that wakes a
 * thread parked in Atomics.waitAsync costs the *notifying* thread tens of microseconds here (a
 * cross-vCPU wake-up), so a consumer that parks between two batches puts that cost on the main
 * thread once per batch. Bounded (see MEASURED.md: unbounded spinning wrecks tails). Workers
 * inherit the environment, so MICRO_CONSUMER_SPIN_US reaches them too.
 */
export const CONSUMER_SPIN_US = Math.max(0, Number(process.env.MICRO_CONSUMER_SPIN_US ?? 100) || 0);

/**
 * Polls `hasNext` for up to CONSUMER_SPIN_US microseconds (reading the clock every 32 polls);
 * true as soon as it returns true.
 */
export function spinForData(hasNext: () => boolean): boolean {
  if (hasNext()) return true;
  const until = performance.now() + CONSUMER_SPIN_US / 1000;
  do {
    for (let i = 0; i < 32; i++) if (hasNext()) return true;
  } while (performance.now() < until);
  return false;
}

/** Records a consumer hands to its callback per drain call (one read-index publish each). */
export const DRAIN_BATCH = 256;
/** An idle parked consumer re-checks CTRL_STOP this often. */
export const IDLE_RECHECK_MS = 50;

/** post-batch: one worker.postMessage of a buffer holding BATCH records back to back. */
export type ThroughputKind = 'ring' | 'post' | 'post-batch' | 'port';

export interface ThroughputWorkerData {
  kind: ThroughputKind;
  size: number;
  ctrl: SharedArrayBuffer;
  ring?: SharedArrayBuffer;
  port?: MessagePort;
}

export interface ThroughputTotals {
  received: number;
  errors: number;
  parks: number;
  checksum: number;
}

export type LatencyDirection = 'm2w' | 'w2m';

export interface LatencyWorkerData {
  direction: LatencyDirection;
  ring: SharedArrayBuffer;
  ctrl: SharedArrayBuffer;
  samples: number;
  gapMinMs: number;
  gapMaxMs: number;
}

export interface LatencyReport {
  /** Delays in nanoseconds (m2w only: measured in the worker). */
  delaysNs?: Float64Array;
  parks: number;
  received: number;
}

export const now = (): bigint => process.hrtime.bigint();

/** Blocks this thread for `ms` (fractions allowed) without spinning. */
export function sleepMs(ctrl: Int32Array, ms: number): void {
  Atomics.wait(ctrl, CTRL_SLEEP, 0, ms);
}

/** Deterministic pseudo-random numbers in [0, 1) (so runs are comparable). */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** Writes `t` (a hrtime.bigint value) little-endian into bytes[off .. off+8). */
export function putTime(bytes: Uint8Array, off: number, t: bigint): void {
  const lo = Number(t & 0xffffffffn);
  const hi = Number(t >> 32n);
  bytes[off] = lo & 0xff; bytes[off + 1] = (lo >>> 8) & 0xff;
  bytes[off + 2] = (lo >>> 16) & 0xff; bytes[off + 3] = lo >>> 24;
  bytes[off + 4] = hi & 0xff; bytes[off + 5] = (hi >>> 8) & 0xff;
  bytes[off + 6] = (hi >>> 16) & 0xff; bytes[off + 7] = hi >>> 24;
}

export function getTime(bytes: Uint8Array, off: number): bigint {
  const lo = (bytes[off]! | (bytes[off + 1]! << 8) | (bytes[off + 2]! << 16) | (bytes[off + 3]! << 24)) >>> 0;
  const hi = (bytes[off + 4]! | (bytes[off + 5]! << 8) | (bytes[off + 6]! << 16) | (bytes[off + 7]! << 24)) >>> 0;
  return (BigInt(hi) << 32n) | BigInt(lo);
}
