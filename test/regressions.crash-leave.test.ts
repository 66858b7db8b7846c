/**
 * Regression: a `leave` caught by a shard crash (queued behind the crash, answered `internal`)
 * must not leave the socket subscribed for good: a retried leave works, and no msg follows `left`.
 * Leaves for several rooms go out right behind the crash so that some of them land in the dead
 * shard's ring (which ones depends on timing; the outcome must not).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { joinRoom, openClient, roomsPerShard, startEngine } from './helpers/engine.js';
import { waitFor, type Frame } from './helpers/client.js';

guardHandles();

test('leaves racing a shard crash: each is answered left (after a retry if needed), and no msg follows', async (t) => {
  const engine = await startEngine(t, { shards: 2 });
  const rooms = roomsPerShard(engine, 2, 'crash-leave', 8)[0]!;
  const a = await openClient(t, engine, 'alice');
  const b = await openClient(t, engine, 'bob');
  for (const room of rooms) { await joinRoom(a, room); await joinRoom(b, room); }
  engine._crashShard(0, 'throw');
  const replies = await Promise.all(rooms.map((room) => a.request({ t: 'leave', room })));
  await waitFor(() => engine.stats().shards[0]!.restarts === 1 && engine.stats().shards[0]!.up, 'the shard restarted', 5000);
  for (let i = 0; i < rooms.length; i++) {
    let reply: Frame = replies[i]!;
    if (reply.t === 'err') {
      assert.equal(reply.code, 'internal', JSON.stringify(reply));
      reply = await a.request({ t: 'leave', room: rooms[i] });
    }
    assert.equal(reply.t, 'left', `${rooms[i]}: the leave (or its retry) is answered with left: ${JSON.stringify(reply)}`);
  }
  const leftAt = a.frames.length;
  for (const room of rooms) assert.equal((await b.request({ t: 'pub', room, body: 'after' })).t, 'ack');
  await waitFor(() => b.frames.filter((f) => f.t === 'msg' && f.body === 'after').length === rooms.length, 'bob got his msgs');
  const after = a.frames.slice(leftAt).filter((f) => f.t === 'msg');
  assert.deepEqual(after, [], 'no msg reaches alice after left');
});
