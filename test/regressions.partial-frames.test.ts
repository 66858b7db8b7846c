/**
 * Regression (issue 10, item 1): partial frames. uWebSockets.js buffers a message until its
 * last byte arrives, up to its maxPayloadLength, before the engine's maxFrame check can run.
 * That length was max(16 MiB, 2 x maxFrameBytes): six sockets each sending part of a declared
 * 16 MiB frame made the process hold tens of MiB and stayed open. Now it is maxFrameBytes plus
 * a small constant, and uWS drops a socket whose frame header announces more (measured: at the
 * header, no close frame, close handler code 1006).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { RawClient } from './helpers/raw-client.js';

guardHandles();

const SOCKETS = 6;
const DECLARED = 16 << 20;
const SENT = 8 << 20;

/** A masked binary frame header announcing `len` payload bytes (64-bit length form). */
function header(len: number): Buffer {
  const h = Buffer.alloc(14);
  h[0] = 0x82;
  h[1] = 0x80 | 127;
  h.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
  h.writeUInt32BE(len >>> 0, 6);
  return h; // mask key 0: the payload goes as written
}

/** Writes `bytes` of payload in 1 MiB chunks, waiting for drain; stops early when the socket closes. */
async function writePartial(c: RawClient, chunk: Buffer, bytes: number): Promise<void> {
  c.writeRaw(header(DECLARED));
  for (let sent = 0; sent < bytes && !c.socketClosed && !c.socket.destroyed; sent += chunk.length) {
    if (!c.socket.write(chunk)) {
      await Promise.race([new Promise((r) => c.socket.once('drain', r)), c.ended]);
    }
  }
}

test('a frame header announcing more than maxFrame + 4 KiB is dropped at once; partial frames hold no memory', async (t) => {
  const engine = await startEngine(t, {});
  const clients = await Promise.all(Array.from({ length: SOCKETS }, () => RawClient.connect(engine.port, {})));
  t.after(() => { for (const c of clients) c.destroy(); });
  for (const c of clients) await c.next((f) => f.t === 'hello', 3000, 'hello');
  global.gc?.();
  const rss0 = process.memoryUsage().rss;
  const chunk = Buffer.alloc(1 << 20, 0x61); // one buffer for every write: the client side allocates nothing per socket
  await Promise.all(clients.map((c) => writePartial(c, chunk, SENT)));
  await Promise.all(clients.map((c) => c.waitEnded(5000)));
  const grew = process.memoryUsage().rss - rss0;
  for (const c of clients) {
    assert.equal(c.closeFrame, null, 'uWS drops the socket without a close frame (documented in docs/PROTOCOL.md)');
  }
  assert.equal(engine.counters.closedByCode.get(1006), SOCKETS, `closes seen by the engine: ${JSON.stringify([...engine.counters.closedByCode])}`);
  // Before the fix uWS held 6 x 8 MiB here. The bound is maxFrameBytes + 4 KiB per socket
  // (6 x 68 KiB); 16 MiB leaves room for the allocator's noise.
  assert.ok(grew < 16 << 20, `RSS grew by ${(grew / 1048576).toFixed(1)} MiB while ${SOCKETS} sockets sent ${SENT >> 20} MiB each of a declared ${DECLARED >> 20} MiB frame`);
  assert.equal(engine.stats().connections, 0);
});

test('a message between maxFrame and maxFrame + 4 KiB still gets close 1009 with a close frame', async (t) => {
  const engine = await startEngine(t, { maxFrameBytes: 4096 });
  const c = await RawClient.connect(engine.port, {});
  t.after(() => c.destroy());
  await c.next((f) => f.t === 'hello', 3000, 'hello');
  c.sendPayload(new Uint8Array(4096 + 4096).fill(0x90));
  await c.waitEnded(5000);
  assert.equal(c.closeFrame?.code, 1009, `close frame ${JSON.stringify(c.closeFrame)}`);
});
