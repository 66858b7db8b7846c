/**
 * Cluster mode's redactions at the store layer (real redis-server): the REDACT script stores a
 * tombstone that history reads overlay and publishes it to every node following the room; the
 * redaction hash stays bounded by the stream (fields below the first kept seq are deleted by the
 * next redaction), has the room's TTL, and goes with the epoch.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { connectRedis, startRedis } from './helpers/redis-server.js';
import { waitFor } from './helpers/client.js';
import { ClusterStore } from '../workers/store/redis/cluster-store.js';
import { metaKey, redactKey } from '../workers/store/redis/keys.js';
import { msg } from './helpers/redis-frames.js';

guardHandles();


async function store(t: TestContext, url: string, id: string, told: string[]): Promise<ClusterStore> {
  const s = new ClusterStore({ urls: [url], node: id, heartbeatTtlMs: 3000, limits: { historyLimit: 10, roomTtlMs: 60_000 } }, {
    message() { /* not looked at */ }, epoch() { /* checked via meta */ }, lost() { /* trimmed on purpose */ }, health() { /* not looked at */ },
    presence() { /* not looked at */ }, redacted(room, seq, epoch) { told.push(`${room} ${seq} ${epoch}`); },
  });
  t.after(() => s.close());
  await s.start();
  return s;
}

const text = (f: Buffer): string => f.subarray(13).toString();

test('redact: the tombstone replaces the entry in every read and reaches the other node; unknown seq or epoch is refused; the hash is pruned below the first kept seq and goes with the epoch', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const toldA: string[] = []; const toldB: string[] = [];
  const [a, b] = [await store(t, redis.url, 'ra', toldA), await store(t, redis.url, 'rb', toldB)];
  const admin = await connectRedis(t, redis.url);
  const room = 'red-store';
  await a.join(room, 'c1', 'ann', null, null);
  await b.join(room, 'c2', 'bob', null, null);
  for (let i = 1; i <= 5; i++) assert.ok(!((await a.publishBatch(new Map([[room, [msg('ann', `m${i}`)]]]))).get(room) instanceof Error));
  const { epoch } = await a.meta(room);
  assert.ok(epoch !== null);
  const tomb = Buffer.from('tombstone-of-3');
  assert.equal(await a.redact(room, epoch, 3, tomb), true);
  await waitFor(() => toldB.length === 1 && toldA.length === 1, 'both nodes heard the redaction');
  assert.deepEqual(toldB, [`${room} 3 ${epoch}`]);
  // hist (latest, before, after) on the other node, and a join's missed.
  const all = await b.hist(room, { limit: 10 });
  assert.deepEqual(all.map((m) => [m.seq, m.seq === 3 ? m.frame.toString() : text(m.frame)]), [[1, 'm1'], [2, 'm2'], [3, 'tombstone-of-3'], [4, 'm4'], [5, 'm5']]);
  assert.equal((await b.hist(room, { before: 4, limit: 1 }))[0]!.frame.toString(), 'tombstone-of-3');
  assert.equal((await b.hist(room, { after: 2, limit: 1 }))[0]!.frame.toString(), 'tombstone-of-3');
  const j = await b.join(room, 'c3', 'cy', 2, epoch);
  assert.deepEqual(j.missed?.map((m) => m.seq === 3 ? m.frame.toString() : text(m.frame)), ['tombstone-of-3', 'm4', 'm5']);
  assert.ok(Number(await admin.call(['PTTL', redactKey(room)], 'pttl')) > 0, 'the hash has a TTL');
  // Refused: a seq the room never had, another epoch, a room that does not exist.
  assert.equal(await a.redact(room, epoch, 99, tomb), false);
  assert.equal(await a.redact(room, 'other-epoch', 2, tomb), false);
  assert.equal(await a.redact('no-room', epoch, 1, tomb), false);
  // 300 more messages: the stream is trimmed (MAXLEN ~ 10) past seq 3; the next redaction prunes 3.
  for (let k = 0; k < 30; k++) await a.publishBatch(new Map([[room, Array.from({ length: 10 }, (_, i) => msg('ann', `n${k}-${i}`))]]));
  const first = (await a.hist(room, { after: 0, limit: 1 }))[0]!.seq;
  assert.ok(first > 3, `trimmed past 3 (first kept ${first})`);
  assert.equal(await a.redact(room, epoch, 3, tomb), false, 'a trimmed seq is refused');
  assert.equal(await a.redact(room, epoch, 305, Buffer.from('t305')), true);
  const fields = (await admin.call(['HKEYS', redactKey(room)], 'hkeys') as Buffer[]).map((x) => x.toString()).sort();
  assert.deepEqual(fields, ['305', 'e'], 'seq 3 pruned, only the kept redaction and the epoch');
  // The room loses its meta (as after a Redis restart without it): the new epoch drops the hash.
  await admin.call(['DEL', metaKey(room)], 'del');
  await a.publishBatch(new Map([[room, [msg('ann', 'new')]]]));
  assert.equal(Number(await admin.call(['EXISTS', redactKey(room)], 'exists')), 0, 'redactions of the dead epoch deleted');
  assert.equal(text((await a.hist(room, { limit: 1 }))[0]!.frame), 'new');
});
