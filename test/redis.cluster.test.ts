/**
 * Cluster mode, three node stores on real redis-servers (in one process: the store layer, not
 * the engine, which the lead wires in later): one order per room on every node, resume on
 * another node, presence across nodes, rooms partitioned over two instances.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { connectRedis, startRedis } from './helpers/redis-server.js';
import { assertContiguous } from './helpers/seqs.js';
import { waitFor } from './helpers/client.js';
import { ClusterStore } from '../workers/store/redis/cluster-store.js';
import { partitionIndex, streamKey } from '../workers/store/redis/keys.js';
import { readSeq } from '../workers/store/redis/wire.js';
import { msg } from './helpers/redis-frames.js';

guardHandles();

interface Node { store: ClusterStore; seqs: Map<string, number[]>; frames: Map<string, string[]>; presence: string[] }

async function node(t: TestContext, urls: string[], id: string): Promise<Node> {
  const n: Node = { seqs: new Map(), frames: new Map(), presence: [], store: null as unknown as ClusterStore };
  n.store = new ClusterStore({ urls, node: id, heartbeatTtlMs: 3000 }, {
    message(room, seq, frame) {
      assert.equal(readSeq(frame, 5), seq);
      (n.seqs.get(room) ?? n.seqs.set(room, []).get(room)!).push(seq);
      (n.frames.get(room) ?? n.frames.set(room, []).get(room)!).push(frame.subarray(13).toString());
    },
    epoch() { /* one epoch in these tests */ }, lost(room) { assert.fail(`lost in ${room}`); }, health() { /* checked via .healthy */ },
    presence(room, user, state) { n.presence.push(`${room} ${user} ${state}`); },
  });
  t.after(() => n.store.close());
  await n.store.start();
  return n;
}


test('three nodes: every node delivers seq 1..N of a room in one order; resume on another node; presence across nodes', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const nodes = [await node(t, [redis.url], 'a'), await node(t, [redis.url], 'b'), await node(t, [redis.url], 'c')];
  const room = 'cluster-room';
  const users = ['ann', 'bob', 'cat'];
  for (let i = 0; i < 3; i++) {
    const j = await nodes[i]!.store.join(room, `conn${i}`, users[i]!, null, null);
    assert.equal(j.seq, 0);
  }
  assert.deepEqual(await nodes[0]!.store.who(room), users);
  const total = 300;
  // Each node publishes batches of 5 concurrently with the others.
  await Promise.all(nodes.map(async (n, i) => {
    for (let k = 0; k < total / 3 / 5; k++) {
      const batch = Array.from({ length: 5 }, (_, x) => msg(users[i]!, `${users[i]}-${k * 5 + x}`));
      const out = (await n.store.publishBatch(new Map([[room, batch]]))).get(room)!;
      assert.ok(!(out instanceof Error), String(out));
    }
  }));
  await waitFor(() => nodes.every((n) => (n.seqs.get(room)?.length ?? 0) >= total), 'every node delivered all', 10_000);
  nodes.forEach((n, i) => assertContiguous(n.seqs.get(room)!, 1, total, `node ${'abc'[i]}`));
  assert.deepEqual(nodes[1]!.frames.get(room), nodes[0]!.frames.get(room), 'same frame at each seq on node b');
  assert.deepEqual(nodes[2]!.frames.get(room), nodes[0]!.frames.get(room), 'same frame at each seq on node c');

  // Two more by bob, so that ann's own last message is at most total (the cursor checks below).
  await nodes[1]!.store.publishBatch(new Map([[room, [msg('bob', 'bob-x'), msg('bob', 'bob-y')]]]));
  const final = total + 2;
  await waitFor(() => nodes.every((n) => (n.seqs.get(room)?.length ?? 0) >= final), 'every node delivered bob\'s two', 10_000);
  // ann "disconnects" from node a at seq 120 and resumes on node c.
  const epoch = (await nodes[0]!.store.join(room, 'conn0', 'ann', null, null)).epoch;
  const resumed = await nodes[2]!.store.join(room, 'conn9', 'ann', 120, epoch);
  assert.equal(resumed.truncated, false);
  assert.equal(resumed.seq, final);
  assertContiguous(resumed.missed!.map((m) => m.seq), 121, final, 'missed on another node');
  // Publishing moved ann's cursor to her last message, whichever node she published from.
  const annLast = nodes[0]!.frames.get(room)!.findLastIndex((f) => f.startsWith('ann-')) + 1;
  assert.equal(resumed.unread, final - annLast);
  const bogus = await nodes[1]!.store.join(room, 'conn8', 'bob', 5, 'not-the-epoch');
  assert.equal(bogus.truncated, true);
  assert.equal(bogus.missed, null);

  // Cursors: read on node a is seen by node b.
  assert.equal(await nodes[0]!.store.read(room, 'ann', final - 1), final - 1);
  assert.equal(await nodes[0]!.store.read(room, 'ann', annLast), final - 1, 'a stale read does not move it back');
  assert.equal((await nodes[1]!.store.join(room, 'conn7', 'ann', null, null)).unread, 1);

  // Node b closes: bob's leave is seen once on the other nodes; cat is still there (conn2 on c).
  await nodes[1]!.store.close();
  await waitFor(() => nodes[0]!.presence.includes(`${room} bob leave`), 'bob left');
  assert.deepEqual(await nodes[0]!.store.who(room), ['ann', 'cat']);
  assert.equal(nodes[0]!.presence.filter((p) => p.includes('bob leave')).length, 1);
  assert.equal(nodes[0]!.presence.filter((p) => p.includes('cat leave')).length, 0);
});

