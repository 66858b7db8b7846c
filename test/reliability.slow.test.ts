/**
 * Reliability: slow consumers, heartbeats and connection limits.
 *
 * - A member that stops reading (its socket paused, so the kernel buffers fill and then the
 *   engine's) while a room keeps publishing 2 KiB bodies is closed with 4008 once its unsent
 *   data passes maxBufferBytes (64 KiB); the other members keep receiving every message in order
 *   with no gap, and their latency with and without the stalled member is printed. The stalled
 *   member then reconnects and resumes with join + since, getting exactly what it missed.
 * - Heartbeats: with idleTimeoutSec 8, a raw client that never answers pings and never sends
 *   anything after its join is reaped within 2x the timeout, its membership and presence cleared;
 *   a silent client that does answer pings stays.
 * - maxConnections: the 4th upgrade of 3 gets HTTP 503. maxRoomsPerConn: too_many_rooms.
 *   A message over maxFrame: close 1009 with a close frame.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import type { Engine, EngineOptions } from '../engine/index.js';
import { startEngine } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { assertContiguous } from './helpers/seqs.js';
import { TestClient, tryUpgrade, waitFor, type Frame } from './helpers/client.js';
import { OP_BINARY, RawClient, wsFrame } from './helpers/raw-client.js';
import { encode } from '@msgpack/msgpack';

guardHandles();


function start(t: TestContext, opts: EngineOptions = {}): Promise<Engine> {
  return startEngine(t, { roomTtlMs: 0, ...opts });
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

const PAD = 'x'.repeat(2000);

/** A fast member: a raw client that records each msg's seq and latency (now - body.ts) as it arrives. */
class Fast {
  readonly seqs: number[] = [];
  readonly lat: number[] = [];
  joinedSeq = -1;
  constructor(readonly c: RawClient, readonly room: string) {
    c.onFrame = (f: Frame) => {
      if (f.t !== 'msg' || f.room !== room) return;
      this.seqs.push(f.seq as number);
      const b = f.body as { ts: number; phase: number };
      this.lat.push(performance.now() - b.ts);
    };
  }
}

/** Publishes with `window` pubs in flight until stop() returns true; returns the last acked seq. */
async function publish(p: TestClient, room: string, window: number, phase: number, stop: (sent: number) => boolean, maxMs: number): Promise<number> {
  let sent = 0;
  let last = 0;
  const deadline = Date.now() + maxMs;
  const one = async (): Promise<void> => {
    while (!stop(sent) && Date.now() < deadline) {
      sent++;
      const r = await p.request({ t: 'pub', room, body: { ts: performance.now(), phase, pad: PAD } }, 10_000);
      assert.equal(r.t, 'ack', `pub answered ${JSON.stringify(r)}`);
      last = Math.max(last, r.seq as number);
    }
  };
  await Promise.all(Array.from({ length: window }, one));
  return last;
}

