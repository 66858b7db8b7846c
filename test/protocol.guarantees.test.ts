/**
 * Integration: PROTOCOL.md's guarantees (order, resume, unread, presence, drain, frame limit,
 * server-side publish, shard crash), against a real engine on 127.0.0.1:0 with real WebSocket
 * clients speaking @msgpack/msgpack. No engine part is mocked; nothing waits on a fixed sleep for
 * correctness: tests wait for frames (or, for state without frames, poll with a bound).
 *
 * The guarantees that hold for any deployment are in ./helpers/guarantees-suite.ts, run here
 * against one engine and in cluster.guarantees.test.ts against a 3-node cluster; what stays here
 * is node-local by nature (shards, rings, a connection's limits, drain, engine.publish).
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import type { Engine, EngineOptions } from '../engine/index.js';
import { startEngine, openClient as open, joinRoom as join, pubTo as pub, roomsPerShard } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { Pump, sumAcks } from './helpers/pump.js';
import { guaranteesSuite } from './helpers/guarantees-suite.js';
import { assertContiguous, ranges } from './helpers/seqs.js';
import { TestClient, tryUpgrade, httpGet, encode, encodedSize, waitFor, describeFrames, type Frame } from './helpers/client.js';

guardHandles();

guaranteesSuite('single node', async (t, opts = {}) => {
  const engine = await start(t, opts);
  return {
    nodes: 1,
    open: (user: string) => open(t, engine, user),
    joinSeesEveryAck: true,
    connections: () => engine.stats().connections,
  };
});


function start(t: TestContext, opts: EngineOptions = {}): Promise<Engine> {
  return startEngine(t, { maxBufferBytes: 64 * 1024 * 1024, ...opts });
}

const sorted = (xs: unknown): string[] => [...(xs as string[])].sort();
const seqsOf = (fs: Frame[]): number[] => fs.map((f) => f.seq as number);

/** The frames of one room that carry delivery order: joined, msg, left. */
function stream(c: TestClient, room: string): Frame[] {
  return c.frames.filter((f) => f.room === room && (f.t === 'joined' || f.t === 'msg' || f.t === 'left'));
}

describe('guarantee 1: order, no gaps, only members', () => {
  test('rooms on every shard flow independently and reach only their members', async (t) => {
    const SHARDS = 3;
    const engine = await start(t, { shards: SHARDS });
    const rooms = roomsPerShard(engine, SHARDS, 'spread', 2).flat();
    const lurker = await open(t, engine, 'lurker');
    await join(lurker, 'lurk');
    const members: { c: TestClient; room: string }[] = [];
    const pumps: Pump[] = [];
    for (const room of rooms) {
      for (const side of ['a', 'b']) {
        const c = await open(t, engine, `${room}.${side}`);
        await join(c, room);
        members.push({ c, room });
        pumps.push(new Pump(c, room, `${room}.${side}`, 8, 40));
      }
    }
    pumps.forEach((p) => p.start());
    await Promise.all(pumps.map((p) => p.done()));
    for (const p of pumps) {
      assert.deepEqual(p.errs, []);
      assert.equal(p.acks.length, 40);
    }
    for (const { c, room } of members) {
      await c.next((f) => f.t === 'msg' && f.room === room && f.seq === 80, 10_000, `msg 80 of ${room}`);
      const w = await c.request({ t: 'who', room });
      assert.deepEqual(sorted(w.users), [`${room}.a`, `${room}.b`]);
    }
    await lurker.request({ t: 'who', room: 'lurk' });
    for (const { c, room } of members) {
      const msgs = c.framesOf('msg');
      assert.ok(msgs.every((f) => f.room === room), `${c.label} received msgs of other rooms: ${JSON.stringify([...new Set(msgs.map((f) => f.room))])}`);
      assertContiguous(seqsOf(msgs), 1, 80, c.label);
    }
    assert.deepEqual(lurker.framesOf('msg'), [], 'a connection in no busy room receives nothing');
    await waitFor(() => engine.stats().shards.every((sh: { rooms: number }) => sh.rooms >= 2), 'every shard holding its rooms in stats()');
  });
});

