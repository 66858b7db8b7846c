/**
 * Consumer side of the cross-thread throughput arms. Counts what it actually receives into the
 * control SAB (CTRL_RECV) and, when asked to stop, posts its totals back.
 *
 *  ring: a RingReader drains up to DRAIN_BATCH records per call, polls for CONSUMER_SPIN_US when
 *        empty, then parks in waitForData().
 *  post: one `message` event per worker.postMessage(Uint8Array) (structured clone).
 *  post-batch: one `message` event per worker.postMessage of BATCH records back to back.
 *  port: one `message` event per MessagePort.postMessage with a transferred ArrayBuffer.
 * Each received record's length is checked and its first byte read, so the payload is touched.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { RingReader } from '../../engine/ring/index.js';
import {
  spinForData, CTRL_ERRORS, CTRL_RECV, CTRL_STOP, DRAIN_BATCH, IDLE_RECHECK_MS,
  type ThroughputTotals, type ThroughputWorkerData,
} from './shared.js';

const data = workerData as ThroughputWorkerData;
const ctrl = new Int32Array(data.ctrl);
const size = data.size;
const port = parentPort!;

let received = 0;
let errors = 0;
let checksum = 0;

function report(parks: number): void {
  const totals: ThroughputTotals = { received, errors, parks, checksum };
  port.postMessage({ type: 'totals', totals });
}

function onBytes(u8: Uint8Array): void {
  received++;
  if (u8.byteLength !== size) Atomics.store(ctrl, CTRL_ERRORS, ++errors);
  checksum = (checksum + u8[0]!) | 0;
  Atomics.store(ctrl, CTRL_RECV, received);
}

if (data.kind === 'ring') {
  const reader = new RingReader(data.ring!);
  const hasNext = (): boolean => reader.hasNext();
  const onRecord = (bytes: Uint8Array, offset: number, length: number): void => {
    if (length !== size) errors++;
    checksum = (checksum + bytes[offset]!) | 0;
  };
  const loop = async (): Promise<void> => {
    for (;;) {
      const n = reader.drain(onRecord, DRAIN_BATCH);
      if (n > 0) {
        received += n;
        Atomics.store(ctrl, CTRL_RECV, received);
        if (errors !== 0) Atomics.store(ctrl, CTRL_ERRORS, errors);
        continue;
      }
      if (spinForData(hasNext)) continue;
      if (Atomics.load(ctrl, CTRL_STOP) !== 0) break;
      await reader.waitForData(IDLE_RECHECK_MS);
    }
    report(reader.parks);
  };
  // parentPort's listener keeps this thread alive while it is parked in Atomics.waitAsync
  // (a pending waitAsync alone does not: nodejs/node#44729).
  port.on('message', () => { /* control goes through CTRL_STOP */ });
  void loop();
} else if (data.kind === 'post-batch') {
  port.on('message', (m: unknown) => {
    if (m instanceof Uint8Array) {
      if (m.byteLength % size !== 0) Atomics.store(ctrl, CTRL_ERRORS, ++errors);
      for (let o = 0; o < m.byteLength; o += size) checksum = (checksum + m[o]!) | 0;
      received += m.byteLength / size;
      Atomics.store(ctrl, CTRL_RECV, received);
    } else if (m === 'stop') report(0);
  });
} else if (data.kind === 'post') {
  port.on('message', (m: unknown) => {
    if (m instanceof Uint8Array) onBytes(m);
    else if (m === 'stop') report(0);
  });
} else {
  const p = data.port!;
  p.on('message', (m: unknown) => {
    if (m instanceof Uint8Array) onBytes(m);
  });
  port.on('message', (m: unknown) => {
    if (m === 'stop') {
      report(0);
      p.close();
    }
  });
}
