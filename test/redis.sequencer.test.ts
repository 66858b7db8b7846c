/**
 * Cluster mode, the sequencer and history reads, against a real redis-server: seqs from many
 * concurrent publishers on several connections are unique and contiguous; a repeated cid returns
 * the original seq and adds nothing; the seq lands in the stored frame; `since` resumes exactly
 * or reports truncated, never a partial set.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { connectRedis, startRedis } from './helpers/redis-server.js';
import { assertContiguous } from './helpers/seqs.js';
import { RedisSequencer, DEFAULT_SEQUENCER_LIMITS, type PublishInput } from '../workers/store/redis/sequencer.js';
import { RedisHistory } from '../workers/store/redis/history.js';
import { streamKey } from '../workers/store/redis/keys.js';
import { findSeqSlot, readSeq } from '../workers/store/redis/wire.js';
import { MsgSizer, MsgWriter } from '../engine/protocol/msgpack.js';
import { writeMsg } from '../engine/protocol/frames.js';
import { decode, encode } from '@msgpack/msgpack';

guardHandles();

/** A fake-but-valid frame: a marker, the 0xcf seq slot, then the text (not decoded by the store). */
function frameOf(text: string): { frame: Uint8Array; seqOffset: number } {
  const body = Buffer.from(text);
  const f = Buffer.alloc(13 + body.length);
  f.write('\xa3seq', 0, 'latin1'); // 4 bytes: fixstr "seq"
  f[4] = 0xcf; // uint64 follows at 5
  body.copy(f, 13);
  return { frame: f, seqOffset: 5 };
}

function msg(user: string, text: string, cid: string | null = null): PublishInput {
  return { user, cid, ts: Date.now(), ...frameOf(text) };
}

test('150 concurrent publishers on 5 connections: seqs unique and contiguous, frames carry them', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conns = await Promise.all(Array.from({ length: 5 }, () => connectRedis(t, redis.url)));
  const seqrs = conns.map((c) => new RedisSequencer(c));
  const room = 'seq-concurrent';
  const perPublisher = 4;
  const results = await Promise.all(Array.from({ length: 150 }, async (_, p) => {
    const mine: number[] = [];
    for (let k = 0; k < perPublisher; k++) {
      // Half the calls carry two messages: batches and single messages interleave.
      const batch = k % 2 === 0 ? [msg(`u${p}`, `p${p}-${k}`)] : [msg(`u${p}`, `p${p}-${k}a`), msg(`u${p}`, `p${p}-${k}b`)];
      const r = await seqrs[p % seqrs.length]!.publish(room, batch);
      assert.equal(r.outcomes.length, batch.length);
      for (const o of r.outcomes) { assert.equal(o.duplicate, false); mine.push(o.seq); }
    }
    // One publisher's seqs increase in the order it sent them.
    for (let i = 1; i < mine.length; i++) assert.ok(mine[i]! > mine[i - 1]!, `publisher ${p}: ${mine.join(',')}`);
    return mine;
  }));
  const all = results.flat().sort((a, b) => a - b);
  const total = 150 * (perPublisher + perPublisher / 2);
  assertContiguous(all, 1, total, 'seqs of all publishers');
  const history = new RedisHistory(conns[0]!);
  const kept = await history.range(room, 1, total, total, 1 << 30);
  assertContiguous(kept.map((m) => m.seq), 1, total, 'stream entries');
  for (const m of kept) assert.equal(readSeq(m.frame, 5), m.seq, `frame of seq ${m.seq} carries its seq`);
});

test('a repeated cid returns the original seq and adds no entry, also inside one batch', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const s = new RedisSequencer(conn);
  const room = 'seq-cid';
  const first = await s.publish(room, [msg('ann', 'hello', 'c1')]);
  assert.deepEqual(first.outcomes, [{ seq: 1, duplicate: false }]);
  assert.equal(first.newEpoch, true);
  const again = await s.publish(room, [msg('ann', 'hello again', 'c1'), msg('bob', 'same cid, other user', 'c1'), msg('ann', 'new', 'c2'), msg('ann', 'new dup', 'c2')]);
  assert.equal(again.epoch, first.epoch);
  assert.equal(again.newEpoch, false);
  assert.deepEqual(again.outcomes, [{ seq: 1, duplicate: true }, { seq: 2, duplicate: false }, { seq: 3, duplicate: false }, { seq: 3, duplicate: true }]);
  assert.equal(await conn.call(['XLEN', streamKey(room)], 'test'), 3);
  const h = await new RedisHistory(conn).range(room, 1, 10, 10, 1 << 20);
  assert.deepEqual(h.map((m) => [m.seq, m.from, m.cid, m.frame.subarray(13).toString()]), [
    [1, 'ann', 'c1', 'hello'], [2, 'bob', 'c1', 'same cid, other user'], [3, 'ann', 'c2', 'new'],
  ]);
});

test('the cid window in messages: a cid older than cidWindowMessages is a new message', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const s = new RedisSequencer(conn, { ...DEFAULT_SEQUENCER_LIMITS, cidWindowMessages: 3 });
  const room = 'seq-cid-window';
  await s.publish(room, [msg('ann', 'a', 'x')]);
  assert.deepEqual((await s.publish(room, [msg('ann', 'b'), msg('ann', 'c'), msg('ann', 'a', 'x')])).outcomes.map((o) => o.duplicate), [false, false, true]);
  await s.publish(room, [msg('ann', 'd')]);
  assert.deepEqual((await s.publish(room, [msg('ann', 'a', 'x')])).outcomes, [{ seq: 5, duplicate: false }]);
});

