/**
 * Replies keep request order on a connection even though acks are deferred to the end of the
 * main thread's output batch (engine.ts, flushAcks), and a shard that parks in Atomics.wait
 * still runs its housekeeping tick (room TTLs, stats) while idle.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { joinRoom, openClient, pubTo, startEngine } from './helpers/engine.js';
import type { Frame } from './helpers/client.js';

guardHandles();

test('pipelined pub / hist / read / who on one room: the replies come in request order, acks included', async (t) => {
  const engine = await startEngine(t, { shards: 1 });
  const c = await openClient(t, engine, 'orderly');
  const b = await openClient(t, engine, 'bystander');
  await joinRoom(c, 'order');
  await joinRoom(b, 'order');
  const kinds = ['pub', 'hist', 'pub', 'pub', 'read', 'who', 'pub', 'hist', 'pub', 'read'];
  for (let round = 0; round < 20; round++) {
    const before = c.frames.length;
    const replies: Promise<Frame>[] = [];
    for (let i = 0; i < kinds.length; i++) {
      const k = kinds[(i + round) % kinds.length]!;
      const frame: Frame = k === 'pub' ? { t: 'pub', room: 'order', body: { round, i } }
        : k === 'hist' ? { t: 'hist', room: 'order', limit: 3 }
          : k === 'read' ? { t: 'read', room: 'order', seq: 1 }
            : { t: 'who', room: 'order' };
      replies.push(c.request(frame));
    }
    const got = await Promise.all(replies);
    const sent = got.map((r) => r.ref as number); // request() gives each request the next ref
    assert.ok(got.every((r) => r.t !== 'err'), JSON.stringify(got.filter((r) => r.t === 'err')));
    const order = c.frames.slice(before).filter((f) => typeof f.ref === 'number' && sent.includes(f.ref)).map((f) => f.ref);
    assert.deepEqual(order, sent, `round ${round}: replies in request order`);
  }
  // The bystander saw every msg once, in seq order.
  const total = 20 * kinds.filter((k) => k === 'pub').length;
  await b.next((f) => f.t === 'msg' && f.seq === total, 5000);
  const seqs = b.framesOf('msg', 'order').map((m) => m.seq as number);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1));
  assert.equal(seqs.length, total);
});

test('an idle shard (parked in Atomics.wait) still runs its tick: an empty room is dropped after roomTtlMs', async (t) => {
  const engine = await startEngine(t, { shards: 1, roomTtlMs: 300 });
  const c = await openClient(t, engine, 'ttl-user');
  const first = await joinRoom(c, 'ttl-room');
  await pubTo(c, 'ttl-room', 'hello');
  const left = await c.request({ t: 'leave', room: 'ttl-room' });
  assert.equal(left.t, 'left');
  const shard = (): Record<string, unknown> => engine.stats().shards[0] as unknown as Record<string, unknown>;
  const t0 = Date.now();
  while (shard().rooms !== 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
  const waited = Date.now() - t0;
  assert.equal(shard().rooms, 0, `the empty room was not dropped within ${waited} ms`);
  assert.ok(waited >= 250, `dropped after ${waited} ms, before its TTL`);
  assert.ok((shard().heapUsed as number) > 0, 'the tick sampled the heap');
  assert.ok((shard().loopLagMs as number) < 250, `loop lag ${String(shard().loopLagMs)} ms`);
  const again = await joinRoom(c, 'ttl-room');
  assert.notEqual(again.epoch, first.epoch, 'a dropped room starts a new epoch');
  assert.equal(again.seq, 0);
});
