/**
 * Cluster mode at engine level (issue 12, docs/CLUSTER.md §9): two or three in-process engines
 * with `redis` on one real redis-server, real WebSocket clients on each. One order per room
 * across nodes, acks after their msg, dup cids across nodes, presence and `who` over all nodes,
 * shared cursors, Redis going away (`unavailable`, /readyz) and coming back, an engine started
 * while Redis is down, and the HTTP API publishing from one node to members on another.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { guardHandles } from './helpers/leaks.js';
import { apiPost, type ApiReply } from './helpers/api.js';
import { connectRedis, startRedis, type RedisServer } from './helpers/redis-server.js';
import { openClient, joinRoom, startEngine } from './helpers/engine.js';
import { TestClient, httpGet, waitFor, type Frame } from './helpers/client.js';
import { SignJWT } from 'jose';
import { createEngine, type Engine, type EngineOptions } from '../engine/index.js';

guardHandles();

const KEY = 'an-api-key-for-cluster-tests-0123';

function node(t: TestContext, redis: RedisServer, id: string, opts: EngineOptions = {}): Promise<Engine> {
  return startEngine(t, { redis: redis.url, nodeId: id, shards: 2, drainTimeoutMs: 3000, ...opts });
}

const msgs = (c: TestClient, room: string): Frame[] => c.framesOf('msg', room);
const seqs = (c: TestClient, room: string): number[] => msgs(c, room).map((f) => Number(f.seq));
const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

const post = (port: number, method: string, body: unknown): Promise<ApiReply> => apiPost(port, method, body, KEY);

/** Every shard's shardchat_store_healthy gauge has value `v`. */
const storeHealthy = (metrics: string, v: 0 | 1): boolean => ['0', '1'].every((k) => metrics.includes(`shardchat_store_healthy{shard="${k}"} ${v}`));

async function ready(e: Engine): Promise<number> {
  return (await httpGet(e.port, '/readyz')).status;
}

test('a room has one order across nodes: every member on every node gets every message once, in seq order; acks follow their msg', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b, c] = await Promise.all([node(t, redis, 'na'), node(t, redis, 'nb'), node(t, redis, 'nc')]);
  const room = 'one-order';
  const clients = [await openClient(t, a, 'ann'), await openClient(t, b, 'bob'), await openClient(t, c, 'cy'), await openClient(t, b, 'bea')];
  for (const cl of clients) await joinRoom(cl, room);
  const N = 60;
  // Mixed senders on three nodes, sent without waiting: Redis orders them.
  const acks: Promise<Frame>[] = [];
  for (let i = 0; i < N; i++) acks.push(clients[i % 3]!.request({ t: 'pub', room, body: { i } }));
  const got = await Promise.all(acks);
  for (const ack of got) assert.equal(ack.t, 'ack', JSON.stringify(ack));
  assert.deepEqual([...got.map((x) => Number(x.seq))].sort((x, y) => x - y), range(1, N), 'each pub got its own seq');
  for (const cl of clients) await waitFor(() => msgs(cl, room).length >= N, `${cl.label} has ${N} messages`);
  const order = msgs(clients[0]!, room).map((f) => `${String(f.seq)}:${JSON.stringify(f.body)}`);
  for (const cl of clients) {
    assert.deepEqual(seqs(cl, room), range(1, N), `${cl.label}: seqs 1..${N}, each once, in order`);
    assert.deepEqual(msgs(cl, room).map((f) => `${String(f.seq)}:${JSON.stringify(f.body)}`), order, `${cl.label}: the same message at each seq`);
  }
  // A sender's ack of seq s comes after its copy of msg s.
  for (const cl of clients.slice(0, 3)) {
    for (const ack of cl.framesOf('ack', room)) {
      const ackAt = cl.frames.indexOf(ack);
      const msgAt = cl.frames.findIndex((f) => f.t === 'msg' && f.seq === ack.seq);
      assert.ok(msgAt >= 0 && msgAt < ackAt, `${cl.label}: msg ${String(ack.seq)} (at ${msgAt}) before its ack (at ${ackAt})`);
    }
  }
  await new Promise((r) => setTimeout(r, 100));
  for (const cl of clients) assert.equal(msgs(cl, room).length, N, `${cl.label}: no message twice`);
});