test('since: exactly the missed messages, or truncated once trimmed, never partial', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  // MAXLEN ~ trims whole stream nodes (stream-node-max-entries, 100 by default): keep that small
  // so trimming is visible at a test's scale.
  await conn.call(['CONFIG', 'SET', 'stream-node-max-entries', '10'], 'test');
  const s = new RedisSequencer(conn, { ...DEFAULT_SEQUENCER_LIMITS, historyLimit: 20 });
  const h = new RedisHistory(conn);
  const room = 'seq-resume';
  for (let i = 0; i < 10; i++) await s.publish(room, Array.from({ length: 10 }, (_, k) => msg('ann', `m${i * 10 + k + 1}`)));
  const state = await h.read(room, { user: null, since: null, sinceEpoch: null, maxMissed: 1000, maxBytes: 1 << 20, roomTtlMs: 0 });
  assert.equal(state.seq, 100);
  // Approximate trimming keeps at least historyLimit, maybe up to a node more.
  assert.ok(state.firstKept <= 81 && state.firstKept > 1, `firstKept ${state.firstKept}`);
  const opts = { user: 'ann', sinceEpoch: state.epoch, maxMissed: 1000, maxBytes: 1 << 20, roomTtlMs: 0 };
  const exact = await h.read(room, { ...opts, since: 90 });
  assert.equal(exact.truncated, false);
  assert.deepEqual(exact.missed!.map((m) => m.seq), Array.from({ length: 10 }, (_, k) => 91 + k));
  const edge = await h.read(room, { ...opts, since: state.firstKept - 1 });
  assert.equal(edge.truncated, false, 'resume from just before the oldest kept message');
  assert.equal(edge.missed!.length, 100 - state.firstKept + 1);
  const old = await h.read(room, { ...opts, since: state.firstKept - 2 });
  assert.equal(old.truncated, true);
  assert.equal(old.missed, null);
  assert.equal((await h.read(room, { ...opts, since: 100 })).missed!.length, 0);
  assert.equal((await h.read(room, { ...opts, since: 95, sinceEpoch: 'another-epoch' })).truncated, true);
  assert.equal((await h.read(room, { ...opts, since: 95, maxMissed: 4 })).truncated, true, 'more than maxMissed');
  assert.equal((await h.read(room, { ...opts, since: 95, maxBytes: 10 })).truncated, true, 'more than maxBytes');
  assert.equal((await h.read(room, { ...opts, since: 101 })).truncated, true, 'since beyond the room');
  // hist: latest and before/after pages.
  assert.deepEqual((await h.latest(room, 3, 1 << 20)).map((m) => m.seq), [98, 99, 100]);
  assert.deepEqual((await h.latest(room, 3, 1 << 20, 94)).map((m) => m.seq), [92, 93, 94]);
  assert.deepEqual((await h.range(room, 96, 200, 2, 1 << 20)).map((m) => m.seq), [96, 97]);
  assert.deepEqual((await h.latest(room, 5, 1)).map((m) => m.seq), [100], 'byte cap keeps at least one');
  assert.equal(await h.firstKept(room), state.firstKept);
});

test('a first join creates the cursor at the room seq; publishing moves the sender cursor', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const s = new RedisSequencer(conn);
  const h = new RedisHistory(conn);
  const room = 'seq-cursor';
  await s.publish(room, [msg('ann', 'a'), msg('ann', 'b')]);
  const o = { since: null, sinceEpoch: null, maxMissed: 10, maxBytes: 1 << 20, roomTtlMs: 0 };
  assert.equal((await h.read(room, { ...o, user: 'bob' })).cursor, 2);
  await s.publish(room, [msg('ann', 'c'), msg('cat', 'd')]);
  assert.equal((await h.read(room, { ...o, user: 'bob' })).cursor, 2, 'a later read keeps the cursor');
  assert.equal((await h.read(room, { ...o, user: 'ann' })).cursor, 3);
  assert.equal((await h.read(room, { ...o, user: 'cat' })).cursor, 4);
});

test('a real msg frame (protocol writeMsg with seq 2^32 as the placeholder) comes back with its seq', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const conn = await connectRedis(t, redis.url);
  const room = Buffer.from('seq-real');
  const body = encode({ text: 'hi', seq: 'not the key' });
  // The frame's exact size, counted by the sizer that mirrors the writer.
  const sizer = new MsgSizer().start();
  writeMsg(sizer, room, 0, room.length, 2 ** 32, 'ann', body, 0, body.length, 1234);
  const buf = new Uint8Array(sizer.pos);
  const w = new MsgWriter(buf);
  // 2^32 is the smallest seq the writer encodes as uint64 (0xcf): the slot the script fills.
  writeMsg(w, room, 0, room.length, 2 ** 32, 'ann', body, 0, body.length, 1234);
  const frame = buf.subarray(0, w.pos);
  const slot = findSeqSlot(frame);
  assert.ok(slot > 0, 'the frame has a seq slot');
  const s = new RedisSequencer(conn);
  await s.publish('seq-real', [msg('bob', 'first')]);
  const r = await s.publish('seq-real', [{ user: 'ann', cid: null, ts: 1234, frame, seqOffset: slot }]);
  assert.deepEqual(r.outcomes, [{ seq: 2, duplicate: false }]);
  const [stored] = await new RedisHistory(conn).range('seq-real', 2, 2, 1, 1 << 20);
  assert.deepEqual(decode(stored!.frame), { t: 'msg', room: 'seq-real', seq: 2, from: 'ann', body: { text: 'hi', seq: 'not the key' }, ts: 1234 });
});
