/**
 * Integration: PROTOCOL.md's guarantees (order, resume, unread, presence, drain, frame limit,
 * server-side publish, shard crash), against a real engine on 127.0.0.1:0 with real WebSocket
 * clients speaking @msgpack/msgpack. No engine part is mocked; nothing waits on a fixed sleep for
 * correctness: tests wait for frames (or, for state without frames, poll with a bound).
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import type { Engine, EngineOptions } from '../engine/index.js';
import { startEngine, openClient as open, joinRoom as join, pubTo as pub, roomsPerShard } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { assertContiguous, ranges } from './helpers/seqs.js';
import { TestClient, tryUpgrade, httpGet, encode, encodedSize, waitFor, describeFrames, assertMembers, type Frame } from './helpers/client.js';

guardHandles();


function start(t: TestContext, opts: EngineOptions = {}): Promise<Engine> {
  return startEngine(t, { maxBufferBytes: 64 * 1024 * 1024, ...opts });
}

const sorted = (xs: unknown): string[] => [...(xs as string[])].sort();
const seqsOf = (fs: Frame[]): number[] => fs.map((f) => f.seq as number);
const range = (a: number, b: number): number[] => Array.from({ length: Math.max(0, b - a + 1) }, (_, k) => a + k);

/** The frames of one room that carry delivery order: joined, msg, left. */
function stream(c: TestClient, room: string): Frame[] {
  return c.frames.filter((f) => f.room === room && (f.t === 'joined' || f.t === 'msg' || f.t === 'left'));
}

interface Ack { n: number; seq: number; afterClose: boolean }

/**
 * Keeps `window` pubs in flight on one connection: `limit` in total, or until stopped or the
 * connection closes. `overloaded` is retried after retryAfterMs (as a new send); every reply is
 * recorded. Each body is { p: label, n } with n the send order.
 */
class Pump {
  readonly acks: Ack[] = [];
  readonly errs: Frame[] = [];
  /** Requests that got no reply because the connection closed. */
  readonly unanswered: { n: number; afterClose: boolean }[] = [];
  sent = 0;
  /** Called synchronously on every ack (after it is recorded). */
  onAck: ((a: Ack) => void) | null = null;
  private inflight = 0;
  private stopped = false;
  private waiters: (() => void)[] = [];
  private timers = new Set<NodeJS.Timeout>();

  constructor(
    readonly c: TestClient,
    readonly room: string,
    readonly label: string,
    readonly window: number,
    readonly limit = Infinity,
    readonly flags: { closing: boolean } = { closing: false },
  ) {}

  start(): this {
    for (let i = 0; i < this.window; i++) this.one();
    return this;
  }

  private full(): boolean {
    return this.acks.length + this.inflight >= this.limit;
  }

  private one(): void {
    if (this.stopped || this.full() || !this.c.isOpen) {
      this.check();
      return;
    }
    const n = this.sent++;
    const afterClose = this.flags.closing;
    this.inflight++;
    this.c.request({ t: 'pub', room: this.room, body: { p: this.label, n } }, 15_000).then(
      (r) => {
        this.inflight--;
        if (r.t === 'ack') {
          const a = { n, seq: r.seq as number, afterClose };
          this.acks.push(a);
          this.onAck?.(a);
          this.one();
        } else {
          this.errs.push({ ...r, n, afterClose });
          if (r.code === 'overloaded') {
            // resend later: a new request, a new place in the send order
            const tm = setTimeout(() => {
              this.timers.delete(tm);
              this.one();
            }, Math.max(1, Number(r.retryAfterMs) || 5));
            this.timers.add(tm);
          } else this.one();
        }
        this.check();
      },
      () => {
        this.inflight--;
        this.unanswered.push({ n, afterClose });
        this.check();
      },
    );
  }

  private check(): void {
    if (this.inflight === 0 && this.timers.size === 0 && (this.stopped || this.acks.length >= this.limit || !this.c.isOpen)) {
      for (const w of this.waiters.splice(0)) w();
    }
  }

  /** Resolves when nothing is in flight any more (after stop(), the limit, or the close). */
  done(): Promise<void> {
    return new Promise((r) => {
      this.waiters.push(r);
      this.check();
    });
  }

  stop(): Promise<void> {
    this.stopped = true;
    for (const tm of this.timers) clearTimeout(tm);
    this.timers.clear();
    return this.done();
  }