describe('guarantee 2: resume with since; slow consumers', () => {
  test('full rings are back-pressure, not loss: overloaded carries retryAfterMs and the ref; everything acked is delivered', async (t) => {
    const engine = await start(t, { ringBytes: 65_536, maxFrameBytes: 16_384, maxHistBytes: 16_384 });
    const room = 'press';
    const obs = await open(t, engine, 'obs');
    await join(obs, room);
    const pubs = await Promise.all([0, 1, 2, 3].map((i) => open(t, engine, `bp${i}`)));
    for (const c of pubs) await join(c, room);
    const PER = 60;
    const body = 'p'.repeat(6000);
    const pumps = pubs.map((c, i) => new Pump(c, room, `bp${i}`, 24, PER));
    // Bigger bodies than the Pump's default: wrap request to carry them.
    for (const c of pubs) {
      const orig = c.request.bind(c);
      c.request = (frame: Frame, timeoutMs?: number) => orig(frame.t === 'pub' ? { ...frame, body: { ...(frame.body as Frame), pad: body } } : frame, timeoutMs);
    }
    pumps.forEach((p) => p.start());
    await Promise.all(pumps.map((p) => p.done()));
    const N = 4 * PER;
    for (const p of pumps) {
      assert.equal(p.acks.length, PER, `${p.label}: every pub acked in the end`);
      assert.deepEqual(p.unanswered, []);
      p.assertSendOrder();
      for (const e of p.errs) {
        assert.equal(e.code, 'overloaded', `${p.label}: only overloaded under pressure: ${JSON.stringify(e)}`);
        assert.equal(typeof e.retryAfterMs, 'number', `overloaded carries retryAfterMs: ${JSON.stringify(e)}`);
        assert.equal(typeof e.ref, 'number', 'overloaded carries the ref');
      }
    }
    assertContiguous(pumps.flatMap((p) => p.acks.map((a) => a.seq)).sort((x, y) => x - y), 1, N, 'acked seqs (an overloaded request gets no seq)');
    t.diagnostic(`overloaded answers: ${pumps.reduce((n, p) => n + p.errs.length, 0)}`);
    for (const c of [obs, ...pubs]) {
      await c.next((f) => f.t === 'msg' && f.room === room && f.seq === N, 10_000, `msg ${N}`);
      assertContiguous(seqsOf(c.framesOf('msg', room)), 1, N, c.label);
    }
  });

  test('a slow consumer is closed with 4008 instead of losing messages, and resumes with since', async (t) => {
    const engine = await start(t, { maxBufferBytes: 256 * 1024 });
    const slow = await open(t, engine, 'slow');
    assert.equal((slow.hello.limits as Frame).maxBuffer, 256 * 1024);
    await join(slow, 'sc');
    // Stop reading: the kernel buffers fill (tcp_rmem may allow tens of MB), then the engine's own.
    const sock = (slow.ws as unknown as { _socket: Socket })._socket;
    sock.pause();
    const big = 'x'.repeat(32 * 1024);
    let latest = 0;
    for (let sent = 0; sent < 3000 && engine.stats().connections > 0; ) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => engine.publish('sc', big, { from: 'system' })));
      sent += batch.length;
      latest = Math.max(latest, ...batch.map((r) => r.seq));
    }
    sock.resume();
    if (slow.isOpen) {
      // Not closed (yet): a probe message makes any silent loss visible as a gap.
      const probe = await engine.publish('sc', 'probe', { from: 'system' });
      latest = probe.seq;
      await Promise.race([slow.closed, slow.next((f) => f.t === 'msg' && f.seq === probe.seq, 8000, 'the probe msg or a close').catch(() => undefined)]);
    }
    const got = seqsOf(slow.framesOf('msg', 'sc'));
    const closed = slow.closeInfo;
    assert.ok(closed, `after ${latest} messages of 32 KiB the slow consumer (maxBuffer 256 KiB) was never closed; it received seqs ${ranges(got)}`);
    assert.equal(closed.code, 4008, `slow consumer close code ${closed.code} "${closed.reason}"; it received seqs ${ranges(got)}`);
    assertContiguous(got, 1, got.length, 'what the slow consumer got before 4008');
    const last = got.length;
    const r = await open(t, engine, 'slow');
    const j = await join(r, 'sc', { since: last });
    if (j.truncated !== true) {
      assertContiguous(seqsOf(j.missed as Frame[]), last + 1, j.seq as number, 'resumed missed');
    } else {
      assert.equal(j.missed, undefined);
    }
  });
});


