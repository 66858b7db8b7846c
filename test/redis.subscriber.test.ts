/**
 * Cluster mode, the node's subscriber, against a real redis-server: pub/sub is at most once, so
 * the subscriber checks every room's seq continuity, fills holes from the stream, replaces a
 * dropped connection and resynchronises, detects a new epoch after Redis lost its data, and
 * probes an idle connection. The consumer must see each room's seqs contiguous, each once.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { connectRedis, startRedis } from './helpers/redis-server.js';
import { assertContiguous } from './helpers/seqs.js';
import { waitFor } from './helpers/client.js';
import { RedisSequencer, DEFAULT_SEQUENCER_LIMITS, type PublishInput } from '../workers/store/redis/sequencer.js';
import { metaKey } from '../workers/store/redis/keys.js';
import { RedisHistory } from '../workers/store/redis/history.js';
import { RedisSubscriber, type SubscriberOptions } from '../workers/store/redis/subscriber.js';
import type { RedisConnection } from '../workers/store/redis/connection.js';
import { readSeq } from '../workers/store/redis/wire.js';

guardHandles();

function msg(text: string): PublishInput {
  const body = Buffer.from(text);
  const f = Buffer.alloc(13 + body.length);
  f.write('\xa3seq', 0, 'latin1');
  f[4] = 0xcf;
  body.copy(f, 13);
  return { user: 'ann', cid: null, ts: Date.now(), frame: f, seqOffset: 5 };
}

interface Seen {
  seqs: Map<string, number[]>;
  epochs: string[];
  lost: string[];
  health: boolean[];
}

async function subscriber(t: TestContext, url: string, conn: RedisConnection, opts: Partial<SubscriberOptions> = {}): Promise<{ sub: RedisSubscriber; seen: Seen }> {
  const seen: Seen = { seqs: new Map(), epochs: [], lost: [], health: [] };
  const sub = new RedisSubscriber({ url, node: 'n1', ...opts }, conn, new RedisHistory(conn), {
    message(room, seq, frame) {
      assert.equal(readSeq(frame, 5), seq, 'the frame carries its seq');
      const l = seen.seqs.get(room) ?? [];
      l.push(seq);
      seen.seqs.set(room, l);
    },
    epoch(_room, epoch) { seen.epochs.push(epoch); },
    lost(room, a, b) { seen.lost.push(`${room}:${a}..${b}`); },
    presence() { /* not in these tests */ },
    health(h) { seen.health.push(h); },
  });
  t.after(() => sub.close());
  await sub.start();
  return { sub, seen };
}

/** add + read + begin, as a joiner does: subscribe first, read the room's state, then deliver after it. */
async function follow(sub: RedisSubscriber, conn: RedisConnection, room: string): Promise<{ epoch: string; seq: number }> {
  await sub.add(room);
  const r = await new RedisHistory(conn).read(room, { user: null, since: null, sinceEpoch: null, maxMissed: 0, maxBytes: 0, roomTtlMs: 0 });
  sub.begin(room, r.epoch, r.seq);
  return { epoch: r.epoch, seq: r.seq };
}

test('CLIENT KILL TYPE pubsub while publishing: the subscriber fills the gap, seqs stay contiguous', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const admin = await connectRedis(t, redis.url);
  const { sub, seen } = await subscriber(t, redis.url, conn);
  const rooms = ['kill-a', 'kill-b'];
  for (const r of rooms) await follow(sub, conn, r);
  const seq = new RedisSequencer(await connectRedis(t, redis.url));
  const total = 400;
  let killed = 0;
  for (let i = 0; i < total / 4; i++) {
    await Promise.all(rooms.map((r) => seq.publish(r, [msg(`${i}a`), msg(`${i}b`)])));
    if (i === 30) killed += (await admin.call(['CLIENT', 'KILL', 'TYPE', 'pubsub'], 'test')) as number;
    if (i === 70) {
      // Kill the replacement too, once it is up (messages 31..70 were published while it was not).
      await waitFor(() => sub.reconnects >= 1 && sub.healthy, 'the first replacement subscribed');
      killed += (await admin.call(['CLIENT', 'KILL', 'TYPE', 'pubsub'], 'test')) as number;
    }
  }
  assert.ok(killed >= 2, `killed ${killed} pub/sub connections`);
  await waitFor(() => rooms.every((r) => (seen.seqs.get(r)?.length ?? 0) >= total / 2), 'every message delivered', 10_000);
  for (const r of rooms) assertContiguous(seen.seqs.get(r)!, 1, total / 2, `room ${r}`);
  assert.ok(sub.reconnects >= 2, `reconnects: ${sub.reconnects}`);
  assert.deepEqual(seen.lost, []);
  assert.deepEqual(seen.epochs, []);
  await waitFor(() => sub.healthy, 'healthy again');
});

test('a foreign payload on a room channel is counted and checked against the stream, not delivered', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const { sub, seen } = await subscriber(t, redis.url, conn);
  await follow(sub, conn, 'foreign');
  await conn.call(['PUBLISH', 'sc:r:foreign', 'hello'], 'test');
  await new RedisSequencer(conn).publish('foreign', [msg('real')]);
  await waitFor(() => seen.seqs.get('foreign')?.length === 1, 'the real message');
  assert.equal(sub.badPayloads, 1);
});