test('a cid repeated on another node gets the original seq with dup: true, and no second message', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await Promise.all([node(t, redis, 'na'), node(t, redis, 'nb')]);
  const room = 'dup-cid';
  const tabA = await openClient(t, a, 'ann');
  const tabB = await openClient(t, b, 'ann');
  const watcher = await openClient(t, b, 'wat');
  for (const c of [tabA, tabB, watcher]) await joinRoom(c, room);
  const first = await tabA.request({ t: 'pub', room, body: 'once', cid: 'c-1' });
  assert.equal(first.t, 'ack');
  assert.equal(first.dup, undefined);
  const again = await tabB.request({ t: 'pub', room, body: 'once', cid: 'c-1' });
  assert.equal(again.t, 'ack', JSON.stringify(again));
  assert.equal(again.seq, first.seq);
  assert.equal(again.dup, true);
  const next = await tabB.request({ t: 'pub', room, body: 'next', cid: 'c-2' });
  assert.equal(next.seq, Number(first.seq) + 1);
  await waitFor(() => msgs(watcher, room).length >= 2, 'watcher has both messages');
  assert.deepEqual(msgs(watcher, room).map((f) => f.body), ['once', 'next']);
});

test('presence across nodes: one event per user over tabs on two nodes; who lists every node\'s members; read on A is unread on B', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await Promise.all([node(t, redis, 'na'), node(t, redis, 'nb')]);
  const room = 'presence-x';
  const obs = await openClient(t, a, 'obs');
  await joinRoom(obs, room);
  const ann1 = await openClient(t, a, 'ann');
  const ann2 = await openClient(t, b, 'ann');
  await joinRoom(ann1, room);
  await obs.next((f) => f.t === 'presence' && f.user === 'ann' && f.state === 'join');
  await joinRoom(ann2, room);
  const who = await ann2.request({ t: 'who', room });
  assert.equal(who.t, 'who');
  assert.deepEqual([...(who.users as string[])].sort(), ['ann', 'obs'], 'who on B lists the members on A');
  // ann's second tab (on B) made no second join event; her first tab leaving makes no leave event.
  const left = await ann1.request({ t: 'leave', room });
  assert.equal(left.t, 'left');
  const bob = await openClient(t, b, 'bob');
  await joinRoom(bob, room);
  await obs.next((f) => f.t === 'presence' && f.user === 'bob' && f.state === 'join');
  assert.equal(obs.framesOf('presence', room).filter((f) => f.user === 'ann').length, 1, 'ann: one presence event so far');
  await ann2.close();
  await obs.next((f) => f.t === 'presence' && f.user === 'ann' && f.state === 'leave');
  assert.equal(obs.framesOf('presence', room).filter((f) => f.user === 'ann').length, 2, 'ann: join once, leave once');

  // Shared cursors: 5 messages, rd reads up to 3 on A; a tab of rd on B joins with unread 2.
  const rdA = await openClient(t, a, 'rd');
  await joinRoom(rdA, room);
  for (let i = 0; i < 5; i++) assert.equal((await bob.request({ t: 'pub', room, body: i })).t, 'ack');
  const top = Number((await bob.request({ t: 'pub', room, body: 'last' })).seq);
  await waitFor(() => seqs(rdA, room).includes(top), 'rd on A saw the last message');
  const r = await rdA.request({ t: 'read', room, seq: top - 2 });
  assert.equal(r.t, 'ack');
  assert.equal(r.seq, top - 2);
  const rdB = await openClient(t, b, 'rd');
  const j = await joinRoom(rdB, room);
  assert.equal(j.unread, 2, `joined.unread on B after read on A: ${JSON.stringify(j)}`);
  assert.equal(j.seq, top);
  // A stale read never moves the cursor back.
  const stale = await rdB.request({ t: 'read', room, seq: 1 });
  assert.equal(stale.seq, top - 2);
});

