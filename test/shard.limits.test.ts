/**
 * Limits on what clients make a shard keep (issue 10, items 2, 4 and 13), against a real engine:
 * a per-shard room cap and a room-creation bucket per principal that reconnecting does not refill,
 * read cursors that do not pile up, and a room kept alive by server-side publishes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Engine } from '../engine/index.js';
import { joinRoom, openClient, startEngine } from './helpers/engine.js';
import { TestClient, waitFor } from './helpers/client.js';
import { ShardBench, inClose, outBody } from './helpers/handler.js';
import { decode } from '@msgpack/msgpack';
import { CreationLimiter } from '../workers/creation.js';
import { addrHash } from '../engine/protocol/records.js';

const decodeBody = (rec: Uint8Array): unknown => decode(outBody(rec));

type Shard = Record<string, number | boolean>;
const shard0 = (e: Engine): Shard => e.stats().shards[0] as unknown as Shard;

test('a join that would pass maxRoomsPerShard gets room_limit, and the connection is not counted in that room', async (t) => {
  const e = await startEngine(t, { shards: 1, maxRoomsPerShard: 20 });
  const c = await openClient(t, e, 'capper');
  for (let i = 0; i < 20; i++) await joinRoom(c, `cap-${i}`);
  const r = await c.request({ t: 'join', room: 'cap-20' });
  assert.equal(r.t, 'err');
  assert.equal(r.code, 'room_limit');
  assert.ok(typeof r.retryAfterMs === 'number' && r.retryAfterMs > 0, `retryAfterMs ${String(r.retryAfterMs)}`);
  // The main thread forgot the refused room: leaving it is not_joined, and it holds 20 room entries.
  assert.equal((await c.request({ t: 'leave', room: 'cap-20' })).code, 'not_joined');
  assert.equal(e.stats().connRooms, 20);
  // Joining a room that exists is not creating one.
  const d = await openClient(t, e, 'other');
  await joinRoom(d, 'cap-3');
  assert.equal(shard0(e).rooms, 20);
});

test('room creation is limited per user and per anonymous client address, and a reconnect does not refill it', async (t) => {
  const e = await startEngine(t, { shards: 1, roomCreateBurst: 5, roomCreateRate: 1 });
  // Anonymous: the principal is the client address (127.0.0.1 for every connection here).
  const a1 = await openClient(t, e);
  for (let i = 0; i < 5; i++) await joinRoom(a1, `anon-made-${i}`);
  const r1 = await a1.request({ t: 'join', room: 'anon-made-5' });
  assert.equal(r1.code, 'room_limit', JSON.stringify(r1));
  assert.ok(typeof r1.retryAfterMs === 'number' && r1.retryAfterMs > 0 && r1.retryAfterMs <= 1000, `retryAfterMs ${String(r1.retryAfterMs)}`);
  await a1.close();
  const a2 = await openClient(t, e);
  assert.equal((await a2.request({ t: 'join', room: 'anon-made-6' })).code, 'room_limit', 'a new anonymous connection from the same address');
  // Existing rooms can still be joined.
  await joinRoom(a2, 'anon-made-0');
  // Named users: alice's bucket is hers across reconnects; bob has his own.
  const alice = await openClient(t, e, 'alice');
  for (let i = 0; i < 5; i++) await joinRoom(alice, `alice-${i}`);
  assert.equal((await alice.request({ t: 'join', room: 'alice-5' })).code, 'room_limit');
  await alice.close();
  const alice2 = await openClient(t, e, 'alice');
  assert.equal((await alice2.request({ t: 'join', room: 'alice-6' })).code, 'room_limit', 'alice again, reconnected');
  const bob = await openClient(t, e, 'bob');
  await joinRoom(bob, 'bob-0');
  // The bucket refills at roomCreateRate: after retryAfterMs one creation succeeds again.
  const r2 = await alice2.request({ t: 'join', room: 'alice-7' });
  assert.equal(r2.code, 'room_limit');
  await new Promise((resolve) => setTimeout(resolve, Number(r2.retryAfterMs) + 20));
  await joinRoom(alice2, 'alice-7');
});

test('5,000 anonymous join/leave cycles leave no read cursors behind', () => {
  const sb = new ShardBench();
  sb.frame(1, { t: 'join', room: 'lobby' }, 'keeper');
  for (let i = 0; i < 5000; i++) {
    const conn = 100 + i;
    sb.frame(conn, { t: 'join', room: 'lobby' }, `anon-c${conn.toString(36)}`, true, 0x7f000001);
    if (i % 2 === 0) sb.frame(conn, { t: 'leave', room: 'lobby' });
    else sb.run(inClose(conn));
  }
  assert.equal(sb.h.rooms.get('lobby')!.cursors.size, 1, 'only the named keeper has a cursor');
  assert.equal(sb.h.rooms.cursorCount, 1);
  sb.h.rooms.dispose();
});

test('anonymous cursors go on leave through a real engine too (the anonymous flag crosses the ring)', async (t) => {
  const e = await startEngine(t, { shards: 1 });
  const keeper = await openClient(t, e, 'keeper');
  await joinRoom(keeper, 'hall');
  for (let i = 0; i < 100; i += 20) {
    const cs = await Promise.all(Array.from({ length: 20 }, () => TestClient.connect(e.port)));
    await Promise.all(cs.map((c) => joinRoom(c, 'hall')));
    await Promise.all(cs.map((c) => c.close()));
  }
  await waitFor(() => shard0(e).members === 1 && shard0(e).cursors === 1, 'only the keeper left, with the only cursor', 5000);
});

test('idle cursors of named users are bounded per room and per shard, least recently left evicted first', () => {
  const sb = new ShardBench({ maxCursorsPerRoom: 3, maxCursorsPerShard: 5 });
  sb.frame(1, { t: 'join', room: 'a' }, 'keeper');
  for (let i = 1; i <= 5; i++) {
    sb.frame(10 + i, { t: 'join', room: 'a' }, `u${i}`);
    sb.frame(10 + i, { t: 'leave', room: 'a' });
  }
  const a = sb.h.rooms.get('a')!;
  assert.deepEqual([...a.cursors.keys()].sort(), ['keeper', 'u3', 'u4', 'u5'], 'room bound 3: u1, u2 evicted');
  // Another room: its idle cursors count against the shard bound of 5 (a's 3 + b's).
  sb.frame(2, { t: 'join', room: 'b' }, 'keeper');
  for (let i = 1; i <= 3; i++) {
    sb.frame(20 + i, { t: 'join', room: 'b' }, `v${i}`);
    sb.frame(20 + i, { t: 'leave', room: 'b' });
  }
  assert.equal(sb.h.rooms.idle.size, 5);
  assert.deepEqual([...a.cursors.keys()].sort(), ['keeper', 'u4', 'u5'], 'the shard bound (5) evicted the oldest idle cursor, u3');
  assert.equal(sb.h.rooms.cursorCount, 2 + 5, 'keeper in both rooms, u4, u5, v1..v3');
  // An evicted user comes back with no unread; a kept one sees what it missed.
  sb.frame(1, { t: 'pub', room: 'a', body: 1 });
  sb.frame(1, { t: 'pub', room: 'a', body: 2 });
  const joinedOf = (conn: number, user: string): Record<string, unknown> => {
    const out = sb.frame(conn, { t: 'join', room: 'a' }, user, false, 0, true);
    const rec = out.find((o) => o[0] === 3)!; // OUT_JOINED
    return JSON.parse(JSON.stringify(decodeBody(rec))) as Record<string, unknown>;
  };
  assert.equal(joinedOf(30, 'u5').unread, 2);
  assert.equal(sb.h.rooms.idle.size, 4, 'u5 is present again: its cursor is no longer idle');
  assert.equal(joinedOf(31, 'u1').unread, 0);
  sb.h.rooms.dispose();
  assert.equal(sb.h.rooms.cursorCount, 0);
});

test('a room that only receives server-side publishes keeps its epoch past roomTtlMs', async (t) => {
  const e = await startEngine(t, { shards: 1, roomTtlMs: 200 });
  const results: { seq: number; epoch: string }[] = [];
  // 1.6 s of publishes every 50 ms: several TTLs and shard ticks (500 ms) long.
  const end = Date.now() + 1600;
  while (Date.now() < end) {
    results.push(await e.publish('feed', { n: results.length }));
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const epochs = new Set(results.map((r) => r.epoch));
  assert.equal(epochs.size, 1, `one epoch while being published to, got ${epochs.size}`);
  assert.deepEqual(results.map((r) => r.seq), results.map((_, i) => i + 1));
  // Once publishes stop, the memberless room goes after its TTL like any other.
  await waitFor(() => shard0(e).rooms === 0, 'the room dropped after its TTL', 3000);
});

test('the room-creation table keeps at most its bound of principals, least recently used evicted', () => {
  const lim = new CreationLimiter(1, 2, 3);
  for (const p of ['a', 'b', 'c']) { assert.equal(lim.take(p, 0), 0); assert.equal(lim.take(p, 0), 0); }
  assert.ok(lim.take('a', 0) > 0, 'a used its burst');
  assert.equal(lim.take('d', 0), 0, 'a fourth principal');
  assert.equal(lim.size, 3);
  // b was least recently used, so d evicted it: b starts again with a full bucket; a kept its empty one.
  assert.equal(lim.take('b', 0), 0);
  assert.ok(lim.take('a', 0) > 0);
  assert.equal(lim.size, 3);
});

test('the anonymous principal: an IPv6 address counts by its /64, IPv4 and IPv4-mapped addresses whole', () => {
  const a = addrHash('2001:0db8:0001:0002:0000:0000:0000:0001');
  assert.equal(addrHash('2001:0db8:0001:0002:ffff:1234:5678:9abc'), a, 'same /64');
  assert.notEqual(addrHash('2001:0db8:0001:0003:0000:0000:0000:0001'), a, 'another /64');
  assert.notEqual(addrHash('0000:0000:0000:0000:0000:ffff:7f00:0001'), addrHash('0000:0000:0000:0000:0000:ffff:7f00:0002'), 'IPv4-mapped, whole');
  assert.notEqual(addrHash('10.0.0.1'), addrHash('10.0.0.2'));
  assert.equal(addrHash('10.0.0.1'), addrHash('10.0.0.1'));
});
