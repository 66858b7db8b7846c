/**
 * PROTOCOL.md's guarantees that hold for any deployment, as one suite run against a target
 * factory (as ./store-suite.ts does for stores): a single in-process engine
 * (test/protocol.guarantees.test.ts) and a 3-node cluster of engine processes on one Redis
 * (test/cluster.guarantees.test.ts), where the clients of one room are spread over the nodes.
 *
 * What stays single-node only (in protocol.guarantees.test.ts), because it is node-local by
 * nature: shards (rooms spread over shards, presence across shards, a shard crash), the rings'
 * back-pressure (`overloaded`), a connection's own limits (maxFrame, maxConnections, the 4008
 * slow consumer, whose buffer is the node's), drain (engine.close(); the cluster's version is
 * cluster.failures.test.ts test 9, SIGTERM on one node) and engine.publish (an in-process API).
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { assertContiguous } from './seqs.js';
import { Pump, sumAcks } from './pump.js';
import { waitFor, describeFrames, assertMembers, type TestClient, type Frame } from './client.js';

export interface TargetOptions {
  historyLimit?: number;
  maxHistBytes?: number;
}

export interface Target {
  /** Nodes the clients can be spread over (1 for a single engine). */
  readonly nodes: number;
  /** A client of user `user` on node `node % nodes`, closed after the test (violations checked). */
  open(user: string, node: number): Promise<TestClient>;
  /**
   * True when a join is answered with a seq covering every ack given before it was sent. A
   * single engine does; in a cluster a join on node X answers from X's delivered position
   * (CLUSTER.md §4), which may trail an ack another node gave (its clients then get those
   * messages live: guarantee 1 still holds).
   */
  readonly joinSeesEveryAck: boolean;
  /** Open connections over all nodes, when the target can tell. */
  connections?: () => number;
}

/** Starts a target for one test; null when it cannot run here (the test was skipped). */
export type StartTarget = (t: TestContext, opts?: TargetOptions) => Promise<Target | null>;

const sorted = (xs: unknown): string[] => [...(xs as string[])].sort();
const seqsOf = (fs: Frame[]): number[] => fs.map((f) => f.seq as number);
const range = (a: number, b: number): number[] => Array.from({ length: Math.max(0, b - a + 1) }, (_, k) => a + k);

/** The frames of one room that carry delivery order: joined, msg, left. */
function stream(c: TestClient, room: string): Frame[] {
  return c.frames.filter((f) => f.room === room && (f.t === 'joined' || f.t === 'msg' || f.t === 'left'));
}

async function join(c: TestClient, room: string, extra: Frame = {}): Promise<Frame> {
  const r = await c.request({ t: 'join', room, ...extra });
  assert.equal(r.t, 'joined', `join ${room} by ${c.label}: ${JSON.stringify(r)}`);
  return r;
}

async function pub(c: TestClient, room: string, body: unknown): Promise<Frame> {
  const r = await c.request({ t: 'pub', room, body });
  assert.equal(r.t, 'ack', `pub to ${room} by ${c.label}: ${JSON.stringify(r)}`);
  return r;
}

/** The highest seq `c` knows in `room` (its joined or a msg). */
function position(c: TestClient, room: string): number {
  return stream(c, room).reduce((m, f) => (f.t === 'left' ? m : Math.max(m, f.seq as number)), 0);
}

/**
 * Waits until every open client of `clients` has reached `seq` in `room`: then every node those
 * clients are on has delivered it, and a join there answers with at least `seq`.
 */
async function reached(clients: TestClient[], room: string, seq: number): Promise<void> {
  for (const c of clients) {
    if (c.isOpen) await waitFor(() => position(c, room) >= seq, `${c.label} at seq ${seq} in ${room}`, 10_000);
  }
}