test('Redis stopped: a pub is answered unavailable within 1 s and never delivered; /readyz 503, then 200 after the restart', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await Promise.all([node(t, redis, 'na'), node(t, redis, 'nb')]);
  const room = 'outage';
  const ann = await openClient(t, a, 'ann');
  const bob = await openClient(t, b, 'bob');
  const epoch0 = (await joinRoom(ann, room)).epoch;
  await joinRoom(bob, room);
  assert.equal((await ann.request({ t: 'pub', room, body: 'before' })).t, 'ack');
  await waitFor(async () => (await ready(a)) === 200 && (await ready(b)) === 200, 'both ready');

  await redis.stop('SIGKILL');
  const t0 = performance.now();
  const refused = await ann.request({ t: 'pub', room, body: 'refused', cid: 'r-1' });
  const ms = performance.now() - t0;
  assert.equal(refused.t, 'err', JSON.stringify(refused));
  assert.equal(refused.code, 'unavailable');
  assert.ok(Number(refused.retryAfterMs) > 0, 'retryAfterMs given');
  assert.ok(ms < 1000, `answered after ${ms.toFixed(0)} ms`);
  await waitFor(async () => (await ready(a)) === 503 && (await ready(b)) === 503, '/readyz 503 on both nodes while Redis is down');
  // Each shard refreshes its slot every 500 ms: both show 0 soon after /readyz turned 503.
  await waitFor(async () => storeHealthy((await httpGet(a.port, '/metrics')).body, 0), 'shardchat_store_healthy 0 for both shards');

  await redis.start();
  await waitFor(async () => (await ready(a)) === 200 && (await ready(b)) === 200, '/readyz 200 on both nodes after the restart', 10_000);
  assert.ok(storeHealthy((await httpGet(a.port, '/metrics')).body, 1), 'shardchat_store_healthy 1 for both shards');
  // The rooms live on: a new join and pub work; the refused message never shows up anywhere.
  const cy = await openClient(t, b, 'cy');
  await joinRoom(cy, room);
  const after = await cy.request({ t: 'pub', room, body: 'after' });
  assert.equal(after.t, 'ack', JSON.stringify(after));
  for (const c of [ann, bob, cy]) await waitFor(() => msgs(c, room).some((f) => f.body === 'after'), `${c.label} has the message sent after the restart`);
  await new Promise((r) => setTimeout(r, 200));
  for (const c of [ann, bob, cy]) assert.ok(!msgs(c, room).some((f) => f.body === 'refused'), `${c.label} never got the refused message`);
  // Redis came back without its data: the room has a new epoch, and the members on both nodes
  // were told with an unsolicited joined (no ref) before the new epoch's messages.
  for (const c of [ann, bob]) {
    const re = c.framesOf('joined', room).filter((f) => f.ref === undefined);
    assert.ok(re.length >= 1, `${c.label} got an unsolicited joined: ${JSON.stringify(c.framesOf('joined', room))}`);
    const last = re[re.length - 1]!;
    assert.notEqual(last.epoch, epoch0, `${c.label}: a new epoch`);
    const afterMsg = c.frames.findIndex((f) => f.t === 'msg' && f.body === 'after');
    assert.ok(c.frames.indexOf(last) < afterMsg, `${c.label}: joined before the new epoch's messages`);
    assert.equal(msgs(c, room).find((f) => f.body === 'after')!.seq, after.seq);
  }
});

test('an engine created while Redis is down listens, answers /readyz 503 and unavailable, and turns ready by itself', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  await redis.stop('SIGKILL');
  const a = await node(t, redis, 'na', { apiKey: KEY });
  assert.equal(await ready(a), 503);
  const ann = await openClient(t, a, 'ann');
  const j = await ann.request({ t: 'join', room: 'late' });
  assert.equal(j.t, 'err', JSON.stringify(j));
  assert.equal(j.code, 'unavailable', JSON.stringify(j));
  const p = await post(a.port, 'publish', { room: 'late', body: 'x' });
  assert.equal(p.status, 503, JSON.stringify(p.body));
  assert.equal((p.body.error as { code: string }).code, 'unavailable');
  await redis.start();
  await waitFor(async () => (await ready(a)) === 200, '/readyz 200 once Redis is up', 10_000);
  await joinRoom(ann, 'late');
  assert.equal((await ann.request({ t: 'pub', room: 'late', body: 'ok' })).t, 'ack');
});

test('the HTTP API on one node publishes to members on another; history and presence span the nodes', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await Promise.all([node(t, redis, 'na', { apiKey: KEY }), node(t, redis, 'nb')]);
  const room = 'api-x';
  const bob = await openClient(t, b, 'bob');
  await joinRoom(bob, room);
  const res = await post(a.port, 'publish', { room, body: { hi: 1 }, from: 'server', cid: 'api-1' });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.seq, 1);
  assert.equal(typeof res.body.ts, 'number');
  const m = await bob.next((f) => f.t === 'msg' && f.room === room);
  assert.deepEqual(m.body, { hi: 1 });
  assert.equal(m.from, 'server');
  const dup = await post(a.port, 'publish', { room, body: { hi: 1 }, from: 'server', cid: 'api-1' });
  assert.equal(dup.body.seq, 1);
  const h = await post(a.port, 'history', { room });
  assert.equal(h.status, 200, JSON.stringify(h.body));
  assert.equal((h.body.msgs as unknown[]).length, 1);
  const pr = await post(a.port, 'presence', { room });
  assert.deepEqual(pr.body.users, ['bob']);
  assert.equal(pr.body.connections, 1);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(msgs(bob, room).length, 1, 'the repeated cid made no second message');
});