test('two Redis URLs: each room lives on the instance partitionIndex names', async (t) => {
  const r1 = await startRedis(t);
  const r2 = await startRedis(t);
  if (r1 === null || r2 === null) return;
  const urls = [r1.url, r2.url];
  const n = await node(t, urls, 'p');
  const conns = [await connectRedis(t, r1.url), await connectRedis(t, r2.url)];
  const rooms = Array.from({ length: 12 }, (_, i) => `part-${i}`);
  const out = await n.store.publishBatch(new Map(rooms.map((r) => [r, [msg('ann', r)]])));
  for (const r of rooms) {
    assert.ok(!(out.get(r) instanceof Error));
    const home = partitionIndex(r, urls);
    assert.equal(await conns[home]!.call(['XLEN', streamKey(r)], 'test'), 1, `${r} on instance ${home}`);
    assert.equal(await conns[1 - home]!.call(['XLEN', streamKey(r)], 'test'), 0, `${r} not on instance ${1 - home}`);
  }
  assert.ok(new Set(rooms.map((r) => partitionIndex(r, urls))).size === 2, 'both instances used');
  assert.equal(n.store.healthy, true);
  await r2.stop();
  const during = await n.store.publishBatch(new Map(rooms.map((r) => [r, [msg('ann', 'x')]])));
  for (const r of rooms) assert.equal(during.get(r) instanceof Error, partitionIndex(r, urls) === 1, `${r} while instance 1 is down`);
  await waitFor(() => !n.store.healthy, 'unhealthy with one instance down');
});