describe('guarantee 4 / presence across shards', () => {
  test('closing a connection that is in rooms on every shard sends presence leave in each of them', async (t) => {
    const SHARDS = 3;
    const engine = await start(t, { shards: SHARDS });
    const rooms = roomsPerShard(engine, SHARDS, 'multi').flat();
    const u = await open(t, engine, 'roamer');
    const observers: TestClient[] = [];
    for (const room of rooms) {
      const o = await open(t, engine, `obs-${room}`);
      await join(o, room);
      observers.push(o);
      await join(u, room);
      await o.next((f) => f.t === 'presence' && f.user === 'roamer' && f.state === 'join');
    }
    u.terminate();
    for (const [i, o] of observers.entries()) {
      const p = await o.next((f) => f.t === 'presence' && f.user === 'roamer' && f.state === 'leave', 3000, `presence leave in ${rooms[i]}`);
      assert.equal(p.room, rooms[i]);
      const w = await o.request({ t: 'who', room: rooms[i]! });
      assert.deepEqual(w.users, [`obs-${rooms[i]}`]);
    }
  });
});

describe('guarantee 4 / drain', () => {
  test('close() under load: every acked message reaches every open member before 1001; new pubs get shutting_down; upgrades refused', async (t) => {
    const engine = await start(t);
    const room = 'drain';
    const members = await Promise.all([0, 1].map((i) => open(t, engine, `m${i}`)));
    const pubs = await Promise.all([0, 1, 2].map((i) => open(t, engine, `p${i}`)));
    for (const c of [...members, ...pubs]) await join(c, room);
    const flags = { closing: false };
    const pumps = pubs.map((c, i) => new Pump(c, room, `p${i}`, 16, Infinity, flags).start());
    await waitFor(() => sumAcks(pumps) >= 300, '300 acks under load', 10_000);

    flags.closing = true;
    const closing = engine.close();
    const settle = <T>(p: Promise<T>): Promise<T | { error: string }> => p.catch((e: NodeJS.ErrnoException) => ({ error: e.code ?? e.message }));
    const [up, ready, health] = await Promise.all([
      tryUpgrade(engine.port, '/ws?user=latecomer'),
      settle(httpGet(engine.port, '/readyz')),
      settle(httpGet(engine.port, '/healthz')),
    ]);
    const closedAll = await Promise.all([...members, ...pubs].map((c) => c.waitClosed(8000)));
    let closeTimer: NodeJS.Timeout | undefined;
    await Promise.race([closing, new Promise((_r, rej) => { closeTimer = setTimeout(() => rej(new Error('engine.close() did not resolve within 8 s')), 8000); })]);
    clearTimeout(closeTimer);
    await Promise.all(pumps.map((p) => p.done()));

    if (up.error !== undefined) assert.match(up.error, /ECONNREFUSED|ECONNRESET/, `upgrade during drain: ${up.error}`);
    else assert.equal(up.status, 503, `upgrade during drain answered HTTP ${up.status}, want 503`);
    if ('status' in ready) assert.equal(ready.status, 503, `/readyz during drain: ${ready.status}`);
    if ('status' in health) assert.equal(health.status, 200, `/healthz during drain: ${health.status}`);
    closedAll.forEach((c, i) => assert.equal(c.code, 1001, `client ${i} closed with ${c.code} "${c.reason}", want 1001`));

    const acked = pumps.flatMap((p) => p.acks);
    for (const p of pumps) {
      p.assertSendOrder();
      p.assertUnansweredIsATail();
      for (const e of p.errs) assert.ok(e.code === 'shutting_down' || e.code === 'overloaded', `${p.label}: unexpected err ${JSON.stringify(e)}`);
      const ackAfter = p.acks.filter((a) => a.afterClose);
      assert.deepEqual(ackAfter, [], `${p.label}: pubs sent after close() started must get shutting_down, not ack`);
    }
    const maxAcked = Math.max(...acked.map((a) => a.seq));
    const allSeqs = acked.map((a) => a.seq).sort((x, y) => x - y);
    assertContiguous(allSeqs, 1, allSeqs.length, 'acked seqs');
    for (const c of [...members, ...pubs]) {
      const got = seqsOf(c.framesOf('msg', room));
      assertContiguous(got, 1, got.length, `${c.label} before 1001`);
      assert.ok(got.length >= maxAcked, `${c.label}: received up to seq ${got.length} before 1001, but seq ${maxAcked} was acked`);
    }
    await engine.close(); // safe twice
  });

  test('a request arriving after close() started is answered shutting_down (or the socket is already closed 1001), never served', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'a');
    const b = await open(t, engine, 'b');
    await join(a, 'sd');
    await join(b, 'sd');
    await pub(a, 'sd', 'before');
    await b.next((f) => f.t === 'msg' && f.seq === 1);
    const closing = engine.close();
    await assert.rejects(engine.publish('sd', 'server-side during drain', { from: 'system' }), 'engine.publish during drain is refused');
    const refs = [a.takeRef(), a.takeRef(), a.takeRef(), a.takeRef()];
    a.send({ t: 'pub', room: 'sd', body: 'during', ref: refs[0] });
    a.send({ t: 'join', room: 'sd2', ref: refs[1] });
    a.send({ t: 'who', room: 'sd', ref: refs[2] });
    a.send({ t: 'nope', ref: refs[3] });
    const [ca, cb] = await Promise.all([a.waitClosed(8000), b.waitClosed(8000)]);
    await closing;
    assert.equal(ca.code, 1001);
    assert.equal(cb.code, 1001);
    const answered = refs.map((ref) => a.frames.filter((f) => f.ref === ref));
    answered.forEach((replies, i) => {
      assert.ok(replies.length <= 1, `ref ${refs[i]}: at most one reply`);
      if (replies.length === 1 && i < 3) assert.deepEqual([replies[0]!.t, replies[0]!.code], ['err', 'shutting_down'], `ref ${refs[i]}: ${JSON.stringify(replies[0])}`);
      if (replies.length === 1 && i === 3) assert.ok(replies[0]!.code === 'shutting_down' || replies[0]!.code === 'unknown_type', JSON.stringify(replies[0]));
    });
    // Frames arrive in order: once a later request was answered, every earlier one was read and must be answered.
    const lastAnswered = answered.map((r) => r.length).lastIndexOf(1);
    for (let i = 0; i < lastAnswered; i++) {
      assert.equal(answered[i]!.length, 1, `request ${i} (ref ${refs[i]}) was read (request ${lastAnswered} was answered) but never answered; frames: ${describeFrames(a.frames.slice(-6))}`);
    }
    assert.deepEqual(seqsOf(b.framesOf('msg', 'sd')), [1], 'the pub during drain was not delivered');
    assert.deepEqual(seqsOf(a.framesOf('msg', 'sd')), [1]);
  });
});