test('a node that drains leaves its members\' presence in Redis (others see the leave) and deletes its heartbeats', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const a = await node(t, redis, 'na');
  const b = await createEngine({ port: 0, host: '127.0.0.1', shards: 2, logLevel: 'silent', redis: redis.url, nodeId: 'nb', drainTimeoutMs: 3000 });
  let closed = false;
  t.after(async () => { if (!closed) await b.close(); });
  await b.listen();
  const room = 'drain-x';
  const obs = await openClient(t, a, 'obs');
  await joinRoom(obs, room);
  const gone = await TestClient.connect(b.port, { user: 'gone' });
  await joinRoom(gone, room);
  await obs.next((f) => f.t === 'presence' && f.user === 'gone' && f.state === 'join');
  const conn = await connectRedis(t, redis.url);
  const alive = async (): Promise<number> => Number(await conn.call(['EXISTS', 'sc:node:nb.s0', 'sc:node:nb.s1'], 'test'));
  assert.equal(await alive(), 2, 'both shards of nb beat');
  const t0 = performance.now();
  await b.close();
  closed = true;
  assert.ok(performance.now() - t0 < 3000, 'the drain ended within its deadline');
  assert.equal((await gone.waitClosed()).code, 1001);
  await obs.next((f) => f.t === 'presence' && f.user === 'gone' && f.state === 'leave');
  assert.equal(await alive(), 0, 'heartbeats deleted by the graceful close');
  const who = await obs.request({ t: 'who', room });
  assert.deepEqual(who.users, ['obs']);
});

test('kick and disconnect through one node\'s API reach the connections on the other nodes (control channel)', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await Promise.all([node(t, redis, 'na', { apiKey: KEY }), node(t, redis, 'nb')]);
  const room = 'ctl-x';
  const malA = await openClient(t, a, 'mal');
  const malB = await openClient(t, b, 'mal');
  const obs = await openClient(t, b, 'obs');
  for (const c of [malA, malB, obs]) await joinRoom(c, room);
  const k = await post(a.port, 'kick', { room, user: 'mal', banSec: 60 });
  assert.equal(k.status, 200, JSON.stringify(k.body));
  assert.equal(k.body.kicked, 1, 'kicked counts this node\'s connections');
  for (const c of [malA, malB]) {
    const left = await c.next((f) => f.t === 'left' && f.room === room);
    assert.equal(left.ref, undefined, `${c.label}: an unsolicited left`);
  }
  // The ban holds on the other node too.
  const again = await malB.request({ t: 'join', room });
  assert.equal(again.t, 'err', JSON.stringify(again));
  assert.equal(again.code, 'forbidden');
  await obs.next((f) => f.t === 'presence' && f.user === 'mal' && f.state === 'leave');
  const d = await post(a.port, 'disconnect', { user: 'obs', code: 4000, reason: 'bye' });
  assert.equal(d.status, 200);
  assert.equal(d.body.disconnected, 0, 'no obs on node a');
  assert.equal((await obs.waitClosed()).code, 4000, 'obs on node b was closed');
});

test('a crashed cluster shard is restarted: its members get an unsolicited joined, other nodes see no presence change, messages flow on', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await Promise.all([node(t, redis, 'na'), node(t, redis, 'nb')]);
  const room = 'crash-x';
  const ann = await openClient(t, a, 'ann');
  const obs = await openClient(t, b, 'obs');
  await joinRoom(obs, room);
  await joinRoom(ann, room);
  await obs.next((f) => f.t === 'presence' && f.user === 'ann' && f.state === 'join');
  assert.equal((await ann.request({ t: 'pub', room, body: 'before' })).t, 'ack');
  a._crashShard(a.shardOf(room), 'throw');
  const re = await ann.next((f) => f.t === 'joined' && f.room === room && f.ref === undefined, 5000, 'unsolicited joined after the restart');
  assert.equal(re.seq, 1);
  const after = await ann.request({ t: 'pub', room, body: 'after' });
  assert.equal(after.t, 'ack', JSON.stringify(after));
  assert.equal(after.seq, 2);
  await waitFor(() => msgs(obs, room).length === 2, 'obs has both messages');
  const who = await obs.request({ t: 'who', room });
  assert.deepEqual([...(who.users as string[])].sort(), ['ann', 'obs']);
  assert.equal(obs.framesOf('presence', room).filter((f) => f.user === 'ann').length, 1, 'no leave/join flap for ann');
});