test('joins racing publishes on a followed room: each joiner gets exactly the messages after its joined seq', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = [await node(t, [redis.url], 'ja'), await node(t, [redis.url], 'jb')];
  const room = 'join-race';
  const first = await a.store.join(room, 'c0', 'ann', null, null);
  let publishing = true;
  const pub = (async () => {
    for (let i = 0; publishing && i < 400; i++) await b.store.publishBatch(new Map([[room, [msg('bob', `m${i}`)]]]));
  })();
  // Each join, taken when it resolves, must line up with node a's own deliveries: what a's
  // subscriber delivers after the reply is what the joiner gets live; `missed` is the rest, up to
  // exactly the reply's seq (the node often delivered past its read while the join waited).
  for (let j = 0; j < 20; j++) {
    const since = Math.max(0, (a.seqs.get(room)?.length ?? 0) - 3);
    const r = await a.store.join(room, `c${j + 1}`, `u${j}`, since, first.epoch);
    const deliveredAtReply = a.seqs.get(room)?.length ?? 0;
    assert.equal(r.seq, deliveredAtReply, `join ${j}: joined.seq is node a's delivered seq`);
    assert.equal(r.truncated, false, `join ${j}: since ${since}, ${JSON.stringify({ ...r, missed: r.missed?.map((m) => m.seq) })}`);
    assertContiguous(r.missed!.map((m) => m.seq), since + 1, r.seq, `join ${j} missed`);
  }
  publishing = false;
  await pub;
});

test('Redis restarted without persistence: a node puts its members back into presence', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const a = await node(t, [redis.url], 'pa');
  const b = await node(t, [redis.url], 'pb');
  await a.store.join('back', 'c1', 'ann', null, null);
  await b.store.join('back', 'c2', 'bob', null, null);
  assert.deepEqual(await a.store.who('back'), ['ann', 'bob']);
  await redis.restart('SIGKILL');
  await waitFor(() => a.store.healthy && b.store.healthy, 'both nodes healthy again', 10_000);
  await waitFor(async () => (await a.store.who('back')).length === 2, 'both members present again', 5000);
  assert.deepEqual(await b.store.who('back'), ['ann', 'bob']);
});

test('a node keeps the keys of every room it follows alive past roomTtlMs (more rooms than one TOUCH call holds); left rooms expire', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const TTL = 1200;
  const store = new ClusterStore({ urls: [redis.url], node: 'keeper', heartbeatTtlMs: 3000, limits: { roomTtlMs: TTL } }, {
    message() { /* not looked at */ }, epoch(room) { assert.fail(`new epoch in ${room}`); }, lost(room) { assert.fail(`lost in ${room}`); },
    health() { /* checked via .healthy */ }, presence() { /* not looked at */ },
  });
  t.after(() => store.close());
  await store.start();
  const admin = await connectRedis(t, redis.url);
  const rooms = Array.from({ length: 300 }, (_, i) => `keep-${i}`);
  await Promise.all(rooms.map((r) => store.join(r, 'c1', 'ann', null, null)));
  const out = await store.publishBatch(new Map(rooms.map((r) => [r, [msg('ann', r)]])));
  for (const r of rooms) assert.ok(!(out.get(r) instanceof Error), String(out.get(r)));
  const alive = async (): Promise<number> => Number(await admin.call(['EXISTS', ...rooms.map((r) => `sc:{${r}}:m`)], 'exists'));
  await new Promise((r) => setTimeout(r, TTL * 3.5));
  assert.equal(await alive(), rooms.length, 'every followed room kept its meta key');
  assert.equal(Number(await admin.call(['EXISTS', ...rooms.map((r) => streamKey(r))], 'exists')), rooms.length, 'and its stream');
  for (const r of rooms.slice(0, 3)) assert.equal((await store.meta(r)).seq, 1, `${r} still at seq 1`);
  // The first half is left: only those expire.
  await Promise.all(rooms.slice(0, 150).map((r) => store.leave(r, 'c1', 'ann')));
  await new Promise((r) => setTimeout(r, TTL * 2));
  assert.equal(Number(await admin.call(['EXISTS', ...rooms.slice(0, 150).map((r) => `sc:{${r}}:m`)], 'exists')), 0, 'left rooms expired');
  assert.equal(Number(await admin.call(['EXISTS', ...rooms.slice(150).map((r) => `sc:{${r}}:m`)], 'exists')), 150, 'followed rooms did not');
});

