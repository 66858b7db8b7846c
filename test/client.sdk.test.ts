/**
 * The client SDK in Node against a real engine: real sockets through a TCP proxy that the test
 * cuts to force disconnects, real publishers (the protocol test client). Resume delivers exactly
 * the missed seqs once; truncation and a new epoch raise `gap`; the offline queue keeps its
 * bounds; `close()` leaves no handle and no listener.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ShardchatClient, ClientError, QueueFullError, TimeoutError, seededRandom, type ClientOptions, type ClientEvents, type Message } from '../engine/client/index.js';
import type { Engine } from '../engine/index.js';
import { guardHandles, extraResources, snapshotResources, settle } from './helpers/leaks.js';
import { joinRoom, openClient, pubTo, startEngine } from './helpers/engine.js';
import { waitFor } from './helpers/client.js';
import { Proxy } from './helpers/proxy.js';
import { record } from './helpers/sdk-events.js';

guardHandles();

const FAST = { backoffBaseMs: 20, backoffCapMs: 200, stableMs: 2000, random: seededRandom(1) };

function sdk(t: TestContext, port: number, user: string, opts: Partial<ClientOptions> = {}): ShardchatClient {
  const c = new ShardchatClient({ url: `ws://127.0.0.1:${port}/ws`, user, WebSocket, ...FAST, ...opts });
  t.after(() => c.close());
  return c;
}


function seqsOf(c: ShardchatClient, room: string): number[] {
  const seqs: number[] = [];
  c.on('message', (m: Message) => { if (m.room === room) seqs.push(m.seq); });
  return seqs;
}

async function publishN(engine: Engine, t: TestContext, room: string, n: number): Promise<void> {
  const pub = await openClient(t, engine, 'publisher');
  await joinRoom(pub, room);
  for (let i = 0; i < n; i++) await pubTo(pub, room, { i });
}

test('resume after a forced disconnect: exactly the missed seqs, in order, once', async (t) => {
  const engine = await startEngine(t);
  const proxy = await Proxy.start(t, engine.port);
  const c = sdk(t, proxy.port, 'alice');
  const seqs = seqsOf(c, 'r');
  const rooms = record(c, 'room', 'gap');
  await c.join('r');
  await publishN(engine, t, 'r', 5);
  await waitFor(() => seqs.length === 5, 'the first 5 messages');
  proxy.blocked = true;
  proxy.cut();
  await waitFor(() => c.state === 'disconnected', 'the client sees the drop');
  assert.equal(c.roomState('r'), 'joining');
  await publishN(engine, t, 'r', 20); // seqs 6..25 while alice is away
  proxy.blocked = false;
  await waitFor(() => seqs.length >= 25, 'the missed messages', 5000);
  await publishN(engine, t, 'r', 2);
  await waitFor(() => seqs.length >= 27, 'live messages after the resume');
  assert.deepEqual(seqs, Array.from({ length: 27 }, (_, i) => i + 1));
  assert.equal(rooms.filter((x) => x.kind === 'gap').length, 0, 'no gap when history holds what was missed');
  const resumed = rooms.find((x) => x.kind === 'room' && (x.e as ClientEvents['room']).cause.reason === 'resumed');
  assert.ok(resumed, 'the room state change says it resumed');
});

test('truncated history raises gap, then the latest page; no seq is delivered twice', async (t) => {
  const engine = await startEngine(t, { historyLimit: 5 });
  const proxy = await Proxy.start(t, engine.port);
  const c = sdk(t, proxy.port, 'bob', { gapPageSize: 50 });
  const log: string[] = [];
  c.on('message', (m) => log.push(`m${m.seq}`));
  c.on('gap', (g) => log.push(`gap:${g.reason}:${g.seq}`));
  await c.join('t');
  await publishN(engine, t, 't', 2);
  await waitFor(() => log.length === 2, 'two messages');
  proxy.blocked = true;
  proxy.cut();
  await waitFor(() => c.state === 'disconnected', 'the drop');
  await publishN(engine, t, 't', 20); // seqs 3..22; history keeps 18..22
  proxy.blocked = false;
  await waitFor(() => log.includes('m22'), 'the reloaded page', 5000);
  assert.deepEqual(log, ['m1', 'm2', 'gap:truncated:22', 'm18', 'm19', 'm20', 'm21', 'm22']);
  assert.equal(c.lastSeq('t'), 22);
});

test('a new epoch (room dropped while away) raises gap and starts the sequence again', async (t) => {
  const engine = await startEngine(t, { roomTtlMs: 0 });
  const proxy = await Proxy.start(t, engine.port);
  const c = sdk(t, proxy.port, 'carol');
  const log: string[] = [];
  c.on('message', (m) => log.push(`m${m.seq}`));
  c.on('gap', (g) => log.push(`gap:${g.reason}`));
  await c.join('e');
  {
    const pub = await openClient(t, engine, 'p1');
    await joinRoom(pub, 'e');
    await pubTo(pub, 'e', 1);
    await pubTo(pub, 'e', 2);
    await waitFor(() => log.length === 2, 'two messages');
    proxy.blocked = true;
    proxy.cut();
    await waitFor(() => c.state === 'disconnected', 'the drop');
    await pub.close(); // the room is empty now and dropped at once (roomTtlMs 0)
  }
  const again = await openClient(t, engine, 'p2');
  await waitFor(async () => {
    const r = await again.request({ t: 'join', room: 'e' });
    if (r.seq === 0) return true;
    await again.request({ t: 'leave', room: 'e' });
    return false;
  }, 'the room to start a new epoch');
  await pubTo(again, 'e', 'new-1');
  proxy.blocked = false;
  await waitFor(() => log.includes('m1') && log.length >= 4, 'the new epoch page', 5000);
  await pubTo(again, 'e', 'new-2');
  await waitFor(() => log.includes('m2') && log.length >= 5, 'a live message of the new epoch');
  assert.deepEqual(log, ['m1', 'm2', 'gap:epoch', 'm1', 'm2']);
});

test('offline queue: count and byte bounds reject at once with QueueFullError; each entry times out; the rest flush in order', async (t) => {
  const engine = await startEngine(t);
  const proxy = await Proxy.start(t, engine.port);
  proxy.blocked = true;
  const c = sdk(t, proxy.port, 'dave', { maxQueue: 3, maxQueueBytes: 400, publishTimeoutMs: 300 });
  const joined = c.join('q');
  await assert.rejects(c.publish('nowhere', 1), (e: ClientError) => e.code === 'not_joined');
  const first = [c.publish('q', 'a'), c.publish('q', 'b'), c.publish('q', 'c')];
  await assert.rejects(c.publish('q', 'd'), (e: Error) => e instanceof QueueFullError && /3 entries/.test(e.message));
  assert.deepEqual(c.queued.count, 3);
  for (const p of first) await assert.rejects(p, (e: Error) => e instanceof TimeoutError);
  assert.deepEqual(c.queued, { count: 0, bytes: 0 });
  await assert.rejects(c.publish('q', 'x'.repeat(400)), (e: Error) => e instanceof QueueFullError && /400 bytes/.test(e.message));
  const later = [c.publish('q', 'one'), c.publish('q', 'two'), c.publish('q', 'three')];
  const bodies: unknown[] = [];
  c.on('message', (m) => bodies.push(m.body));
  proxy.blocked = false;
  await joined;
  const acks = await Promise.all(later);
  assert.deepEqual(acks.map((a) => a.seq), [1, 2, 3], 'sent in order after the room was joined, each acked');
  await waitFor(() => bodies.length === 3, 'own messages');
  assert.deepEqual(bodies, ['one', 'two', 'three']);
});

test("hello.limits are kept: a publish over maxFrame is refused locally, the rate is paced below the engine's bucket", async (t) => {
  const engine = await startEngine(t, { maxFrameBytes: 1024, ratePerSec: 20, rateBurst: 5 });
  const c = sdk(t, engine.port, 'erin');
  const errors = record(c, 'error');
  await c.join('l');
  assert.equal(c.limits?.maxFrame, 1024);
  await assert.rejects(c.publish('l', 'x'.repeat(2000)), (e: ClientError) => e.code === 'too_large');
  const start = Date.now();
  const acks = await Promise.all(Array.from({ length: 30 }, (_, i) => c.publish('l', i)));
  const took = Date.now() - start;
  assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 30 }, (_, i) => i + 1), 'no publish was refused as rate_limited');
  // 30 frames + the join and its who, paced at 80% of 20/s from a burst of 4: at least ~1.5 s.
  assert.ok(took >= 1400, `paced to the engine's rate (took ${took} ms)`);
  assert.deepEqual(errors, []);
});

test('hist, who, read, unread and presence', async (t) => {
  const engine = await startEngine(t);
  const a = sdk(t, engine.port, 'ann');
  const b = sdk(t, engine.port, 'ben');
  const presence = record(a, 'presence');
  const unread: number[] = [];
  a.on('unread', (e) => { if (e.room === 'h') unread.push(e.count); });
  await a.join('h');
  await b.join('h');
  await waitFor(() => presence.length === 1, 'presence of ben');
  assert.deepEqual(presence[0]!.e, { room: 'h', user: 'ben', state: 'join' });
  await waitFor(() => a.members('h').length === 2, 'ann sees both members');
  assert.deepEqual(a.members('h').sort(), ['ann', 'ben']);
  assert.deepEqual((await a.who('h')).sort(), ['ann', 'ben']);
  for (let i = 0; i < 4; i++) await b.publish('h', `m${i}`);
  await waitFor(() => a.lastSeq('h') === 4, 'ann has the 4 messages');
  assert.equal(a.unread('h'), 4);
  assert.equal(unread.at(-1), 4);
  assert.equal(await a.read('h', 3), 3);
  assert.equal(a.unread('h'), 1);
  const page = await a.history('h', { before: 4, limit: 2 });
  assert.deepEqual(page.msgs.map((m) => [m.seq, m.from, m.body]), [[2, 'ben', 'm1'], [3, 'ben', 'm2']]);
  await b.leave('h');
  assert.equal(b.roomState('h'), 'left');
  await waitFor(() => presence.length === 2, 'ben left');
  assert.deepEqual(a.members('h'), ['ann']);
});

test('close() leaves no timer, socket or listener: connected, connecting, and waiting to retry', async (t) => {
  const engine = await startEngine(t);
  const proxy = await Proxy.start(t, engine.port);
  await settle(20);
  const base = snapshotResources();
  const c1 = new ShardchatClient({ url: `ws://127.0.0.1:${engine.port}/ws`, user: 'x1', WebSocket, ...FAST });
  c1.on('message', () => undefined);
  await c1.join('z');
  const pending = c1.publish('z', 'in flight');
  c1.close();
  await assert.rejects(pending, (e: ClientError) => e.code === 'closed' || e.code === 'disconnected');
  assert.equal(c1.state, 'closed');
  assert.equal(c1.listenerCount, 0);
  proxy.blocked = true;
  const c2 = new ShardchatClient({ url: `ws://127.0.0.1:${proxy.port}/ws`, user: 'x2', WebSocket, ...FAST });
  await waitFor(() => c2.state === 'disconnected', 'c2 refused, waiting to retry');
  const join = c2.join('z');
  c2.close();
  await assert.rejects(join, (e: ClientError) => e.code === 'closed');
  const c3 = new ShardchatClient({ url: `ws://127.0.0.1:${engine.port}/ws`, user: 'x3', WebSocket, ...FAST });
  c3.close(); // still connecting
  let extra: Record<string, number> = {};
  for (let i = 0; i < 40; i++) {
    extra = extraResources(base);
    if (Object.keys(extra).length === 0) break;
    await settle(25);
  }
  assert.deepEqual(extra, {}, 'resources left by closed clients');
});

test('a publish whose ack is lost is sent again after the reconnect, with its cid, and stored once', async (t) => {
  const engine = await startEngine(t);
  const proxy = await Proxy.start(t, engine.port);
  const c = sdk(t, proxy.port, 'fay');
  await c.join('once');
  const watcher = await openClient(t, engine, 'watcher');
  await joinRoom(watcher, 'once');
  proxy.muted = true; // the engine's ack (and msg) will not reach the client
  const acked = c.publish('once', 'exactly once');
  const stored = async (): Promise<number> => {
    const h = await watcher.request({ t: 'hist', room: 'once' });
    return (h.msgs as { body: unknown }[]).filter((m) => m.body === 'exactly once').length;
  };
  await waitFor(async () => (await stored()) === 1, 'the engine stored the publish');
  proxy.cut();
  proxy.muted = false;
  const { seq } = await acked;
  assert.ok(seq >= 1);
  assert.equal(await stored(), 1, 'the retry was not stored a second time');
});