  /**
   * TCP keeps a connection's frames in order: a request followed by one that was answered was read
   * by the engine, so it must have been answered too (guarantee 2: nothing is dropped silently).
   * Only a tail of requests still in flight when the connection closed may go unanswered.
   */
  assertUnansweredIsATail(): void {
    const answered = [...this.acks.map((a) => a.n), ...this.errs.map((e) => e.n as number)];
    const maxAnswered = Math.max(-1, ...answered);
    const dropped = this.unanswered.filter((u) => u.n < maxAnswered);
    assert.deepEqual(dropped.map((u) => u.n), [], `${this.label}: requests read by the engine but never answered (request #${maxAnswered} was answered after them)`);
  }

  maxAckedSeq(): number {
    return this.acks.reduce((m, a) => Math.max(m, a.seq), 0);
  }

  /** One connection's pubs get seqs in the order the connection sent them. */
  assertSendOrder(): void {
    const bySend = [...this.acks].sort((x, y) => x.n - y.n).map((a) => a.seq);
    for (let i = 1; i < bySend.length; i++) {
      assert.ok(bySend[i]! > bySend[i - 1]!, `${this.label}: pub #${i} got seq ${bySend[i]} after seq ${bySend[i - 1]} (send order broken)`);
    }
  }
}

function sumAcks(pumps: Pump[]): number {
  return pumps.reduce((s, p) => s + p.acks.length, 0);
}