test('rooms: names and connection counts are one snapshot: a leave queued right behind the listing never shows its room with 0 connections', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const n = await node(t, [redis.url], 'rl');
  const other = await node(t, [redis.url], 'rm');
  const raw = await connectRedis(t, redis.url);
  await n.store.join('rl-a', 'c1', 'ann', null, null);
  await n.store.join('rl-b', 'c2', 'bob', null, null);
  await other.store.join('rl-b', 'c3', 'bea', null, null);
  assert.deepEqual(await other.store.rooms('', 10), { rooms: [{ room: 'rl-a', connections: 1 }, { room: 'rl-b', connections: 2 }], more: false });
  // The listing and the leave go out in one tick on the store's one command connection, so Redis
  // runs them in that order. Reading the names, then the counts (the old rooms()) put the leave
  // between the two reads: rl-a listed with 0 connections. One script sees the state before the leave.
  const [page, left] = await Promise.all([n.store.rooms('', 10), n.store.leave('rl-a', 'c1', 'ann')]);
  assert.equal(left, 0);
  assert.deepEqual(page, { rooms: [{ room: 'rl-a', connections: 1 }, { room: 'rl-b', connections: 2 }], more: false }, 'the page before the leave, whole');
  assert.deepEqual(await n.store.rooms('', 10), { rooms: [{ room: 'rl-b', connections: 2 }], more: false }, 'after the leave: gone');
  // A name without presence entries (only a hand-edited Redis has one) is skipped and does not use up the page.
  await raw.call(['ZADD', 'sc:rooms', '0', 'rl-0', '0', 'rl-a'], 'test');
  assert.deepEqual(await n.store.rooms('', 1), { rooms: [{ room: 'rl-b', connections: 2 }], more: false });
  assert.deepEqual(await n.store.rooms('rl-a', 1), { rooms: [{ room: 'rl-b', connections: 2 }], more: false }, 'after a cursor');
});

test('a join that times out after its presence call was sent leaves no ghost: the store takes the entry out behind it', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const raw = await connectRedis(t, redis.url);
  // Another node's member sees the room's presence events.
  const obs = await node(t, [redis.url], 'go');
  await obs.store.join('gh', 'c0', 'obs', null, null);
  const store = new ClusterStore({ urls: [redis.url], node: 'gj', heartbeatTtlMs: 3000, connection: { commandTimeoutMs: 200 } }, {
    message() { /* no messages here */ }, epoch() { /* one epoch */ }, lost(room) { assert.fail(`lost in ${room}`); }, health() { /* not checked */ },
    presence() { /* the observer's are checked */ },
  });
  t.after(() => store.close());
  await store.start();
  // Redis holds every write command (scripts included) for 600 ms: the join's READ and PRESENCE
  // calls are sent, time out after 200 ms (the join is refused), and run when the pause ends.
  await raw.call(['CLIENT', 'PAUSE', '600', 'WRITE'], 'test');
  await assert.rejects(store.join('gh', 'c1', 'ann', null, null), (err: Error) => err.name === 'RedisUnavailableError');
  // A write of this connection waits for the pause's end; the store's calls queued before it on
  // its own connection: its `who` below runs after the join and whatever followed it there.
  await raw.call(['SET', 'gh-after-pause', '1'], 'test');
  assert.deepEqual(await store.who('gh'), ['obs'], 'the refused join is not a member');
  assert.equal(await raw.call(['HLEN', 'sc:{gh}:p'], 'test'), 1, 'only the observer\'s presence entry');
  const ann = (): string[] => obs.presence.filter((p) => p.includes(' ann '));
  await waitFor(() => ann().length === 2, 'the join and the leave event');
  assert.deepEqual(ann(), ['gh ann join', 'gh ann leave'], 'the join that ran is balanced by a leave');
  // The undo itself was sent in the pause and timed out too: kept, and retried by the next tick (a no-op now).
  await waitFor(() => store.pendingLeaveCount === 0, 'the retried leave done', 3000);
  assert.deepEqual(await store.who('gh'), ['obs']);
});