describe('guarantee 5: frame and connection limits', () => {
  test('a message of exactly maxFrame bytes is served; one byte more closes with 1009 (a close frame) and counts as leave', async (t) => {
    const MAX = 4096;
    const engine = await start(t, { maxFrameBytes: MAX });
    const a = await open(t, engine, 'big');
    const o = await open(t, engine, 'obs');
    assert.equal((a.hello.limits as Frame).maxFrame, MAX);
    await join(o, 'mf');
    await join(a, 'mf');
    await o.next((f) => f.t === 'presence' && f.user === 'big' && f.state === 'join');
    const sized = (bytes: number, ref: number): Frame => {
      for (let k = bytes; k > 0; k--) {
        const f = { t: 'pub', room: 'mf', body: 'x'.repeat(k), ref };
        if (encodedSize(f) === bytes) return f;
      }
      throw new Error(`cannot build a frame of ${bytes} bytes`);
    };
    const r1 = a.takeRef();
    a.send(sized(MAX, r1));
    const ack = await a.next((f) => f.ref === r1, 3000, 'ack of the maxFrame-sized pub');
    assert.equal(ack.t, 'ack', `a frame of exactly maxFrame bytes is allowed: ${JSON.stringify(ack)}`);
    const r2 = a.takeRef();
    a.send(sized(MAX + 1, r2));
    const closed = await a.waitClosed();
    assert.equal(closed.code, 1009, `close code ${closed.code} (1006 means the socket was dropped without a close frame)`);
    assert.equal(a.frames.filter((f) => f.ref === r2).length, 0, 'the oversized frame was not served');
    await o.next((f) => f.t === 'presence' && f.user === 'big' && f.state === 'leave');
    const h = await o.request({ t: 'hist', room: 'mf' });
    assert.deepEqual(seqsOf(h.msgs as Frame[]), [1]);
  });

  test('maxFrame counts the whole WebSocket message: fragments add up; text messages too', async (t) => {
    const MAX = 4096;
    const engine = await start(t, { maxFrameBytes: MAX });
    // A valid pub split over two fragments, under the limit: served.
    const a = await open(t, engine, 'frag');
    await join(a, 'fr');
    const bytes = encode({ t: 'pub', room: 'fr', body: 'y'.repeat(1500), ref: 4242 });
    const half = Math.floor(bytes.length / 2);
    a.ws.send(bytes.subarray(0, half), { binary: true, fin: false });
    a.ws.send(bytes.subarray(half), { binary: true, fin: true });
    const ack = await a.next((f) => f.ref === 4242, 3000, 'ack of a fragmented pub');
    assert.equal(ack.t, 'ack', JSON.stringify(ack));
    // Three fragments of 2000 bytes: each under the limit, the message over it.
    const chunk = new Uint8Array(2000).fill(0x61);
    a.ws.send(chunk, { binary: true, fin: false });
    a.ws.send(chunk, { binary: true, fin: false });
    a.ws.send(chunk, { binary: true, fin: true });
    const c1 = await a.waitClosed();
    assert.equal(c1.code, 1009, `fragmented message over maxFrame: close ${c1.code} "${c1.reason}"`);

    const b = await open(t, engine, 'text');
    b.sendRaw('z'.repeat(MAX + 1));
    const c2 = await b.waitClosed();
    assert.equal(c2.code, 1009, `text message over maxFrame: close ${c2.code} "${c2.reason}"`);

  });

  // uWebSockets.js buffers a whole message before handing it over, up to its maxPayloadLength,
  // which the engine sets to maxFrameBytes + 4 KiB so that one client cannot make it hold more
  // (issue 10, item 1). A frame header announcing more makes uWS drop the socket at once, without
  // a close frame (1006): documented in docs/PROTOCOL.md ("Frame size").
  test('a message far over maxFrame (15 MiB) is dropped without a close frame (1006); others are unaffected', async (t) => {
    const engine = await start(t);
    const c = await open(t, engine, 'huge');
    await join(c, 'hg');
    c.sendRaw(new Uint8Array(15 << 20));
    const c3 = await c.waitClosed(8000);
    assert.equal(c3.code, 1006, `a 15 MiB message with limits.maxFrame ${String((c.hello.limits as Frame).maxFrame)}: close ${c3.code} "${c3.reason}"`);
    const d = await open(t, engine, 'after');
    await join(d, 'hg');
  });

  test('an upgrade over maxConnections gets HTTP 503; a freed slot is usable again', async (t) => {
    const engine = await start(t, { maxConnections: 2 });
    const a = await open(t, engine, 'a');
    await open(t, engine, 'b');
    const r = await tryUpgrade(engine.port, '/ws?user=c');
    assert.equal(r.status, 503, JSON.stringify(r));
    await a.close();
    await waitFor(() => engine.stats().connections === 1, 'stats().connections back to 1');
    const c = await open(t, engine, 'c');
    assert.equal(c.hello.user, 'c');
  });
});