test('webhooks in cluster mode: message.published once per message cluster-wide, member events once per user over tabs and nodes', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const events: Record<string, unknown>[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      events.push(...(JSON.parse(Buffer.concat(chunks).toString()) as { events: Record<string, unknown>[] }).events);
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const hook = { webhookUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`, webhookSecret: 'webhook-secret-for-tests', webhookBatchMs: 20 };
  const [a, b] = await Promise.all([node(t, redis, 'na', hook), node(t, redis, 'nb', hook)]);
  const room = 'hook-x';
  const annA = await openClient(t, a, 'ann');
  const annB = await openClient(t, b, 'ann');
  const bob = await openClient(t, b, 'bob');
  await joinRoom(annA, room);
  await joinRoom(annB, room);
  await joinRoom(bob, room);
  const s1 = Number((await annA.request({ t: 'pub', room, body: 1 })).seq);
  const s2 = Number((await bob.request({ t: 'pub', room, body: 2 })).seq);
  await waitFor(() => events.filter((e) => e.type === 'message.published').length >= 2, 'two message.published', 10_000);
  await new Promise((r) => setTimeout(r, 300));
  const published = events.filter((e) => e.type === 'message.published');
  assert.deepEqual(published.map((e) => e.seq).sort(), [s1, s2].sort(), 'one event per message over both nodes');
  const joins = events.filter((e) => e.type === 'member.joined').map((e) => e.user).sort();
  assert.deepEqual(joins, ['ann', 'bob'], 'member.joined once per user, whatever the tabs and nodes');
  assert.equal(events.filter((e) => e.type === 'room.occupied').length, 1, 'room.occupied once');
});

test('a quiet room with a member connected keeps its keys past several roomTtlMs (same epoch, seq goes on); a room nobody follows expires', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const TTL = 1500;
  const [a, b] = await Promise.all([node(t, redis, 'na', { roomTtlMs: TTL }), node(t, redis, 'nb', { roomTtlMs: TTL })]);
  const admin = await connectRedis(t, redis.url);
  const quiet = 'quiet-room';
  const gone = 'nobody-room';
  const sitter = await openClient(t, a, 'sit');
  const j = await joinRoom(sitter, quiet);
  const talker = await openClient(t, b, 'tal');
  await joinRoom(talker, quiet);
  assert.equal((await talker.request({ t: 'pub', room: quiet, body: 'before' })).seq, 1);
  // The other room: one message, then its only member leaves.
  const passer = await openClient(t, b, 'pas');
  await joinRoom(passer, gone);
  assert.equal((await passer.request({ t: 'pub', room: gone, body: 'x' })).t, 'ack');
  assert.equal((await passer.request({ t: 'leave', room: gone })).t, 'left');
  await talker.request({ t: 'leave', room: quiet });
  await waitFor(() => msgs(sitter, quiet).length === 1, 'the sitter has the first message');
  // Nothing is published for 3.5 TTLs; only the sitter (on A) is in the quiet room.
  await new Promise((r) => setTimeout(r, TTL * 3.5));
  assert.equal(await admin.call(['EXISTS', `sc:{${quiet}}:m`, `sc:{${quiet}}:h`, `sc:{${quiet}}:c`], 'exists'), 3, 'the followed room kept its meta, stream and cursors');
  const pttl = Number(await admin.call(['PTTL', `sc:{${quiet}}:m`], 'pttl'));
  assert.ok(pttl > 0 && pttl <= TTL, `the followed room's keys still expire (PTTL ${pttl})`);
  assert.equal(await admin.call(['EXISTS', `sc:{${gone}}:m`, `sc:{${gone}}:h`, `sc:{${gone}}:c`], 'exists'), 0, 'the room nobody follows expired');
  // The next message continues the epoch: seq 2, no unsolicited joined to the sitter.
  await joinRoom(talker, quiet);
  const ack = await talker.request({ t: 'pub', room: quiet, body: 'after' });
  assert.equal(ack.seq, 2, JSON.stringify(ack));
  await waitFor(() => msgs(sitter, quiet).length === 2, 'the sitter has the second message');
  assert.deepEqual(seqs(sitter, quiet), [1, 2]);
  assert.equal(msgs(sitter, quiet)[1]!.body, 'after');
  const joins = sitter.framesOf('joined', quiet);
  assert.equal(joins.length, 1, `no unsolicited joined: ${JSON.stringify(joins)}`);
  const again = await openClient(t, b, 'sit');
  const j2 = await joinRoom(again, quiet);
  assert.equal(j2.epoch, j.epoch, 'same epoch');
  assert.equal(j2.seq, 2);
  // The room nobody followed starts over in a new epoch.
  const back = await joinRoom(passer, gone);
  assert.equal(back.seq, 0);
});

test('a big room over two nodes: the API\'s presence pages it (limit, cursor, maxHistBytes per page) and who is cut at maxHistBytes with truncated', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const MAX = 4096;
  const [a, b] = await Promise.all([node(t, redis, 'na', { apiKey: KEY, maxHistBytes: MAX }), node(t, redis, 'nb', { apiKey: KEY, maxHistBytes: MAX })]);
  const room = 'big-presence';
  // 150 users with 64-character ids (66 bytes each in a page: about 62 per 4096-byte page), half on
  // each node, and second tabs of the first 10 on the other node.
  const N = 150;
  const names = Array.from({ length: N }, (_, i) => `u${String(i).padStart(3, '0')}-${'x'.repeat(59)}`);
  const clients: TestClient[] = [];
  for (let i = 0; i < N; i += 25) {
    clients.push(...await Promise.all(names.slice(i, i + 25).map((u, k) => openClient(t, (i + k) % 2 === 0 ? a : b, u))));
  }
  for (let i = 0; i < N; i += 25) await Promise.all(clients.slice(i, i + 25).map((c) => joinRoom(c, room)));
  const tabs = await Promise.all(names.slice(0, 10).map((u, i) => openClient(t, i % 2 === 0 ? b : a, u)));
  await Promise.all(tabs.map((c) => joinRoom(c, room)));

  for (const [port, limit] of [[a.port, undefined], [b.port, 40]] as const) {
    const got: string[] = [];
    let cursor: unknown = null;
    let pages = 0;
    do {
      const res = await post(port, 'presence', { room, ...(limit === undefined ? {} : { limit }), ...(cursor === null ? {} : { cursor }) });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const users = res.body.users as string[];
      assert.ok(users.length >= 1, 'at least one user per page');
      if (limit !== undefined) assert.ok(users.length <= limit, `at most limit ${limit}: ${users.length}`);
      assert.ok(users.reduce((n, u) => n + u.length + 2, 0) <= MAX, `page ${pages} within maxHistBytes`);
      assert.equal(res.body.connections, N + 10, 'connections over both nodes');
      got.push(...users);
      cursor = res.body.cursor;
      if (cursor !== null) assert.equal(cursor, users[users.length - 1]);
      pages++;
      assert.ok(pages <= N, 'paging ends');
    } while (cursor !== null);
    assert.deepEqual(got, names, `every user once, in order (limit ${String(limit)})`);
    assert.ok(pages >= (limit === undefined ? 3 : 4), `${pages} pages`);
  }

  // `who` from a member on either node: cut at maxHistBytes, flagged truncated.
  for (const c of [clients[0]!, clients[1]!]) {
    const who = await c.request({ t: 'who', room });
    assert.equal(who.t, 'who', JSON.stringify(who).slice(0, 200));
    const users = who.users as string[];
    assert.equal(who.truncated, true);
    assert.ok(users.length > 0 && users.reduce((n, u) => n + u.length + 2, 0) <= MAX, `who within maxHistBytes: ${users.length} users`);
    assert.deepEqual(users, names.slice(0, users.length), 'who lists the first names in order');
  }
});

