/**
 * Cluster mode, presence and cursors across nodes, against a real redis-server: three node
 * identities; a user counted once over all tabs on all nodes; one presence event per user per
 * change; entries of a node whose heartbeat expired are swept; cursors never move backwards nor
 * past the room's seq, whichever node updates them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { connectRedis, startRedis } from './helpers/redis-server.js';
import { waitFor } from './helpers/client.js';
import { RedisPresence, isValidNodeId } from '../workers/store/redis/presence.js';
import { RedisCursors } from '../workers/store/redis/cursors.js';
import { RedisSequencer } from '../workers/store/redis/sequencer.js';
import { RedisHistory } from '../workers/store/redis/history.js';
import { RedisSubscriber } from '../workers/store/redis/subscriber.js';

guardHandles();

test('presence over three nodes: counted once per user, one event per 0<->1 change, who lists all', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conns = await Promise.all([0, 1, 2].map(() => connectRedis(t, redis.url)));
  const nodes = conns.map((c, i) => new RedisPresence(c, `node${i}`, 5_000));
  const events: string[] = [];
  const sub = new RedisSubscriber({ url: redis.url, node: 'watcher' }, conns[0]!, new RedisHistory(conns[0]!), {
    message() { /* none here */ }, epoch() { /* none */ }, lost() { /* none */ }, health() { /* none */ },
    presence(room, user, state) { events.push(`${room} ${user} ${state}`); },
  });
  t.after(() => sub.close());
  await sub.start();
  await sub.add('lobby');
  const [a, b, c] = nodes as [RedisPresence, RedisPresence, RedisPresence];
  assert.equal(await a.join('lobby', 'c1', 'ann'), 1);
  assert.equal(await b.join('lobby', 'c7', 'ann'), 2, 'a second tab on another node');
  assert.equal(await b.join('lobby', 'c7', 'ann'), 2, 'the same connection twice counts once');
  assert.equal(await c.join('lobby', 'c1', 'bob'), 1, 'the same conn id on another node is another connection');
  assert.deepEqual(await c.who('lobby'), ['ann', 'bob']);
  assert.equal(await a.members('lobby'), 2);
  assert.equal(await a.leave('lobby', 'c1', 'ann'), 1, 'ann still has a tab on node1');
  assert.equal(await a.leave('lobby', 'c1', 'ann'), 1, 'leaving twice changes nothing');
  assert.equal(await b.leave('lobby', 'c7', 'ann'), 0);
  assert.deepEqual(await a.who('lobby'), ['bob']);
  await waitFor(() => events.length >= 3, 'three presence events');
  assert.deepEqual(events, ['lobby ann join', 'lobby bob join', 'lobby ann leave']);
});

test('a node whose heartbeat expired is swept: its users leave unless present on another node', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const ttl = 300;
  const alive = new RedisPresence(conn, 'alive', 60_000);
  const dying = new RedisPresence(conn, 'dying', ttl);
  await alive.heartbeat();
  await dying.heartbeat();
  await dying.join('r1', 'c1', 'ann');
  await alive.join('r1', 'c2', 'ann');
  await dying.join('r1', 'c3', 'bob');
  await dying.join('r2', 'c3', 'bob');
  assert.deepEqual(await alive.sweep(), { removed: 0, more: false }, 'nothing to sweep while both are alive');
  // 'dying' stops sending heartbeats (as after SIGKILL): its key expires after the TTL.
  await waitFor(async () => (await conn.call(['EXISTS', 'sc:node:dying'], 'test')) === 0, 'the heartbeat expired', ttl * 10);
  const swept = await alive.sweep(2);
  assert.deepEqual(swept, { removed: 2, more: true }, 'the budget bounds one call');
  assert.deepEqual(await alive.sweep(), { removed: 1, more: false });
  assert.deepEqual(await alive.who('r1'), ['ann'], 'ann stays: her tab on the live node');
  assert.deepEqual(await alive.who('r2'), []);
  assert.equal(await alive.join('r1', 'c2', 'ann'), 1, 'one connection left');
});

test('node ids are checked (no colon: it separates node and conn)', () => {
  assert.equal(isValidNodeId('node-1.a_b'), true);
  assert.equal(isValidNodeId('a:b'), false);
  assert.equal(isValidNodeId(''), false);
  assert.throws(() => new RedisPresence(null as never, 'x:y', 1000), /node id/);
});

test('cursors: shared by all nodes, never backwards, never past the room seq', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [n1, n2] = await Promise.all([connectRedis(t, redis.url), connectRedis(t, redis.url)]);
  const frame = Buffer.from('frame');
  const seq = new RedisSequencer(n1);
  const { epoch } = await seq.publish('cur', Array.from({ length: 5 }, () => ({ user: 'ann', cid: null, ts: 1, frame, seqOffset: -1 })));
  const c1 = new RedisCursors(n1);
  const c2 = new RedisCursors(n2);
  assert.equal(await c1.get('cur', 'bob'), null);
  assert.equal(await c1.advance('cur', 'bob', 3), 3);
  assert.equal(await c2.get('cur', 'bob'), 3, 'seen by the other node');
  assert.equal(await c2.advance('cur', 'bob', 2), 3, 'a stale update does not move it back');
  assert.equal(await c2.advance('cur', 'bob', 99), 5, 'capped at the room seq');
  assert.equal(await c1.advance('cur', 'bob', 4, epoch), 5);
  assert.equal(await c1.advance('cur', 'bob', 5, 'old-epoch'), null, 'an update for another epoch is refused');
  assert.equal(await c1.advance('nowhere', 'bob', 1), null, 'a room Redis does not have');
  await assert.rejects(c1.advance('cur', 'bob', -1), RangeError);
});
