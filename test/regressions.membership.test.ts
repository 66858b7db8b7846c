/**
 * Membership stays one truth across the main thread and the shard (found in review of the
 * merged hardening work):
 * - a refused join (room_limit) followed by an accepted one for the same room, both in flight,
 *   used to leave the room out of the connection's set while the shard and uWS had it: the close
 *   never told the shard, so the member, its presence and the room outlived the connection;
 * - frames sent while a crashed shard's restart backs off used to reach the new incarnation
 *   before the replayed joins: a pub got not_joined, a leave left the socket subscribed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode } from '@msgpack/msgpack';
import { startEngine, openClient, joinRoom, pubTo } from './helpers/engine.js';
import { waitFor } from './helpers/client.js';
import { RawClient, wsFrame, OP_BINARY } from './helpers/raw-client.js';
import { guardHandles } from './helpers/leaks.js';

guardHandles();

test('a refused join then an accepted one for the same room: the close still removes the member', async (t) => {
  const engine = await startEngine(t, { shards: 1, maxRoomsPerShard: 1, roomTtlMs: 0 });
  const a = await RawClient.connect(engine.port, { user: 'alice' });
  t.after(() => a.close());
  await a.next((f) => f.t === 'hello');
  a.send({ t: 'join', room: 'full', ref: 1 });
  await a.next((f) => f.t === 'joined');
  // One write: join X (refused: the shard is full), leave full (frees the slot), join X (accepted).
  a.writeRaw(Buffer.concat([
    wsFrame(OP_BINARY, encode({ t: 'join', room: 'X', ref: 2 })),
    wsFrame(OP_BINARY, encode({ t: 'leave', room: 'full', ref: 3 })),
    wsFrame(OP_BINARY, encode({ t: 'join', room: 'X', ref: 4 })),
  ]));
  const r2 = await a.next((f) => f.ref === 2);
  const r3 = await a.next((f) => f.ref === 3);
  const r4 = await a.next((f) => f.ref === 4);
  assert.deepEqual([r2.t, r2.code, r3.t, r4.t], ['err', 'room_limit', 'left', 'joined']);
  assert.equal(engine.stats().connRooms, 1, 'the main thread counts the accepted join');
  a.send({ t: 'leave', room: 'X', ref: 5 });
  assert.equal((await a.next((f) => f.ref === 5)).t, 'left', 'the connection can leave the room it joined');
  a.send({ t: 'join', room: 'X', ref: 6 });
  assert.equal((await a.next((f) => f.ref === 6)).t, 'joined');
  a.destroy();
  await a.ended;
  await waitFor(() => engine.stats().shards[0]!.members === 0 && engine.stats().shards[0]!.rooms === 0, 'the close removed the member and the room', 5000);
  const b = await openClient(t, engine, 'bob');
  assert.equal((await b.request({ t: 'join', room: 'Y' })).t, 'joined', 'the slot is free for another user');
});

test('frames sent during a restart back-off see the rooms joined again', async (t) => {
  const engine = await startEngine(t, { shards: 1, shardRestartBudget: 5 });
  const a = await openClient(t, engine, 'alice');
  const b = await openClient(t, engine, 'bob');
  await joinRoom(a, 'r');
  await joinRoom(b, 'r');
  engine._crashShard(0, 'throw'); // the first restart is immediate
  await waitFor(() => { const s = engine.stats().shards[0]!; return s.restarts === 1 && s.up; }, 'restart 1', 10_000);
  await a.next((f) => f.t === 'joined' && f.ref === undefined, 5000, 'replayed joined (alice)');
  await b.next((f) => f.t === 'joined' && f.ref === undefined, 5000, 'replayed joined (bob)');
  engine._crashShard(0, 'throw'); // the second backs off 100 ms
  await waitFor(() => !engine.stats().shards[0]!.up, 'shard down', 5000);
  const [rp, rl] = await Promise.all([
    a.request({ t: 'pub', room: 'r', body: 'during back-off' }, 8000),
    b.request({ t: 'leave', room: 'r' }, 8000),
  ]);
  assert.equal(rp.t, 'ack', `a pub during the back-off: ${JSON.stringify(rp)}`);
  assert.equal(rl.t, 'left', `a leave during the back-off: ${JSON.stringify(rl)}`);
  await waitFor(() => { const s = engine.stats().shards[0]!; return s.restarts === 2 && s.up; }, 'restart 2', 10_000);
  const ack = await pubTo(a, 'r', 'after restart');
  const leaked = await b.next((f) => f.t === 'msg' && f.room === 'r' && f.seq === ack.seq, 1000, 'msg to bob').then(() => true, () => false);
  assert.equal(leaked, false, 'a connection that left gets no more of the room');
  assert.equal(engine.stats().shards[0]!.members, 1);
});
