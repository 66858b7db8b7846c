/**
 * Regression (issue 10, item 8): a shard that died between its outbound publish and marking
 * its input read left records whose output (the ack) was already delivered; the main thread
 * answered them again with `internal` ("retry"), so a client following the docs sent its pub
 * twice. Now the shard says, before each publish, which input that publish answers, and the
 * main thread answers only what the shard really did not handle.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine, openClient, joinRoom } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';

guardHandles();

test('a shard dying between its publish and its syncRead: the acked pub is not answered again with internal', async (t) => {
  const engine = await startEngine(t, { shards: 1 });
  const c = await openClient(t, engine, 'window');
  const j = await joinRoom(c, 'w');
  engine._crashShard(0, 'after-publish');
  const ack = await c.request({ t: 'pub', room: 'w', body: 'once' });
  assert.equal(ack.t, 'ack', JSON.stringify(ack));
  // The restart replays the membership: once its joined is here, every answer to the pub is too.
  const re = await c.next((f) => f.t === 'joined' && f.room === 'w' && f.ref === undefined, 10_000, 'the replayed joined');
  assert.notEqual(re.epoch, j.epoch);
  const answers = c.frames.filter((f) => f.ref === ack.ref);
  assert.deepEqual(answers.map((f) => f.t), ['ack'], `answers to the pub: ${JSON.stringify(answers)}`);
  assert.equal(engine.stats().shards[0]!.restarts, 1);
  assert.equal(c.framesOf('msg', 'w').length, 1);
});