describe('server-side publish', () => {
  test('engine.publish reaches members as a msg with from, in the room\'s sequence', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    const ja = await join(a, 'sys');
    await join(b, 'sys');
    await pub(a, 'sys', 'hi');
    const r = await engine.publish('sys', { notice: 'maintenance' }, { from: 'system' });
    assert.equal(r.seq, 2);
    assert.equal(r.epoch, ja.epoch);
    for (const c of [a, b]) {
      const m = await c.next((f) => f.t === 'msg' && f.seq === 2);
      assert.equal(m.room, 'sys');
      assert.equal(m.from, 'system');
      assert.deepEqual(m.body, { notice: 'maintenance' });
      assert.ok(Number.isInteger(m.ts));
    }
    const ack = await pub(b, 'sys', 'after');
    assert.equal(ack.seq, 3);
    const h = await a.request({ t: 'hist', room: 'sys' });
    assert.deepEqual((h.msgs as Frame[]).map((m) => [m.seq, m.from]), [[1, 'alice'], [2, 'system'], [3, 'bob']]);

    const e = await engine.publish('quiet', 'nobody here', { from: 'system' });
    assert.equal(e.seq, 1);
    const c = await open(t, engine, 'carol');
    const jc = await join(c, 'quiet');
    if (jc.epoch === e.epoch) {
      assert.equal(jc.seq, 1);
      const hq = await c.request({ t: 'hist', room: 'quiet' });
      assert.deepEqual((hq.msgs as Frame[]).map((m) => [m.seq, m.from, m.body]), [[1, 'system', 'nobody here']]);
    } else {
      assert.equal(jc.seq, 0, 'a room whose state was dropped restarts under a new epoch at seq 0');
    }
  });
});

