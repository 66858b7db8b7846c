/**
 * Regression (issue 10, item 16): a publisher faster than the slow-consumer sweep. Before, the
 * engine checked buffers every 100 ms and left uWS a backstop of 2 x maxBuffer + 16 MiB with
 * close-on-limit: in-process publishes that put more than that into one socket between two
 * sweeps made uWS drop it without a close frame (1006, messages lost from the client's view).
 * Now the guard sweeps by bytes published, so 4008 comes first however fast the publishers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { startEngine, openClient, joinRoom } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { assertContiguous, ranges } from './helpers/seqs.js';
import type { EngineError } from '../engine/errors.js';

guardHandles();

test('publishes far faster than any sweep interval still close a slow consumer with 4008, never 1006', async (t) => {
  const maxBuffer = 256 * 1024;
  const engine = await startEngine(t, { maxBufferBytes: maxBuffer, ringBytes: 64 << 20 });
  const slow = await openClient(t, engine, 'slow');
  await joinRoom(slow, 'burst');
  (slow.ws as unknown as { _socket: Socket })._socket.pause();
  const body = 'x'.repeat(60_000);
  let sent = 0;
  let overloaded = 0;
  // Bursts of 400 x 60 KB (24 MB each, rings big enough to hold one) with no pause: the pump
  // hands a whole burst to uWS in one event-loop turn, far more than any sweep interval allows.
  while (sent < 2000 && engine.stats().connections === 1) {
    const rs = await Promise.allSettled(Array.from({ length: 400 }, () => engine.publish('burst', body)));
    for (const r of rs) {
      if (r.status === 'fulfilled') sent++;
      else if ((r.reason as EngineError).code === 'SHARDCHAT_OVERLOADED') overloaded++;
      else throw r.reason;
    }
  }
  (slow.ws as unknown as { _socket: Socket })._socket.resume();
  const closed = await slow.closed;
  const got = slow.framesOf('msg', 'burst').map((f) => f.seq as number);
  assert.equal(closed.code, 4008, `slow consumer closed with ${closed.code} "${closed.reason}" after ${sent} publishes (${overloaded} overloaded); it got seqs ${ranges(got)}`);
  assertContiguous(got, 1, got.length, 'what the slow consumer got before 4008');
  assert.equal(engine.counters.slowConsumers, 1);
});
