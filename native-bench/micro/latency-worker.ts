/**
 * Wake-up latency from an idle ring, one direction per worker.
 *
 *  m2w: this worker is the consumer, parked in waitForData(); main writes one 8-byte record
 *       holding process.hrtime.bigint() after each idle gap; this worker records now - stamp.
 *  w2m: this worker is the producer: it sleeps an idle gap (Atomics.wait), writes a stamped
 *       record and publishes; main, parked in waitForData(), records the delay.
 * A zero-length record ends an m2w run.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { RingReader, RingWriter } from '../../engine/ring/index.js';
import {
  spinForData, IDLE_RECHECK_MS, getTime, lcg, now, putTime, sleepMs,
  type LatencyReport, type LatencyWorkerData,
} from './shared.js';

const data = workerData as LatencyWorkerData;
const port = parentPort!;
const ctrl = new Int32Array(data.ctrl);

if (data.direction === 'm2w') {
  const reader = new RingReader(data.ring);
  const hasNext = (): boolean => reader.hasNext();
  const delays = new Float64Array(data.samples);
  let n = 0;
  let done = false;
  const onRecord = (bytes: Uint8Array, offset: number, length: number): void => {
    const t = now();
    if (length === 0) { done = true; return; }
    if (n < delays.length) delays[n++] = Number(t - getTime(bytes, offset));
  };
  port.on('message', () => { /* keeps the thread alive while parked */ });
  const loop = async (): Promise<void> => {
    while (!done) {
      if (reader.drain(onRecord) > 0) continue;
      if (spinForData(hasNext)) continue;
      await reader.waitForData(IDLE_RECHECK_MS);
    }
    const rep: LatencyReport = { delaysNs: delays.subarray(0, n), parks: reader.parks, received: n };
    port.postMessage(rep);
  };
  void loop();
} else {
  const writer = new RingWriter(data.ring);
  const rnd = lcg(0x5eed + 1);
  // Let main reach its parked state before the first sample.
  sleepMs(ctrl, 20);
  for (let i = 0; i < data.samples; i++) {
    sleepMs(ctrl, data.gapMinMs + rnd() * (data.gapMaxMs - data.gapMinMs));
    const off = writer.reserve(8);
    if (off < 0) throw new Error('latency ring full: main is not consuming');
    putTime(writer.bytes, off, now());
    writer.commit();
    writer.publish();
  }
  const rep: LatencyReport = { parks: 0, received: 0 };
  port.postMessage(rep);
}