test('slow consumer: a member that stops reading is closed with 4008; others get every message in order; it resumes with since', async (t) => {
  const engine = await start(t, { maxBufferBytes: 64 * 1024, historyLimit: 50_000, maxHistBytes: 2 << 20 });
  const room = 'slow-room';
  const pubc = await TestClient.connect(engine.port, { user: 'pub' });
  t.after(() => pubc.close());
  assert.equal((pubc.hello.limits as Frame).maxBuffer, 64 * 1024);
  assert.equal((await pubc.request({ t: 'join', room })).t, 'joined');
  const fast: Fast[] = [];
  for (const u of ['fast1', 'fast2']) {
    const c = await RawClient.connect(engine.port, { user: u });
    t.after(() => c.close());
    const f = new Fast(c, room);
    await c.next((x) => x.t === 'hello');
    c.send({ t: 'join', room, ref: 1 });
    const j = await c.next((x) => x.ref === 1);
    assert.equal(j.t, 'joined');
    f.joinedSeq = j.seq as number;
    fast.push(f);
  }

  // Warm-up (not measured): compiled code and buffers reach their working state first.
  const last0 = await publish(pubc, room, 8, 0, (n) => n >= 1000, 30_000);
  await waitFor(() => fast.every((f) => f.seqs.length >= last0), 'fast members got the warm-up', 10_000);
  for (const f of fast) f.lat.length = 0;

  // Phase 1: no stalled member.
  const N1 = 1500;
  const last1 = await publish(pubc, room, 8, 1, (n) => n >= N1, 30_000);
  await waitFor(() => fast.every((f) => f.seqs.at(-1) === last1), 'fast members got phase 1', 10_000);
  const lat1 = fast.flatMap((f) => f.lat.splice(0));

  // Phase 2: a member joins and stops reading; publishing goes on until the engine closes it.
  const slow = await TestClient.connect(engine.port, { user: 'stalled' });
  t.after(() => slow.close());
  const sj = await slow.request({ t: 'join', room });
  assert.equal(sj.t, 'joined');
  const epoch = sj.epoch as string;
  (slow.ws as unknown as { _socket: Socket })._socket.pause();
  const slowBefore = engine.counters.slowConsumers;
  let sentAtClose = -1;
  const tClose0 = Date.now();
  const last2 = await publish(pubc, room, 8, 2, (n) => {
    if (sentAtClose < 0 && engine.counters.slowConsumers > slowBefore) sentAtClose = n;
    return sentAtClose >= 0;
  }, 40_000);
  const closeMs = Date.now() - tClose0;
  const lat2 = fast.flatMap((f) => f.lat.splice(0));
  assert.ok(sentAtClose >= 0, `the stalled member was not closed after ${last2} messages (${(last2 * 2) >> 10} MiB) in ${closeMs} ms`);
  await waitFor(() => engine.stats().connections === 3, 'the stalled connection gone on the server', 5000);
  assert.equal(engine.counters.slowConsumers - slowBefore, 1, 'exactly one slow consumer closed');
  assert.equal(engine.counters.closedByCode.get(4008), 1, `server closed it with 4008: ${JSON.stringify([...engine.counters.closedByCode])}`);

  // Phase 3: the room goes on without it.
  const last3 = await publish(pubc, room, 8, 3, (n) => n >= 300, 30_000);
  await waitFor(() => fast.every((f) => f.seqs.at(-1) === last3), 'fast members got everything', 10_000);
  for (const [k, f] of fast.entries()) assertContiguous(f.seqs, f.joinedSeq + 1, last3, `fast${k + 1}`);
  // Presence: the stalled user's leave reached the others.
  for (const f of fast) await f.c.next((x) => x.t === 'presence' && x.user === 'stalled' && x.state === 'leave', 5000, 'presence leave of the stalled user');

  console.log(`# slow: stalled member closed after ${sentAtClose} pubs of 2 KiB (${closeMs} ms) with maxBuffer 64 KiB`);
  console.log(`# slow: fast members' latency without a stalled member: p50 ${pct(lat1, 50).toFixed(2)} ms, p99 ${pct(lat1, 99).toFixed(2)} ms (${lat1.length} deliveries)`);
  console.log(`# slow: fast members' latency with a stalled member:    p50 ${pct(lat2, 50).toFixed(2)} ms, p99 ${pct(lat2, 99).toFixed(2)} ms (${lat2.length} deliveries)`);
  for (const l of [lat1, lat2]) {
    assert.ok(l.length > 0 && l.every((x) => Number.isFinite(x) && x >= 0), 'latencies measured');
    assert.ok(pct(l, 99) < 10_000, `p99 latency ${pct(l, 99)} ms is not sane`);
  }

  // The stalled client reads again: what it had got is contiguous, then the close frame (4008).
  const sock = (slow.ws as unknown as { _socket: Socket })._socket;
  sock.resume();
  const closed = await slow.waitClosed(10_000);
  const got = slow.framesOf('msg', room).map((m) => m.seq as number);
  console.log(`# slow: the stalled client received ${got.length} msgs (to seq ${got.at(-1) ?? 0}) and then close ${closed.code} "${closed.reason}"`);
  assert.equal(closed.code, 4008, `the stalled client saw close ${closed.code} "${closed.reason}" (1006 = no close frame)`);
  const lastGot = got.at(-1) ?? (sj.seq as number);
  assertContiguous(got, (sj.seq as number) + 1, lastGot, 'what the stalled client got before 4008');

  // Resume: join with since = the last seq it has; missed = exactly the rest.
  const again = await TestClient.connect(engine.port, { user: 'stalled' });
  t.after(() => again.close());
  const rj = await again.request({ t: 'join', room, since: lastGot, epoch });
  assert.equal(rj.t, 'joined', JSON.stringify(rj).slice(0, 300));
  assert.equal(rj.truncated, undefined, `resume from ${lastGot} truncated (latest ${String(rj.seq)})`);
  assert.equal(rj.seq, last3);
  const missed = (rj.missed as Frame[]).map((m) => m.seq as number);
  assertContiguous(missed, lastGot + 1, last3, 'joined.missed');
  assertContiguous([...got, ...missed], (sj.seq as number) + 1, last3, 'what the stalled user has after resuming');
  // And it is live again.
  const a = await pubc.request({ t: 'pub', room, body: { ts: performance.now(), phase: 4, pad: '' } });
  await again.next((f) => f.t === 'msg' && f.seq === a.seq, 5000);
  assert.deepEqual([...pubc.violations, ...slow.violations, ...again.violations, ...fast.flatMap((f) => f.c.violations)], []);
});

