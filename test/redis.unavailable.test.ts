/**
 * Cluster mode when Redis misbehaves, against a real redis-server: every operation fails within
 * 1 s with the typed `unavailable` error (retryAfterMs), nothing is queued to run later, and the
 * health flags (/readyz) follow the connection.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { connectRedis, startRedis } from './helpers/redis-server.js';
import { waitFor } from './helpers/client.js';
import { RedisSequencer, type PublishInput } from '../workers/store/redis/sequencer.js';
import { RedisHistory } from '../workers/store/redis/history.js';
import { RedisSubscriber } from '../workers/store/redis/subscriber.js';
import { RedisConnection } from '../workers/store/redis/connection.js';
import { RedisUnavailableError } from '../workers/store/redis/errors.js';
import { streamKey } from '../workers/store/redis/keys.js';
import { ClusterStore } from '../workers/store/redis/cluster-store.js';

guardHandles();

const m = (text: string): PublishInput => ({ user: 'ann', cid: null, ts: 1, frame: Buffer.from(text), seqOffset: -1 });

async function failsFast(p: Promise<unknown>, what: string): Promise<RedisUnavailableError> {
  const t0 = performance.now();
  const err = await p.then(() => assert.fail(`${what} succeeded`), (e: unknown) => e);
  const ms = performance.now() - t0;
  assert.ok(err instanceof RedisUnavailableError, `${what}: ${String(err)}`);
  assert.equal(err.code, 'unavailable');
  assert.ok(err.retryAfterMs > 0);
  assert.ok(ms < 1000, `${what} failed after ${ms.toFixed(0)} ms`);
  return err;
}

test('Redis down: publish, read and subscribe fail within 1 s, are never run later; health follows', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const seq = new RedisSequencer(conn);
  const health: boolean[] = [];
  const sub = new RedisSubscriber({ url: redis.url, node: 'n1' }, conn, new RedisHistory(conn), {
    message() { /* none */ }, epoch() { /* none */ }, lost() { /* none */ }, presence() { /* none */ },
    health(h) { health.push(h); },
  });
  t.after(() => sub.close());
  await sub.start();
  assert.equal(sub.healthy, true);
  await seq.publish('down', [m('kept')]);

  await redis.stop('SIGKILL');
  await failsFast(seq.publish('down', [m('refused 1')]), 'publish just after the kill');
  await waitFor(() => !conn.healthy && !sub.healthy, 'both report unhealthy');
  const e = await failsFast(seq.publish('down', [m('refused 2')]), 'publish while down');
  assert.equal(e.maybeApplied, false, 'never sent');
  await failsFast(new RedisHistory(conn).latest('down', 10, 1 << 20), 'history read while down');
  await failsFast(sub.add('another'), 'subscribe while down');
  const late = new RedisConnection({ url: redis.url });
  t.after(() => late.close());
  await failsFast(late.connect(), 'connect while down');

  await redis.start();
  await waitFor(() => conn.healthy && sub.healthy, 'both healthy again', 10_000);
  assert.deepEqual(health, [true, false, true]);
  // Data were lost with the process (no persistence), and nothing refused was replayed later.
  assert.equal(await conn.call(['XLEN', streamKey('down')], 'test'), 0);
  await seq.publish('down', [m('after')]);
  assert.equal(await conn.call(['XLEN', streamKey('down')], 'test'), 1);
});

test('Redis hung (SIGSTOP): a sent command times out within 1 s as unavailable, flagged maybe-applied', async (t) => {
  const redis = await startRedis(t, { aof: true });
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url, { commandTimeoutMs: 500 });
  const seq = new RedisSequencer(conn);
  await seq.publish('hung', [m('one')]);
  const sub = new RedisSubscriber({ url: redis.url, node: 'h1' }, conn, new RedisHistory(conn), {
    message() { /* none */ }, epoch() { /* none */ }, lost() { /* none */ }, presence() { /* none */ }, health() { /* none */ },
  });
  t.after(() => sub.close());
  await sub.start();
  process.kill(redis.pid, 'SIGSTOP');
  let resumed = false;
  t.after(() => { if (!resumed) process.kill(redis.pid, 'SIGCONT'); });
  await failsFast(sub.add('hung-room'), 'subscribe on a stopped Redis');
  const e = await failsFast(seq.publish('hung', [m('two')]), 'publish to a stopped Redis');
  assert.equal(e.maybeApplied, true, 'the command was sent: it may run when Redis resumes');
  process.kill(redis.pid, 'SIGCONT');
  resumed = true;
  // It did run once Redis resumed: why a pub answered `unavailable` should carry a cid.
  await waitFor(async () => conn.healthy && (await conn.call(['XLEN', streamKey('hung')], 'test')) === 2, 'the in-flight publish applied late', 5000);
});

test('a node started while Redis is down: start() fails fast, the store turns healthy once Redis is up', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  await redis.stop();
  const store = new ClusterStore({ urls: [redis.url], node: 'boot', connection: { reconnectMaxMs: 200 }, subscriber: { reconnectMaxMs: 200 } }, {
    message() { /* none */ }, epoch() { /* none */ }, lost() { /* none */ }, presence() { /* none */ }, health() { /* polled */ },
  });
  t.after(() => store.close()); // also when start() rejected: the retries stop here
  await failsFast(store.start(), 'start while Redis is down');
  assert.equal(store.healthy, false);
  await redis.start();
  await waitFor(() => store.healthy, 'healthy once Redis is up', 10_000);
  const out = await store.publishBatch(new Map([['boot-room', [m('first')]]]));
  assert.equal((out.get('boot-room') as { outcomes: { seq: number }[] }).outcomes[0]!.seq, 1);
});