test('Redis hung (SIGSTOP) under waves of pubs: 4 batches in flight and one of at most 1024 collecting, then the ring fills and the rest are answered overloaded; every pub answered within a few command timeouts', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  // One shard with the smallest ring (64 KiB: about 55 of these 1 KiB pubs), so the burst fills it.
  const e = await node(t, redis, 'na', { shards: 1, ringBytes: 1 << 16, maxFrameBytes: 16384, maxHistBytes: 4096, redisCommandTimeoutMs: 3000 });
  const room = 'hung';
  const senders = await Promise.all(['s1', 's2', 's3', 's4'].map((u) => openClient(t, e, u)));
  for (const c of senders) await joinRoom(c, room);
  assert.equal((await senders[0]!.request({ t: 'pub', room, body: 'before' })).t, 'ack');
  let stopped = true;
  process.kill(redis.pid, 'SIGSTOP');
  t.after(() => { if (stopped) process.kill(redis.pid, 'SIGCONT'); });
  const N = 1500;
  const pending: Promise<Frame>[] = [];
  const body = 'b'.repeat(1000);
  // Waves of 25 (about 27 KiB, half the ring) every 30 ms, all sent within the command timeout:
  // a shard that kept reading would take every wave; only its bound on batches in flight and on
  // the batch it collects meanwhile makes the ring fill (a wave alone never fills it).
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    if (i > 0 && i % 25 === 0) await new Promise((r) => setTimeout(r, 30));
    pending.push(senders[i % 4]!.request({ t: 'pub', room, body, cid: `h-${i}` }, 30_000));
  }
  const answers = await Promise.all(pending);
  // What reached the shard waits about two command timeouts (the 4 batches, then the collected
  // one): not (pubs in the ring / 4) timeouts, as when a saturated shard took one pub per batch.
  const waited = performance.now() - t0;
  assert.ok(waited < 4 * 3000, `all answered after ${waited.toFixed(0)} ms`);
  const by = (code: string): Frame[] => answers.filter((f) => f.t === 'err' && f.code === code);
  const overloaded = by('overloaded');
  const unavailable = by('unavailable');
  assert.equal(overloaded.length + unavailable.length, N, `every pub refused as overloaded or unavailable: ${JSON.stringify(answers.filter((f) => f.t !== 'err' || (f.code !== 'overloaded' && f.code !== 'unavailable')).slice(0, 3))}`);
  assert.ok(overloaded.length > 0, 'some pubs were answered overloaded');
  for (const f of [...overloaded, ...unavailable]) assert.ok(Number(f.retryAfterMs) > 0, `retryAfterMs on ${JSON.stringify(f)}`);
  // What reached the shard is bounded by its ring and its batches, not by the burst.
  assert.ok(unavailable.length <= 4 * 25 * 2 + 1024 + 100, `${unavailable.length} of ${N} pubs reached Redis calls; ${overloaded.length} overloaded`);
  const metrics = (await httpGet(e.port, '/metrics')).body;
  const m = /^shardchat_overloaded_total(?:\{[^}]*\})? (\d+)/m.exec(metrics);
  assert.ok(m !== null && Number(m[1]) >= overloaded.length, `shardchat_overloaded_total counts them: ${m?.[0] ?? 'absent'}`);
  // One answer per pub: no ref answered twice.
  for (const c of senders) {
    const refs = c.frames.filter((f) => f.ref !== undefined).map((f) => f.ref);
    assert.equal(new Set(refs).size, refs.length, `${c.label}: one answer per request`);
  }
  process.kill(redis.pid, 'SIGCONT');
  stopped = false;
  // Redis back: the shard works again (no crash, no restart): a new pub is acked and delivered.
  await waitFor(async () => (await senders[1]!.request({ t: 'pub', room, body: 'after', cid: 'after-1' }, 5000)).t === 'ack', 'a pub acked after SIGCONT', 10_000);
  await waitFor(() => msgs(senders[0]!, room).some((f) => f.body === 'after'), 'the later pub delivered');
  // The pubs whose commands were sent before they timed out may run once Redis resumes (maybeApplied,
  // docs/CLUSTER.md §8): over a thousand at once, so a member may be told to reload (`lost`); the room
  // keeps its epoch and the shard was not restarted.
  const epoch0 = senders[0]!.framesOf('joined', room)[0]!.epoch;
  for (const f of senders[0]!.framesOf('joined', room)) assert.equal(f.epoch, epoch0, `same epoch: ${JSON.stringify(f)}`);
  assert.match((await httpGet(e.port, '/metrics')).body, /^shardchat_shard_restarts_total(?:\{[^}]*\})? 0$/m, 'no shard restart');
  console.log(`# hung Redis: ${overloaded.length} overloaded, ${unavailable.length} unavailable of ${N}`);
});