test('heartbeat: a client that never answers pings nor sends is reaped within 2x idleTimeoutSec; a silent one that answers pings stays', async (t) => {
  const IDLE = 8;
  const engine = await start(t, { idleTimeoutSec: IDLE });
  const room = 'hb';
  const member = await TestClient.connect(engine.port, { user: 'alive' });
  t.after(() => member.close());
  assert.equal((await member.request({ t: 'join', room })).t, 'joined');

  const mute = await RawClient.connect(engine.port, { user: 'mute', answerPings: false });
  t.after(() => mute.destroy());
  await mute.next((f) => f.t === 'hello');
  mute.send({ t: 'join', room, ref: 1 });
  const tLast = performance.now(); // the last byte the mute client ever sends
  assert.equal((await mute.next((f) => f.ref === 1)).t, 'joined');
  await member.next((f) => f.t === 'presence' && f.user === 'mute' && f.state === 'join', 3000);
  await waitFor(() => engine.stats().shards.reduce((a, s) => a + (s.presentUsers as number), 0) === 2, 'two users present', 3000);

  await mute.waitEnded(2 * IDLE * 1000 + 1000);
  const reapedAfter = (performance.now() - tLast) / 1000;
  console.log(`# heartbeat: mute client reaped ${reapedAfter.toFixed(1)} s after its last frame (idleTimeoutSec ${IDLE}); it got ${mute.pings} pings; close frame ${JSON.stringify(mute.closeFrame)}`);
  assert.ok(reapedAfter <= 2 * IDLE + 0.5, `reaped after ${reapedAfter.toFixed(1)} s, want within ${2 * IDLE} s`);
  // uWS keeps time in 4 s ticks: it pings after 1-2 ticks of silence and closes 1 tick later
  // without a pong, so a mute client goes after ~4..12 s with idleTimeoutSec 8 (not exactly 8).
  assert.ok(reapedAfter >= 2, `reaped after only ${reapedAfter.toFixed(1)} s of silence`);
  await member.next((f) => f.t === 'presence' && f.user === 'mute' && f.state === 'leave', 3000);
  await waitFor(() => {
    const s = engine.stats();
    return s.connections === 1 && s.connRooms === 1 && s.shards.reduce((a, x) => a + x.members, 0) === 1 && s.shards.reduce((a, x) => a + (x.presentUsers as number), 0) === 1;
  }, 'only the live member left in the engine', 3000);
  // The live member sent nothing either, but answered pings: still open and served.
  assert.ok(member.isOpen, 'the silent member that answers pings was closed');
  const who = await member.request({ t: 'who', room });
  assert.deepEqual(who.users, ['alive']);
  await member.close();
  await waitFor(() => {
    const s = engine.stats();
    return s.connections === 0 && s.connRooms === 0 && s.shards.every((x) => x.rooms === 0 && x.members === 0 && (x.conns as number) === 0 && (x.presentUsers as number) === 0);
  }, 'engine empty', 3000);
});

test('maxConnections 3: the 4th upgrade gets HTTP 503; a freed slot is usable again', async (t) => {
  const engine = await start(t, { maxConnections: 3 });
  const cs: TestClient[] = [];
  t.after(async () => { await Promise.all(cs.map((c) => c.close())); });
  for (let i = 0; i < 3; i++) cs.push(await TestClient.connect(engine.port, { user: `mc${i}` }));
  const r = await tryUpgrade(engine.port, '/ws?user=mc3');
  assert.equal(r.status, 503, `4th upgrade: ${JSON.stringify(r)}`);
  const raw = await RawClient.connect(engine.port, { user: 'mc4' }).then(() => 101, (e: { status?: number }) => e.status ?? 0);
  assert.equal(raw, 503, '4th upgrade over a raw socket');
  assert.equal(engine.stats().connections, 3);
  await cs.pop()!.close();
  await waitFor(() => engine.stats().connections === 2, 'a slot freed', 3000);
  cs.push(await TestClient.connect(engine.port, { user: 'mc5' }));
  assert.equal(engine.stats().connections, 3);
});