test('a message published into a hole is buffered until the hole is filled from the stream', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const { sub, seen } = await subscriber(t, redis.url, conn);
  const seq = new RedisSequencer(conn);
  await seq.publish('hole', [msg('1'), msg('2'), msg('3')]);
  // The joiner read seq 1 (say, an older read): 2 and 3 are only in the stream.
  await sub.add('hole');
  const { epoch } = await new RedisHistory(conn).read('hole', { user: null, since: null, sinceEpoch: null, maxMissed: 0, maxBytes: 0, roomTtlMs: 0 });
  sub.begin('hole', epoch, 1);
  await seq.publish('hole', [msg('4')]);
  await waitFor(() => (seen.seqs.get('hole')?.length ?? 0) >= 3, 'seqs 2..4');
  assertContiguous(seen.seqs.get('hole')!, 2, 4, 'hole');
  assert.ok(sub.fills >= 1);
});

test('Redis restarted without persistence: resubscribed, the new epoch is detected and delivered from 1', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const { sub, seen } = await subscriber(t, redis.url, conn);
  const before = await follow(sub, conn, 'epoch-room');
  const seq = new RedisSequencer(conn);
  await seq.publish('epoch-room', [msg('a'), msg('b')]);
  await waitFor(() => seen.seqs.get('epoch-room')?.length === 2, 'two messages before the restart');
  await redis.restart('SIGKILL');
  await waitFor(() => sub.healthy && sub.reconnects >= 1 && conn.healthy, 'subscriber and commands reconnected', 10_000);
  const after = await seq.publish('epoch-room', [msg('c')]);
  assert.notEqual(after.epoch, before.epoch, 'a new epoch');
  assert.deepEqual(after.outcomes, [{ seq: 1, duplicate: false }]);
  await waitFor(() => seen.seqs.get('epoch-room')!.length === 3, 'the new epoch message delivered');
  assert.deepEqual(seen.seqs.get('epoch-room'), [1, 2, 1]);
  assert.deepEqual(seen.epochs, [after.epoch], 'one epoch change reported');
  assert.ok(seen.health.includes(false), 'health went down');
});

test('Redis restarted with AOF appendfsync always: epoch and seq continue', async (t) => {
  const redis = await startRedis(t, { aof: true });
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const { sub, seen } = await subscriber(t, redis.url, conn);
  const before = await follow(sub, conn, 'aof-room');
  const seq = new RedisSequencer(conn);
  await seq.publish('aof-room', [msg('a'), msg('b')]);
  await redis.restart('SIGKILL');
  await waitFor(() => sub.healthy && sub.reconnects >= 1 && conn.healthy, 'reconnected', 10_000);
  const after = await seq.publish('aof-room', [msg('c')]);
  assert.equal(after.epoch, before.epoch);
  assert.deepEqual(after.outcomes, [{ seq: 3, duplicate: false }]);
  await waitFor(() => seen.seqs.get('aof-room')?.length === 3, 'three messages');
  assertContiguous(seen.seqs.get('aof-room')!, 1, 3, 'aof-room');
  assert.deepEqual(seen.epochs, []);
});

test('an idle subscription whose probe does not come back is replaced', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const admin = await connectRedis(t, redis.url);
  const { sub, seen } = await subscriber(t, redis.url, conn, { probeIntervalMs: 150, probeTimeoutMs: 200 });
  await follow(sub, conn, 'idle');
  await waitFor(() => sub.healthy, 'healthy');
  // Redis holds every command (the probe's PUBLISH included) for 1 s: the echo cannot arrive.
  await admin.call(['CLIENT', 'PAUSE', '1000', 'ALL'], 'test');
  await waitFor(() => seen.health.includes(false), 'the probe timed out', 3000);
  await waitFor(() => sub.healthy && sub.reconnects >= 1, 'reconnected after the pause', 10_000);
  await new RedisSequencer(conn).publish('idle', [msg('after')]);
  await waitFor(() => seen.seqs.get('idle')?.length === 1, 'delivery works again');
});

test('a hole the stream no longer holds is reported lost, then delivery continues from what is kept', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  await conn.call(['CONFIG', 'SET', 'stream-node-max-entries', '10'], 'test');
  const { sub, seen } = await subscriber(t, redis.url, conn);
  const seq = new RedisSequencer(conn, { ...DEFAULT_SEQUENCER_LIMITS, historyLimit: 20 });
  const { epoch } = await seq.publish('behind', Array.from({ length: 100 }, (_, i) => msg(`${i}`)));
  const first = await new RedisHistory(conn).firstKept('behind');
  assert.ok(first !== null && first > 1 && first <= 81, `first kept ${first}`);
  // This node's position is seq 0: 1..first-1 are gone from the stream.
  await sub.add('behind');
  sub.begin('behind', epoch, 0);
  await seq.publish('behind', [msg('live')]);
  await waitFor(() => (seen.seqs.get('behind')?.length ?? 0) === 101 - first! + 1, 'the kept messages and the live one');
  assert.deepEqual(seen.lost, [`behind:1..${first! - 1}`]);
  assertContiguous(seen.seqs.get('behind')!, first!, 101, 'after the loss');
});

test('a room whose meta key vanished (eviction) starts a new epoch that the subscriber follows', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const { sub, seen } = await subscriber(t, redis.url, conn);
  await follow(sub, conn, 'evicted');
  const seq = new RedisSequencer(conn);
  const before = await seq.publish('evicted', [msg('a'), msg('b')]);
  await waitFor(() => seen.seqs.get('evicted')?.length === 2, 'two messages');
  await conn.call(['DEL', metaKey('evicted')], 'test');
  const after = await seq.publish('evicted', [msg('c')]);
  assert.notEqual(after.epoch, before.epoch);
  assert.deepEqual(after.outcomes, [{ seq: 1, duplicate: false }], 'the stale stream was dropped, seq 1 again');
  await waitFor(() => seen.seqs.get('evicted')?.length === 3, 'the new epoch delivered');
  assert.deepEqual(seen.seqs.get('evicted'), [1, 2, 1]);
  assert.deepEqual(seen.epochs, [after.epoch]);
});