test('a token with an info claim joins, publishes and is listed in cluster mode (info itself is not shown across nodes yet)', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const secret = 'a-test-secret-of-at-least-32-bytes!!';
  const token = (claims: Record<string, unknown>): Promise<string> =>
    new SignJWT({ exp: Math.floor(Date.now() / 1000) + 300, ...claims }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));
  const [a, b] = await Promise.all([node(t, redis, 'ia', { jwtSecret: secret }), node(t, redis, 'ib', { jwtSecret: secret })]);
  const room = 'with-info';
  const alice = await openClient(t, a, undefined, { path: `/ws?token=${encodeURIComponent(await token({ sub: 'alice', info: { name: 'Alice' } }))}` });
  const bob = await openClient(t, b, undefined, { path: `/ws?token=${encodeURIComponent(await token({ sub: 'bob' }))}` });
  await joinRoom(alice, room);
  await joinRoom(bob, room);
  const ack = await alice.request({ t: 'pub', room, body: 'hi' });
  assert.equal(ack.t, 'ack', JSON.stringify(ack));
  await waitFor(() => msgs(bob, room).length === 1, 'bob got alice\'s message');
  assert.equal(msgs(bob, room)[0]!.from, 'alice');
  const who = await bob.request({ t: 'who', room });
  assert.deepEqual([...(who.users as string[])].sort(), ['alice', 'bob']);
});