for (const mode of ['open mode', 'an async authenticate hook'] as const) {
  test(`maxConnections 3 with ${mode}: 10 concurrent upgrades open at most 3 connections, the rest get HTTP 503`, async (t) => {
    const authenticate = async (req: { query: string }): Promise<{ user: string }> => {
      await new Promise((r) => setTimeout(r, 30));
      return { user: /user=([A-Za-z0-9]+)/.exec(req.query)?.[1] ?? 'anon' };
    };
    const engine = await start(t, { maxConnections: 3, ...(mode === 'open mode' ? {} : { authenticate }) });
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => RawClient.connect(engine.port, { user: `cc${i}` }).then(
      (c) => ({ status: 101, c }),
      (e: { status?: number; message?: string }) => ({ status: e.status ?? 0, c: null as RawClient | null, error: e.message }),
    )));
    t.after(async () => { await Promise.all(answers.map((a) => a.c?.close())); });
    const statuses = answers.map((a) => a.status).sort();
    const opened = engine.stats().connections;
    assert.deepEqual(statuses, [101, 101, 101, 503, 503, 503, 503, 503, 503, 503], `upgrade answers (${opened} connections open, maxConnections 3)`);
    assert.equal(opened, 3);
  });
}

test('maxRoomsPerConn 3: the 4th room is too_many_rooms (with ref); rejoining is fine; leaving frees a slot', async (t) => {
  const engine = await start(t, { maxRoomsPerConn: 3 });
  const c = await TestClient.connect(engine.port, { user: 'rooms' });
  t.after(() => c.close());
  assert.equal((c.hello.limits as Frame).maxRooms, 3);
  for (const r of ['r1', 'r2', 'r3']) assert.equal((await c.request({ t: 'join', room: r })).t, 'joined');
  const ref = c.takeRef();
  c.send({ t: 'join', room: 'r4', ref });
  const e = await c.next((f) => f.ref === ref);
  assert.deepEqual([e.t, e.code], ['err', 'too_many_rooms'], JSON.stringify(e));
  assert.equal((await c.request({ t: 'join', room: 'r2' })).t, 'joined', 'rejoining a room already joined is not a new room');
  const pubR4 = await c.request({ t: 'pub', room: 'r4', body: 1 });
  assert.deepEqual([pubR4.t, pubR4.code], ['err', 'not_joined'], 'the refused join did not join');
  assert.equal((await c.request({ t: 'leave', room: 'r1' })).t, 'left');
  assert.equal((await c.request({ t: 'join', room: 'r4' })).t, 'joined');
  assert.equal(engine.stats().connRooms, 3);
});

test('a message over maxFrame closes with 1009 and a close frame; its membership is cleared', async (t) => {
  const engine = await start(t, { maxFrameBytes: 4096 });
  const other = await TestClient.connect(engine.port, { user: 'other' });
  t.after(() => other.close());
  assert.equal((await other.request({ t: 'join', room: 'big' })).t, 'joined');
  const c = await RawClient.connect(engine.port, { user: 'big' });
  t.after(() => c.destroy());
  await c.next((f) => f.t === 'hello');
  c.send({ t: 'join', room: 'big', ref: 1 });
  assert.equal((await c.next((f) => f.ref === 1)).t, 'joined');
  // Exactly maxFrame is fine.
  const body = 'y'.repeat(4096 - encode({ t: 'pub', room: 'big', ref: 2, body: '' }).length - 2);
  const exact = encode({ t: 'pub', room: 'big', ref: 2, body });
  assert.equal(exact.length, 4096);
  c.sendPayload(exact);
  assert.equal((await c.next((f) => f.ref === 2)).t, 'ack');
  // One byte more: close 1009 with a close frame.
  c.writeRaw(wsFrame(OP_BINARY, new Uint8Array(4097)));
  await c.waitEnded(5000);
  assert.equal(c.closeFrame?.code, 1009, `close frame: ${JSON.stringify(c.closeFrame)} (null = the socket was dropped without one)`);
  await other.next((f) => f.t === 'presence' && f.user === 'big' && f.state === 'leave', 3000);
  await waitFor(() => engine.stats().connections === 1 && engine.stats().connRooms === 1, 'the closed connection is gone', 3000);
});