export function guaranteesSuite(name: string, start: StartTarget): void {
  describe(`${name}: guarantee 1: order, no gaps, only members`, () => {
    test('4 publishers x 500 pubs into one room: every member sees 1..N in order exactly once; joined first, left last', async (t) => {
      const target = await start(t);
      if (target === null) return;
      const room = 'order';
      const PER = 500;
      const N = 4 * PER;
      // Spread over the nodes: publishers on 0, 1, 2, 0; observer on 1, leaver on 2, late joiner on 0.
      const pubs = await Promise.all([0, 1, 2, 3].map((i) => target.open(`p${i}`, i)));
      const obs = await target.open('observer', 1);
      const leaver = await target.open('leaver', 2);
      const late = await target.open('late', 3);
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
      if (target.joinSeesEveryAck) assert.ok(s >= ackedBeforeJoin, `late joined.seq ${s} covers everything acked before the join was sent (${ackedBeforeJoin})`);
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
      // (In a cluster an ack from another node may run ahead of the leaver's node: see joinSeesEveryAck.)
      if (target.joinSeesEveryAck) assert.ok(beforeLeft.length >= ackedBeforeLeave, `leaver got every msg acked before it sent leave (${beforeLeft.length} < ${ackedBeforeLeave})`);
      assert.equal(lst[li + 1], again, `nothing between left and the re-join: ${describeFrames(lst.slice(li, li + 4))}`);
    });

  });

  describe(`${name}: guarantee 2: resume with since`, () => {
    test('join with since -> missed is exactly the messages after since; too old or foreign epoch -> truncated', async (t) => {
      const target = await start(t, { historyLimit: 10 });
      if (target === null) return;
      const p = await target.open('pat', 0);
      const jp = await join(p, 'm');
      const epoch = jp.epoch as string;
      for (let i = 1; i <= 8; i++) await pub(p, 'm', { i });
      await p.next((f) => f.t === 'msg' && f.seq === 8);
      const live = (): Map<number, Frame> => new Map(p.framesOf('msg', 'm').map((f) => [f.seq as number, f]));

      let k = 0;
      const readers: TestClient[] = [];
      const resume = async (extra: Frame): Promise<{ c: TestClient; j: Frame }> => {
        const c = await target.open(`reader${k}`, 1 + k++);
        readers.push(c);
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
      await reached(readers, 'm', 15); // the readers' nodes have delivered 15 too
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
      const target = await start(t, { maxHistBytes: 16_384 });
      if (target === null) return;
      const p = await target.open('pat', 0);
      await join(p, 'mb');
      const body = 'b'.repeat(2000);
      for (let i = 0; i < 20; i++) await pub(p, 'mb', body); // ~40 KB of history, all kept
      const r = await target.open('reader', 1);
      const j = await join(r, 'mb', { since: 0 });
      if (j.truncated === true) assert.equal(j.missed, undefined);
      else assertContiguous(seqsOf(j.missed as Frame[]), 1, 20, 'missed must hold every message after since');
      const j2 = await join(await target.open('reader2', 1), 'mb', { since: 17 });
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

  });

  describe(`${name}: guarantee 3 / cursor: unread`, () => {
    test('the read cursor is per user: shared by its connections, moved by read and by publishing, kept while away', async (t) => {
      const target = await start(t);
      if (target === null) return;
      // uma's tabs on every node in turn; a join whose seq is checked waits for the members'
      // nodes to have delivered the latest seq first (see reached()).
      let node = 0;
      const all: TestClient[] = [];
      const open = async (user: string): Promise<TestClient> => {
        const c = await target.open(user, node++);
        all.push(c);
        return c;
      };
      const p = await open('pat');
      await join(p, 'u');
      for (let i = 0; i < 3; i++) await pub(p, 'u', i);
      const u1 = await open('uma');
      const j1 = await join(u1, 'u');
      assert.deepEqual([j1.seq, j1.unread], [3, 0], 'a user new to the room starts with its cursor at the latest seq');
      for (let i = 3; i < 8; i++) await pub(p, 'u', i);
      await u1.next((f) => f.t === 'msg' && f.seq === 8);
      await reached(all, 'u', 8);
      const r1 = await u1.request({ t: 'read', room: 'u', seq: 6 });
      assert.deepEqual([r1.t, r1.seq], ['ack', 6]);
      const u2 = await open('uma');
      const j2 = await join(u2, 'u');
      assert.deepEqual([j2.seq, j2.unread], [8, 2], 'a second connection of the user sees the cursor moved by the first');
      const r2 = await u2.request({ t: 'read', room: 'u', seq: 4 });
      assert.equal(r2.seq, 6, 'the cursor is the user\'s: a lower read from another connection does not move it back');
      const r3 = await u1.request({ t: 'read', room: 'u', seq: 100 });
      assert.equal(r3.seq, 8);
      const j3 = await join(await open('uma'), 'u');
      assert.equal(j3.unread, 0);

      await pub(u2, 'u', 'uma speaks'); // seq 9: uma's cursor moves to 9
      await pub(p, 'u', 'pat answers'); // seq 10
      await reached(all, 'u', 10);
      const u4 = await open('uma');
      const j4 = await join(u4, 'u');
      assert.deepEqual([j4.seq, j4.unread], [10, 1], 'publishing moved the publisher\'s cursor to its message');
      const jp = await join(await open('pat'), 'u');
      assert.equal(jp.unread, 0, 'pat published everything: nothing unread');

      // Away: every connection of uma closes; the cursor stays.
      await Promise.all([u1.close(), u2.close(), u4.close()]);
      for (const c of [u1, u2, u4]) assert.ok(!c.isOpen);
      await pub(p, 'u', 11);
      await pub(p, 'u', 12);
      await reached(all, 'u', 12);
      const u5 = await open('uma');
      const j5 = await join(u5, 'u');
      assert.deepEqual([j5.seq, j5.unread], [12, 3], 'the cursor lived on while the user was away');
      const jn = await join(await open('newbie'), 'u');
      assert.equal(jn.unread, 0);
    });
  });

  describe(`${name}: guarantee 4 / presence`, () => {
    test('multi-tab users: presence only on the first join and the last leave (leave, close, terminate)', async (t) => {
      const target = await start(t);
      if (target === null) return;
      const o = await target.open('obs', 0);
      await join(o, 'pr');
      const pres = (user: string): Frame[] => o.framesOf('presence', 'pr').filter((f) => f.user === user);
      const barrier = (): Promise<Frame> => o.request({ t: 'who', room: 'pr' });

      const u1 = await target.open('u', 1);
      const ju1 = await join(u1, 'pr');
      assertMembers(ju1, ['obs', 'u']);
      const p1 = await o.next((f) => f.t === 'presence' && f.user === 'u');
      assert.deepEqual([p1.room, p1.state], ['pr', 'join']);

      const u2 = await target.open('u', 2);
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

      const v = await target.open('v', 1);
      await join(v, 'pr');
      await o.next((f) => f.t === 'presence' && f.user === 'v' && f.state === 'join');
      v.terminate(); // a dropped socket counts as leave too
      await o.next((f) => f.t === 'presence' && f.user === 'v' && f.state === 'leave');
      w = await barrier();
      assert.deepEqual(w.users, ['obs']);
      assert.equal(pres('v').length, 2);
      assert.equal(pres('u').length, 2);
    });

    test('connections that close right after sending join leave no ghost members; presence joins and leaves balance', async (t) => {
      const target = await start(t);
      if (target === null) return;
      const o = await target.open('obs', 0);
      await join(o, 'ghost');
      const users: string[] = [];
      for (let i = 0; i < 16; i++) {
        const c = await target.open(`g${i}`, i);
        users.push(`g${i}`);
        c.send({ t: 'join', room: 'ghost', ref: 1 });
        if (i % 2 === 0) c.terminate();
        else void c.close();
      }
      let last: Frame = {};
      await waitFor(async () => {
        last = await o.request({ t: 'who', room: 'ghost' });
        return JSON.stringify(last.users) === JSON.stringify(['obs']);
      }, 'who to list only obs', 5000).catch((err: Error) => { throw new Error(`${err.message} (last: ${JSON.stringify(last.users)})`); });
      const connections = target.connections;
      if (connections) await waitFor(() => connections() === 1, 'only obs connected');
      const w = await o.request({ t: 'who', room: 'ghost' });
      assert.deepEqual(w.users, ['obs'], 'no ghost member');
      for (const u of users) {
        const ev = o.framesOf('presence', 'ghost').filter((f) => f.user === u).map((f) => f.state);
        assert.ok(ev.length === 0 || JSON.stringify(ev) === JSON.stringify(['join', 'leave']), `${u}: presence ${JSON.stringify(ev)} (a join without its leave is a ghost)`);
      }
    });
  });
}