describe('shard crash and restart', () => {
  for (const mode of ['throw', 'exit'] as const) {
    test(`crash (${mode}): the crashed shard's rooms get a new epoch and work again; other shards flow without a gap`, async (t) => {
      const engine = await start(t, { shards: 2 });
      const byShard = roomsPerShard(engine, 2, `crash-${mode}`);
      const A = byShard[0]![0]!;
      const B = byShard[1]![0]!;
      const iA = engine.shardOf(A);
      const iB = engine.shardOf(B);
      const a1 = await open(t, engine, 'ua1');
      const a2 = await open(t, engine, 'ua2');
      const b1 = await open(t, engine, 'ub1');
      const b2 = await open(t, engine, 'ub2');
      const jA = await join(a1, A);
      await join(a2, A);
      const jB = await join(b1, B);
      await join(b2, B);
      for (let i = 0; i < 5; i++) await pub(a1, A, i);
      await a2.next((f) => f.t === 'msg' && f.room === A && f.seq === 5);

      const pump = new Pump(b1, B, 'ub1', 8).start();
      t.after(() => pump.stop());
      await b2.next((f) => f.t === 'msg' && f.room === B && f.seq === 50, 5000, 'B flowing before the crash');
      const s0 = engine.stats();
      assert.equal(s0.shards[iA]!.restarts, 0);

      let epochBefore = jA.epoch;
      for (let round = 1; round <= 2; round++) {
        engine._crashShard(iA, mode);
        const n1 = await a1.next((f) => f.t === 'joined' && f.room === A, 10_000, `a new joined for ${A} after crash ${round}`);
        const n2 = await a2.next((f) => f.t === 'joined' && f.room === A, 10_000, `a new joined for ${A} after crash ${round}`);
        assert.notEqual(n1.epoch, epochBefore, 'the restarted room has a new epoch');
        assert.equal(n1.seq, 0, 'the new epoch starts at seq 0');
        assert.equal(n1.unread, 0);
        assert.equal(n2.epoch, n1.epoch, 'both members see the same new epoch');
        assert.equal(n2.seq, 0);
        epochBefore = n1.epoch;
        await waitFor(() => {
          const sh = engine.stats().shards[iA]!;
          return sh.restarts === round && sh.up;
        }, `stats().shards[${iA}] up with restarts ${round}`, 10_000);

        const mark = (b2.framesOf('msg', B).at(-1)?.seq as number | undefined) ?? 0;
        await b2.next((f) => f.t === 'msg' && f.room === B && f.seq === mark + 30, 5000, `B still flowing after crash ${round}`);

        const ack = await pub(a1, A, `after crash ${round}`);
        assert.equal(ack.seq, 1, 'the first message of the new epoch has seq 1');
        const m = await a2.next((f) => f.t === 'msg' && f.room === A && f.seq === 1 && f.body === `after crash ${round}`);
        assert.equal(m.from, 'ua1');
        const w = await a2.request({ t: 'who', room: A });
        assert.deepEqual(sorted(w.users), ['ua1', 'ua2'], 'membership is back after the restart');
        const a2b = await open(t, engine, 'ua2');
        const j2b = await join(a2b, A);
        assert.deepEqual([j2b.epoch, j2b.seq, j2b.unread], [n1.epoch, 1, 1], 'a new epoch starts every cursor at 0: ua2 has the one new message unread');
        await a2b.close();
        // Everything of A after the new joined is the new epoch, from seq 1, without gaps.
        for (const c of [a1, a2]) {
          const st = stream(c, A);
          const k = st.lastIndexOf(c === a1 ? n1 : n2);
          assert.deepEqual(seqsOf(st.slice(k + 1)), [1], `${c.label}: only the new epoch's messages after the new joined`);
        }
      }

      await pump.stop();
      assert.deepEqual(pump.errs.filter((e) => e.code !== 'overloaded'), [], 'the other shard never noticed');
      assert.deepEqual(pump.unanswered, []);
      pump.assertSendOrder();
      const max = pump.maxAckedSeq();
      await b2.next((f) => f.t === 'msg' && f.room === B && f.seq === max, 5000);
      for (const c of [b1, b2]) {
        const st = stream(c, B);
        assert.equal(st.filter((f) => f.t === 'joined').length, 1, `${c.label}: no second joined for ${B}`);
        assert.equal(st[0]!.epoch, jB.epoch);
        assertContiguous(seqsOf(st.slice(1)), 1, max, `${c.label} in ${B} across the crashes`);
      }
      const s1 = engine.stats();
      assert.equal(s1.shards[iB]!.restarts, 0, 'the other shard did not restart');
      assert.equal(s1.shards[iA]!.restarts, 2);
      await waitFor(async () => (await httpGet(engine.port, '/readyz')).status === 200, '/readyz 200 after the restart');
    });
  }
});