test('redact through node A\'s API: a member on B gets redacted; hist, the API\'s history and a later join\'s missed show the tombstone on both nodes; an unknown seq is not_found', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await Promise.all([node(t, redis, 'na', { apiKey: KEY }), node(t, redis, 'nb', { apiKey: KEY })]);
  const room = 'redact-x';
  const bob = await openClient(t, b, 'bob');
  const ann = await openClient(t, a, 'ann');
  await joinRoom(bob, room);
  await joinRoom(ann, room);
  for (const [body, from] of [['keep', 'server'], ['secret', 'eve'], ['after', 'server']] as const) {
    assert.equal((await post(a.port, 'publish', { room, body, from })).status, 200);
  }
  await waitFor(() => msgs(bob, room).length === 3 && msgs(ann, room).length === 3, 'both members have the 3 messages');
  const toldB = bob.nextOf('redacted', room);
  const toldA = ann.nextOf('redacted', room);
  const r = await post(a.port, 'redact', { room, seq: 2 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body, { room, seq: 2, redacted: true });
  assert.equal((await toldB).seq, 2, 'the member on B is told');
  assert.equal((await toldA).seq, 2, 'the member on A is told');
  const shown = (ms: Record<string, unknown>[]): unknown[] => ms.map((m) => [m.seq, m.body, m.redacted, m.from]);
  const want = [[1, 'keep', undefined, 'server'], [2, null, true, 'eve'], [3, 'after', undefined, 'server']];
  for (const c of [bob, ann]) {
    const h = await c.request({ t: 'hist', room });
    assert.equal(h.t, 'hist', JSON.stringify(h));
    assert.deepEqual(shown(h.msgs as Record<string, unknown>[]), want, `hist on ${c.label}'s node`);
    const older = await c.request({ t: 'hist', room, before: 3, limit: 1 });
    assert.deepEqual(shown(older.msgs as Record<string, unknown>[]), [want[1]], `hist before 3 on ${c.label}'s node`);
  }
  for (const e of [a, b]) {
    const h = await post(e.port, 'history', { room });
    assert.equal(h.status, 200, JSON.stringify(h.body));
    assert.deepEqual(shown(h.body.msgs as Record<string, unknown>[]), want, `the API's history on ${e.port}`);
    const after = await post(e.port, 'history', { room, after: 1, limit: 1 });
    assert.deepEqual(shown(after.body.msgs as Record<string, unknown>[]), [want[1]], 'history after 1');
  }
  // Later joins with since 0 (a room followed on the node, and a new tab on the other node): missed shows the tombstone.
  for (const e of [a, b]) {
    const late = await openClient(t, e, 'late');
    const j = await joinRoom(late, room, { since: 0 });
    assert.deepEqual(shown(j.missed as Record<string, unknown>[]), want, `joined.missed on ${e.port}: ${JSON.stringify(j)}`);
  }
  // The redaction stays after more messages; an unknown seq (or room) is 404 not_found as in single-node mode.
  assert.equal((await post(b.port, 'publish', { room, body: 'more' })).status, 200);
  const again = await post(b.port, 'history', { room, limit: 2, before: 4 });
  assert.deepEqual(shown(again.body.msgs as Record<string, unknown>[]), [want[1], want[2]]);
  for (const [rm, seq] of [[room, 99], [room, 0], ['no-such-room', 1]] as const) {
    const missing = await post(b.port, 'redact', { room: rm, seq });
    assert.ok(missing.status === 404 || (seq === 0 && missing.status === 400), `${rm} ${seq}: ${missing.status} ${JSON.stringify(missing.body)}`);
    if (missing.status === 404) assert.equal((missing.body.error as { code: string }).code, 'not_found');
  }
  await new Promise((res) => setTimeout(res, 100));
  assert.equal(bob.framesOf('redacted', room).length, 1, 'one redacted frame per member');
});

test('rooms through node A lists the rooms whose members are only on B, with connections over both nodes, paged by limit and maxHistBytes; a room left by all goes', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  // 4096 bytes of names per page: 31 rooms of 132 bytes (a 100-byte name + 32) each fit, the 32nd does not.
  const [a, b] = await Promise.all([node(t, redis, 'na', { apiKey: KEY, maxHistBytes: 4096 }), node(t, redis, 'nb')]);
  const rooms = Array.from({ length: 36 }, (_, i) => `lst-${String(i).padStart(2, '0')}-${'x'.repeat(93)}`);
  const [r2, r3] = [rooms[2]!, rooms[3]!];
  const bob = await openClient(t, b, 'bob');
  const bea = await openClient(t, b, 'bea');
  const ann = await openClient(t, a, 'ann');
  for (const r of rooms) await joinRoom(bob, r);
  await joinRoom(bea, r2);
  await joinRoom(ann, r3);
  const want = rooms.map((room) => ({ room, connections: room === r2 || room === r3 ? 2 : 1 }));
  const pages = async (limit: number): Promise<{ room: string; connections: number }[][]> => {
    const out: { room: string; connections: number }[][] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 10; i++) {
      const res = await post(a.port, 'rooms', { limit, cursor });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      out.push(res.body.rooms as { room: string; connections: number }[]);
      cursor = res.body.cursor as string | null;
      if (cursor === null) return out;
    }
    throw new Error('rooms never ended');
  };
  assert.deepEqual(await pages(10), [want.slice(0, 10), want.slice(10, 20), want.slice(20, 30), want.slice(30)], 'pages of 10');
  assert.deepEqual(await pages(100), [want.slice(0, 31), want.slice(31)], 'pages cut at maxHistBytes (31 rooms)');
  // A node with no member in the rooms also lists them (from Redis, not its own rooms).
  const c = await node(t, redis, 'nc', { apiKey: KEY });
  const fromC = await post(c.port, 'rooms', { limit: 5 });
  assert.deepEqual(fromC.body, { rooms: want.slice(0, 5), cursor: rooms[4] });
  // Everyone leaves rooms[2] (two connections on B): it is no longer listed.
  assert.equal((await bob.request({ t: 'leave', room: r2 })).t, 'left');
  assert.equal((await bea.request({ t: 'leave', room: r2 })).t, 'left');
  const after = await post(c.port, 'rooms', { limit: 5 });
  assert.deepEqual(after.body, { rooms: want.filter((r) => r.room !== r2).slice(0, 5), cursor: rooms[5] });
});