describe('guarantee 1: order, no gaps, only members', () => {
  test('4 publishers x 500 pubs into one room: every member sees 1..N in order exactly once; joined first, left last', async (t) => {
    const engine = await start(t);
    const room = 'order';
    const PER = 500;
    const N = 4 * PER;
    const pubs = await Promise.all([0, 1, 2, 3].map((i) => open(t, engine, `p${i}`)));
    const obs = await open(t, engine, 'observer');
    const leaver = await open(t, engine, 'leaver');
    const late = await open(t, engine, 'late');
    for (const c of [...pubs, obs, leaver]) {
      const j = await join(c, room);
      assert.equal(j.seq, 0);
    }
    const pumps = pubs.map((c, i) => new Pump(c, room, `p${i}`, 32, PER));
    // Mid-stream, from inside the ack callbacks: one member leaves, one joins late.
    let maxAcked = 0;
    let ackedBeforeLeave = -1;
    let ackedBeforeJoin = -1;
    let leaveReply: Promise<Frame> | undefined;
    let joinReply: Promise<Frame> | undefined;
    for (const p of pumps) {
      p.onAck = (a) => {
        maxAcked = Math.max(maxAcked, a.seq);
        const total = sumAcks(pumps);
        if (!leaveReply && total >= N / 5) {
          ackedBeforeLeave = maxAcked;
          leaveReply = leaver.request({ t: 'leave', room }, 10_000);
        }
        if (!joinReply && total >= (2 * N) / 5) {
          ackedBeforeJoin = maxAcked;
          joinReply = late.request({ t: 'join', room }, 10_000);
        }
      };
    }
    pumps.forEach((p) => p.start());
    await Promise.all(pumps.map((p) => p.done()));
    assert.ok(leaveReply && joinReply);
    const left = await leaveReply;
    assert.equal(left.t, 'left', JSON.stringify(left));
    const lateJoined = await joinReply;
    assert.equal(lateJoined.t, 'joined', JSON.stringify(lateJoined));
    const s = lateJoined.seq as number;
    assert.ok(s >= ackedBeforeJoin, `late joined.seq ${s} covers everything acked before the join was sent (${ackedBeforeJoin})`);
    for (const p of pumps) {
      assert.deepEqual(p.errs, [], `${p.label}: no errors`);
      assert.equal(p.acks.length, PER, `${p.label}: every pub acked`);
      p.assertSendOrder();
    }
    const all = pumps.flatMap((p) => p.acks.map((a) => a.seq)).sort((x, y) => x - y);
    assertContiguous(all, 1, N, 'acked seqs across publishers');
    const bySeq = new Map<number, { from: string; n: number }>();
    pumps.forEach((p, i) => p.acks.forEach((a) => bySeq.set(a.seq, { from: `p${i}`, n: a.n })));

    for (const c of [...pubs, obs, late]) {
      await c.next((f) => f.t === 'msg' && f.room === room && f.seq === N, 15_000, `msg seq ${N}`);
    }
    for (const c of [...pubs, obs]) {
      const st = stream(c, room);
      assert.equal(st[0]!.t, 'joined', `${c.label}: joined comes first`);
      const msgs = st.slice(1);
      assert.ok(msgs.every((f) => f.t === 'msg'), `${c.label}: only msgs after joined`);
      assertContiguous(seqsOf(msgs), 1, N, c.label);
      for (const m of msgs) {
        const want = bySeq.get(m.seq as number)!;
        assert.equal(m.from, want.from, `${c.label}: from of seq ${String(m.seq)}`);
        assert.deepEqual(m.body, { p: want.from, n: want.n }, `${c.label}: body of seq ${String(m.seq)}`);
      }
    }
    const ls = stream(late, room);
    assert.equal(ls[0]!.t, 'joined', 'late joiner: joined before the first msg of the room');
    assertContiguous(seqsOf(ls.slice(1)), s + 1, N, 'late joiner');

    // The leaver: joined, msgs 1..k, left, and nothing more. Re-joining is the barrier.
    const again = await join(leaver, room);
    assert.equal(again.seq, N);
    const lst = stream(leaver, room);
    const li = lst.findIndex((f) => f.t === 'left');
    assert.equal(lst[0]!.t, 'joined');
    assert.ok(li > 0, 'left is in the stream');
    const beforeLeft = lst.slice(1, li);
    assertContiguous(seqsOf(beforeLeft), 1, beforeLeft.length, 'leaver before left');
    assert.ok(beforeLeft.length >= ackedBeforeLeave, `leaver got every msg acked before it sent leave (${beforeLeft.length} < ${ackedBeforeLeave})`);
    assert.equal(lst[li + 1], again, `nothing between left and the re-join: ${describeFrames(lst.slice(li, li + 4))}`);
  });

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
  test('join with since -> missed is exactly the messages after since; too old or foreign epoch -> truncated', async (t) => {
    const engine = await start(t, { historyLimit: 10 });
    const p = await open(t, engine, 'pat');
    const jp = await join(p, 'm');
    const epoch = jp.epoch as string;
    for (let i = 1; i <= 8; i++) await pub(p, 'm', { i });
    await p.next((f) => f.t === 'msg' && f.seq === 8);
    const live = (): Map<number, Frame> => new Map(p.framesOf('msg', 'm').map((f) => [f.seq as number, f]));

    let k = 0;
    const resume = async (extra: Frame): Promise<{ c: TestClient; j: Frame }> => {
      const c = await open(t, engine, `reader${k++}`);
      return { c, j: await join(c, 'm', extra) };
    };
    const expectMissed = (j: Frame, want: number[], label: string): void => {
      assert.ok(j.truncated === undefined || j.truncated === false, `${label}: not truncated: ${JSON.stringify(j)}`);
      assert.ok(Array.isArray(j.missed), `${label}: missed is an array: ${JSON.stringify(j)}`);
      const missed = j.missed as Frame[];
      assert.deepEqual(seqsOf(missed), want, `${label}: missed seqs`);
      const l = live();
      for (const m of missed) assert.deepEqual(m, l.get(m.seq as number), `${label}: missed entry equals the live msg frame (t, room, seq, from, body, ts)`);
    };
    const expectTruncated = (j: Frame, label: string): void => {
      assert.equal(j.truncated, true, `${label}: truncated: ${JSON.stringify(j)}`);
      assert.equal(j.missed, undefined, `${label}: no missed when truncated`);
    };

    expectMissed((await resume({ since: 3 })).j, range(4, 8), 'since 3');
    expectMissed((await resume({ since: 8 })).j, [], 'since latest');
    expectMissed((await resume({ since: 0 })).j, range(1, 8), 'since 0 with all kept');
    expectMissed((await resume({ since: 3, epoch })).j, range(4, 8), 'since 3 in the current epoch named');
    expectTruncated((await resume({ since: 3, epoch: `${epoch}-not` })).j, 'foreign epoch');
    expectTruncated((await resume({ since: 0, epoch: 'some-other-epoch' })).j, 'foreign epoch, since 0');

    for (let i = 9; i <= 15; i++) await pub(p, 'm', { i }); // kept: 6..15
    await p.next((f) => f.t === 'msg' && f.seq === 15);
    const { c: c6, j: j6 } = await resume({ since: 5 });
    expectMissed(j6, range(6, 15), 'since 5: every message after it still kept');
    expectTruncated((await resume({ since: 4 })).j, 'since 4: seq 5 is gone');
    expectTruncated((await resume({ since: 0 })).j, 'since 0: gone');
    assert.equal(j6.seq, 15);
    assert.equal(j6.epoch, epoch);

    await pub(p, 'm', { i: 16 });
    await c6.next((f) => f.t === 'msg' && f.seq === 16);
    await c6.request({ t: 'who', room: 'm' });
    assert.deepEqual(seqsOf(c6.framesOf('msg', 'm')), [16], 'missed messages are not delivered live again');
  });

  test('a missed set larger than the engine returns in one reply is truncated, never partial; byte-capped hist pages stay adjacent to their anchor', async (t) => {
    const engine = await start(t, { maxHistBytes: 16_384 });
    const p = await open(t, engine, 'pat');
    await join(p, 'mb');
    const body = 'b'.repeat(2000);
    for (let i = 0; i < 20; i++) await pub(p, 'mb', body); // ~40 KB of history, all kept
    const r = await open(t, engine, 'reader');
    const j = await join(r, 'mb', { since: 0 });
    if (j.truncated === true) assert.equal(j.missed, undefined);
    else assertContiguous(seqsOf(j.missed as Frame[]), 1, 20, 'missed must hold every message after since');
    const j2 = await join(await open(t, engine, 'reader2'), 'mb', { since: 17 });
    assert.notEqual(j2.truncated, true, 'three messages fit');
    assertContiguous(seqsOf(j2.missed as Frame[]), 18, 20, 'small missed');
    const page = async (q: Frame): Promise<number[]> => {
      const h = await r.request({ t: 'hist', room: 'mb', ...q });
      assert.equal(h.t, 'hist', JSON.stringify(h).slice(0, 200));
      const seqs = seqsOf(h.msgs as Frame[]);
      assert.ok(seqs.length >= 1, `a page holds at least one message: ${JSON.stringify(q)}`);
      assertContiguous(seqs, seqs[0]!, seqs[0]! + seqs.length - 1, `page ${JSON.stringify(q)}`);
      return seqs;
    };
    assert.equal((await page({ limit: 20 })).at(-1), 20, 'latest page ends at the latest message');
    assert.equal((await page({ before: 15, limit: 20 })).at(-1), 14, 'before page ends just before its anchor');
    assert.equal((await page({ after: 3, limit: 20 }))[0], 4, 'after page starts just after its anchor');
  });

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

describe('guarantee 3 / cursor: unread', () => {
  test('the read cursor is per user: shared by its connections, moved by read and by publishing, kept while away', async (t) => {
    const engine = await start(t);
    const p = await open(t, engine, 'pat');
    await join(p, 'u');
    for (let i = 0; i < 3; i++) await pub(p, 'u', i);
    const u1 = await open(t, engine, 'uma');
    const j1 = await join(u1, 'u');
    assert.deepEqual([j1.seq, j1.unread], [3, 0], 'a user new to the room starts with its cursor at the latest seq');
    for (let i = 3; i < 8; i++) await pub(p, 'u', i);
    await u1.next((f) => f.t === 'msg' && f.seq === 8);
    const r1 = await u1.request({ t: 'read', room: 'u', seq: 6 });
    assert.deepEqual([r1.t, r1.seq], ['ack', 6]);
    const u2 = await open(t, engine, 'uma');
    const j2 = await join(u2, 'u');
    assert.deepEqual([j2.seq, j2.unread], [8, 2], 'a second connection of the user sees the cursor moved by the first');
    const r2 = await u2.request({ t: 'read', room: 'u', seq: 4 });
    assert.equal(r2.seq, 6, 'the cursor is the user\'s: a lower read from another connection does not move it back');
    const r3 = await u1.request({ t: 'read', room: 'u', seq: 100 });
    assert.equal(r3.seq, 8);
    const j3 = await join(await open(t, engine, 'uma'), 'u');
    assert.equal(j3.unread, 0);

    await pub(u2, 'u', 'uma speaks'); // seq 9: uma's cursor moves to 9
    await pub(p, 'u', 'pat answers'); // seq 10
    const u4 = await open(t, engine, 'uma');
    const j4 = await join(u4, 'u');
    assert.deepEqual([j4.seq, j4.unread], [10, 1], 'publishing moved the publisher\'s cursor to its message');
    const jp = await join(await open(t, engine, 'pat'), 'u');
    assert.equal(jp.unread, 0, 'pat published everything: nothing unread');

    // Away: every connection of uma closes; the cursor stays.
    await Promise.all([u1.close(), u2.close(), u4.close()]);
    for (const c of [u1, u2, u4]) assert.ok(!c.isOpen);
    await pub(p, 'u', 11);
    await pub(p, 'u', 12);
    const u5 = await open(t, engine, 'uma');
    const j5 = await join(u5, 'u');
    assert.deepEqual([j5.seq, j5.unread], [12, 3], 'the cursor lived on while the user was away');
    const jn = await join(await open(t, engine, 'newbie'), 'u');
    assert.equal(jn.unread, 0);
  });
});

describe('guarantee 4 / presence', () => {
  test('multi-tab users: presence only on the first join and the last leave (leave, close, terminate)', async (t) => {
    const engine = await start(t);
    const o = await open(t, engine, 'obs');
    await join(o, 'pr');
    const pres = (user: string): Frame[] => o.framesOf('presence', 'pr').filter((f) => f.user === user);
    const barrier = (): Promise<Frame> => o.request({ t: 'who', room: 'pr' });

    const u1 = await open(t, engine, 'u');
    const ju1 = await join(u1, 'pr');
    assertMembers(ju1, ['obs', 'u']);
    const p1 = await o.next((f) => f.t === 'presence' && f.user === 'u');
    assert.deepEqual([p1.room, p1.state], ['pr', 'join']);

    const u2 = await open(t, engine, 'u');
    const ju2 = await join(u2, 'pr');
    assertMembers(ju2, ['obs', 'u'], 'members are distinct users');
    await join(u2, 'pr'); // re-join
    let w = await barrier();
    assert.deepEqual(sorted(w.users), ['obs', 'u']);
    assert.equal(pres('u').length, 1, `second tab / re-join emit no presence: ${JSON.stringify(pres('u'))}`);

    await u1.request({ t: 'leave', room: 'pr' });
    w = await barrier();
    assert.deepEqual(sorted(w.users), ['obs', 'u'], 'u is still present through its second tab');
    assert.equal(pres('u').length, 1, 'the first tab leaving emits no presence');

    await u2.close(); // closing the last tab counts as leave
    const pl = await o.next((f) => f.t === 'presence' && f.user === 'u' && f.state === 'leave');
    assert.equal(pl.room, 'pr');
    w = await barrier();
    assert.deepEqual(w.users, ['obs']);
    assert.deepEqual(u1.framesOf('presence').filter((f) => f.user === 'u'), [], 'a connection gets no presence about its own user joining');

    const v = await open(t, engine, 'v');
    await join(v, 'pr');
    await o.next((f) => f.t === 'presence' && f.user === 'v' && f.state === 'join');
    v.terminate(); // a dropped socket counts as leave too
    await o.next((f) => f.t === 'presence' && f.user === 'v' && f.state === 'leave');
    w = await barrier();
    assert.deepEqual(w.users, ['obs']);
    assert.equal(pres('v').length, 2);
    assert.equal(pres('u').length, 2);
  });
});

describe('guarantee 4 / presence races', () => {
  test('connections that close right after sending join leave no ghost members; presence joins and leaves balance', async (t) => {
    const engine = await start(t);
    const o = await open(t, engine, 'obs');
    await join(o, 'ghost');
    const users: string[] = [];
    for (let i = 0; i < 16; i++) {
      const c = await open(t, engine, `g${i}`);
      users.push(`g${i}`);
      c.send({ t: 'join', room: 'ghost', ref: 1 });
      if (i % 2 === 0) c.terminate();
      else void c.close();
    }
    let last: Frame = {};
    await waitFor(async () => {
      last = await o.request({ t: 'who', room: 'ghost' });
      return JSON.stringify(last.users) === JSON.stringify(['obs']);
    }, `who to list only obs (last: ${JSON.stringify(last.users)})`, 5000);
    await waitFor(() => engine.stats().connections === 1, 'only obs connected');
    const w = await o.request({ t: 'who', room: 'ghost' });
    assert.deepEqual(w.users, ['obs'], 'no ghost member');
    for (const u of users) {
      const ev = o.framesOf('presence', 'ghost').filter((f) => f.user === u).map((f) => f.state);
      assert.ok(ev.length === 0 || JSON.stringify(ev) === JSON.stringify(['join', 'leave']), `${u}: presence ${JSON.stringify(ev)} (a join without its leave is a ghost)`);
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
