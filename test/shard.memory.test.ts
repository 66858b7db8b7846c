/**
 * Shard memory grows with what rooms hold, against a real engine (one shard, real clients):
 * an empty room costs a few hundred bytes, history stays within its byte budget whatever is
 * pushed, and a stored message costs its size plus a fixed overhead (issue 10, items 2 and 3).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Engine } from '../engine/index.js';
import { openClient, startEngine } from './helpers/engine.js';
import { httpGet, waitFor } from './helpers/client.js';
import { ShardBench, inClose } from './helpers/handler.js';
import { Histories, History } from '../workers/history.js';
import { seededRandom } from '../engine/client/backoff.js';

const gc = (globalThis as { gc?: () => void }).gc;
/** Heap + ArrayBuffer bytes of this thread after a full GC (tests run with --expose-gc). */
function liveBytes(): number {
  if (gc === undefined) throw new Error('run with node --expose-gc (scripts/run-tests.mjs does)');
  gc(); gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

type Shard = Record<string, number | boolean>;
const shard0 = (e: Engine): Shard => e.stats().shards[0] as unknown as Shard;

/** The shard's heap and ArrayBuffer bytes, the least of a few tick samples (garbage inflates any one). */
async function shardMemory(e: Engine, samples = 4): Promise<{ heap: number; arrayBuffers: number }> {
  let heap = Infinity; let arrayBuffers = Infinity;
  let last = -1;
  for (let i = 0; i < samples; i++) {
    await waitFor(() => Number(shard0(e).heapUsed) !== last, 'a fresh heap sample from the shard tick', 3000);
    const s = shard0(e);
    last = Number(s.heapUsed);
    heap = Math.min(heap, last);
    arrayBuffers = Math.min(arrayBuffers, Number(s.arrayBuffers));
  }
  return { heap, arrayBuffers };
}

test('10,000 empty rooms cost a few hundred bytes each in the shard heap, not historyLimit-sized arrays', async (t) => {
  const N = 10_000;
  const e = await startEngine(t, { shards: 1, maxRoomsPerConn: N, historyLimit: 1000 });
  const before = await shardMemory(e);
  const c = await openClient(t, e, 'roomer');
  for (let i = 0; i < N; i += 500) {
    const batch = Array.from({ length: Math.min(500, N - i) }, (_, k) => c.request({ t: 'join', room: `empty-${i + k}` }, 10_000));
    for (const r of await Promise.all(batch)) assert.equal(r.t, 'joined');
  }
  await c.close();
  await waitFor(() => shard0(e).members === 0 && shard0(e).rooms === N, `${N} empty rooms, no members`, 10_000);
  const after = await shardMemory(e);
  const perRoom = (after.heap - before.heap) / N;
  t.diagnostic(`shard heap per empty room: ${perRoom.toFixed(0)} B (${((after.heap - before.heap) / 1048576).toFixed(1)} MiB for ${N})`);
  // Before: historyLimit-sized arrays per room, ~11 KB each at historyLimit 1000. The sampled heap
  // also holds the joins' garbage (the shard cannot be made to collect); the exact figure is below.
  assert.ok(perRoom < 4000, `an empty room costs ${perRoom.toFixed(0)} B of shard heap`);
});

test('an idle empty room costs a few hundred bytes (the shard handler, measured after a full GC)', (t) => {
  const N = 10_000;
  const sb = new ShardBench({ historyLimit: 20_000 });
  const names = Array.from({ length: N }, (_, i) => `idle-room-${i}`);
  const before = liveBytes();
  // An anonymous joiner: its cursors go with it, so what stays is the rooms alone (a named user's
  // idle cursor is another ~500 B per room, bounded by maxCursorsPerRoom/maxCursorsPerShard).
  for (const room of names) sb.frame(1, { t: 'join', room }, 'anon-c1', true);
  sb.run(inClose(1)); // every room is now empty
  const after = liveBytes();
  assert.equal(sb.h.rooms.rooms.size, N);
  assert.equal(sb.h.rooms.memberships, 0);
  const perRoom = (after - before) / N;
  t.diagnostic(`idle empty room: ${perRoom.toFixed(0)} B (heap + ArrayBuffers, after gc, historyLimit 20000)`);
  // Before: historyLimit-sized arrays (at 20000: ~240 KB per room).
  assert.ok(perRoom < 600, `an idle empty room costs ${perRoom.toFixed(0)} B`);
  sb.h.rooms.dispose();
});

test('history stays within historyBudgetBytes under max-size bodies into many rooms, and each room keeps its newest message', async (t) => {
  const budget = 4 << 20;
  const e = await startEngine(t, { shards: 1, historyBudgetBytes: budget, historyLimit: 1000, maxFrameBytes: 65536 });
  const before = await shardMemory(e);
  const c = await openClient(t, e, 'pusher');
  const ROOMS = 40; const PER_ROOM = 8;
  const body = 'x'.repeat(65536 - 200);
  for (let r = 0; r < ROOMS; r++) assert.equal((await c.request({ t: 'join', room: `big-${r}` })).t, 'joined');
  for (let i = 0; i < PER_ROOM; i++) {
    const acks = await Promise.all(Array.from({ length: ROOMS }, (_, r) => c.request({ t: 'pub', room: `big-${r}`, body }, 10_000)));
    for (const a of acks) assert.equal(a.t, 'ack');
  }
  // 320 messages of ~64 KiB pushed: ~20 MiB, five times the budget.
  const s = shard0(e);
  t.diagnostic(`historyBytes ${String(s.historyBytes)} of budget ${budget}, ${String(s.historyMessages)} messages kept, ${String(s.historyEvicted)} evicted`);
  assert.ok(Number(s.historyBytes) <= budget, `historyBytes ${String(s.historyBytes)} within ${budget}`);
  assert.ok(Number(s.historyEvicted) > 0, 'messages were evicted to keep the budget');
  const metrics = await httpGet(e.port, '/metrics');
  const line = /^shardchat_history_bytes\{shard="0"\} (\d+)$/m.exec(String(metrics.body));
  assert.ok(line !== null && Number(line[1]) > 0 && Number(line[1]) <= budget, `/metrics shardchat_history_bytes: ${line?.[0]}`);
  for (let r = 0; r < ROOMS; r += 13) {
    const h = await c.request({ t: 'hist', room: `big-${r}`, limit: 500 });
    const seqs = (h.msgs as { seq: number }[]).map((m) => m.seq);
    assert.equal(seqs[seqs.length - 1], PER_ROOM, `room big-${r} keeps its newest message`);
    assert.equal(h.truncated, true, `room big-${r} says its history was truncated`);
  }
  const after = await shardMemory(e);
  const grown = after.heap - before.heap + after.arrayBuffers - before.arrayBuffers;
  t.diagnostic(`shard heap + ArrayBuffers grew ${(grown / 1048576).toFixed(1)} MiB for a ${budget / 1048576} MiB budget`);
  // The budget plus a constant for the shard's own working set (scratch, maps, garbage not yet collected).
  assert.ok(grown <= budget + (8 << 20), `shard memory grew ${grown} B, over budget + 8 MiB`);
});

test('a stored 1,000 B message holds about its size plus a fixed overhead, not a 4 KiB size class', async (t) => {
  const e = await startEngine(t, { shards: 1, historyLimit: 100_000 });
  const c = await openClient(t, e, 'small');
  await c.request({ t: 'join', room: 'small' });
  const before = await shardMemory(e);
  const N = 5000;
  const body = 'y'.repeat(1000);
  for (let i = 0; i < N; i += 250) {
    const acks = await Promise.all(Array.from({ length: 250 }, () => c.request({ t: 'pub', room: 'small', body }, 10_000)));
    for (const a of acks) assert.equal(a.t, 'ack');
  }
  const after = await shardMemory(e);
  const s = shard0(e);
  assert.equal(s.historyMessages, N);
  const perMsg = (after.heap - before.heap + after.arrayBuffers - before.arrayBuffers) / N;
  t.diagnostic(`per stored message: ${perMsg.toFixed(0)} B of sampled shard heap + ArrayBuffers (with garbage) for a ~1,051 B frame (1,000 B body); charged ${(Number(s.historyBytes) / N).toFixed(0)} B`);
  // Before: a 4096 B class per message plus the same garbage.
  assert.ok(perMsg < 4096, `a stored message holds ${perMsg.toFixed(0)} B`);
});

test('a stored message holds its frame, at most as much again while its room fills, and a fixed overhead, charged as held (measured after a full GC)', (t) => {
  const sb = new ShardBench({ historyLimit: 100_000 });
  sb.frame(1, { t: 'join', room: 'm' }, 'writer');
  const N = 5000;
  const body = new Uint8Array(1000);
  const before = liveBytes();
  for (let i = 0; i < N; i++) sb.frame(1, { t: 'pub', room: 'm', body });
  const after = liveBytes();
  const r = sb.h.rooms.get('m')!;
  const frameLen = sb.h.rooms.entryLen(r, 1);
  const held = (after - before) / N;
  const charged = sb.h.rooms.history.bytes / N;
  // A room at its limit stopped doubling near 1.25x its limit's worth.
  const sb2 = new ShardBench({ historyLimit: 1000 });
  sb2.frame(1, { t: 'join', room: 'n' }, 'writer');
  for (let i = 0; i < 3000; i++) sb2.frame(1, { t: 'pub', room: 'n', body });
  const h2 = sb2.h.rooms.get('n')!.hist!;
  t.diagnostic(`a room at its 1,000-message limit: ${h2.capacity} B of buffer for ${h2.live} B of frames`);
  assert.ok(h2.capacity <= h2.live * 1.3 + 4096, `${h2.capacity} B of buffer for ${h2.live} B`);
  sb2.h.rooms.dispose();
  t.diagnostic(`per stored message: ${held.toFixed(0)} B held, ${charged.toFixed(0)} B charged, for a ${frameLen} B msg frame (1,000 B body; a pooled buffer each held ~1,476 B)`);
  assert.equal(sb.h.rooms.historyMessages, N);
  // A room far from its limit (100,000) doubles its buffer as it fills: at most 2x, charged as such.
  assert.ok(held < frameLen * 2 + 100, `a ${frameLen} B frame holds ${held.toFixed(0)} B`);
  // The charge is what is held: the room's buffer, its overhead and the entries' slots.
  assert.ok(Math.abs(charged - held) < held * 0.1, `charged ${charged.toFixed(0)} B for ${held.toFixed(0)} B held`);
  sb.h.rooms.dispose();
  assert.equal(sb.h.rooms.history.buffersHeld, 0);
  assert.equal(sb.h.rooms.history.bytes, 0);
});

test('a room history wraps, grows and shrinks in its one buffer (large frames pooled beside it) and hands back every frame intact, in seq order', () => {
  const hs = new Histories(50, 64 << 20);
  const h = new History();
  const frame = (n: number): Uint8Array => {
    const f = new Uint8Array(n % 23 === 0 ? 5000 + n : 20 + ((n * 37) % 300)); // every 23rd over LARGE_FRAME: a pooled buffer
    f.fill(n & 0xff); f[0] = n >> 8; return f;
  };
  const kept: Uint8Array[] = [];
  for (let n = 1; n <= 2000; n++) {
    const f = frame(n);
    assert.ok(hs.push(h, f, 0, f.byteLength));
    kept.push(f);
    if (kept.length > 50) kept.shift();
    assert.equal(h.count, kept.length);
    if (n % 97 === 0 || n > 1990) for (let i = 0; i < h.count; i++) assert.deepEqual(h.at(i).subarray(0, h.len(i)), kept[i], `entry ${i} after ${n} pushes`);
  }
  assert.ok(hs.pool.inUse > 0 && hs.pool.inUse < 5, `large frames in pooled buffers (${hs.pool.inUse})`);
  // At the limit the ring stopped growing: it holds the small frames with a quarter to spare, and room to wrap.
  assert.ok(h.capacity <= Math.ceil(h.ringLive * 1.25 / 8) * 8 + 320 * 3, `capacity ${h.capacity} for ${h.ringLive} ring bytes`);
  assert.equal(hs.bytes, h.charge());
  // A longer tombstone in the middle is rebuilt in place of its entry; a shorter one goes in place.
  const long = new Uint8Array(900).fill(7);
  hs.replace(h, 10, long, 0, long.byteLength);
  kept[10] = long;
  const short = new Uint8Array(5).fill(9);
  hs.replace(h, 20, short, 0, short.byteLength);
  kept[20] = short;
  const p = kept.findIndex((f) => f.byteLength > 4096);
  const tomb = new Uint8Array(7).fill(3);
  hs.replace(h, p, tomb, 0, tomb.byteLength); // a pooled entry's tombstone takes another pooled buffer
  kept[p] = tomb;
  for (let i = 0; i < h.count; i++) assert.deepEqual(h.at(i).subarray(0, h.len(i)), kept[i]);
  assert.equal(hs.bytes, h.charge());
  hs.clear(h);
  assert.deepEqual([h.count, h.capacity, hs.bytes, hs.messages, hs.buffersHeld], [0, 0, 0, 0, 0]);
});

test('a message too large for the whole budget empties its room history rather than leaving a gap before seq', () => {
  const sb = new ShardBench({ historyBudgetBytes: 1 << 20 });
  sb.frame(1, { t: 'join', room: 'g' }, 'w');
  for (let i = 0; i < 3; i++) sb.frame(1, { t: 'pub', room: 'g', body: i });
  sb.frame(1, { t: 'pub', room: 'g', body: new Uint8Array((1 << 20) - 100) });
  const r = sb.h.rooms.get('g')!;
  assert.equal(r.seq, 4);
  assert.equal(sb.h.rooms.kept(r), 0, 'seqs 1..3 are not kept as if they ended at seq 4');
  assert.equal(sb.h.rooms.history.bytes, 0);
  sb.frame(1, { t: 'pub', room: 'g', body: 5 });
  assert.equal(sb.h.rooms.firstKept(r), 5);
  sb.h.rooms.dispose();
});

test('over the budget, the least recently published room loses its oldest messages first, and every room keeps its newest longest', () => {
  // Frames of 60 B. A room's charge is its buffer (at least 256 B) + 256 B + 32 B per entry:
  // 4, 3 and 2 entries in 256 B buffers are 1,824 B; a 5th entry grows a's buffer by 1.25x to
  // 376 B (1,976 B; doubling it would not fit the budget).
  const hs = new Histories(1000, 1920);
  const [a, b, c] = [new History(), new History(), new History()];
  const frame = new Uint8Array(60);
  const push = (h: History, n: number): void => { for (let i = 0; i < n; i++) assert.ok(hs.push(h, frame, 0, 60)); };
  push(a, 4); push(b, 3); push(c, 2); push(a, 0); // 9 entries in three 256 B buffers; b is the least recently published
  assert.deepEqual([a.count, b.count, c.count, hs.evicted], [4, 3, 2, 0]);
  push(a, 1); // over the budget: b (least recent) pays, oldest first, down to its newest message
  assert.deepEqual([a.count, b.count, c.count, hs.evicted], [5, 1, 2, 2], 'c is more recent than b: untouched');
  assert.ok(hs.bytes <= hs.budgetBytes);
  for (let i = 0; i < 20; i++) push(a, 1); // a keeps publishing: b and c go down to their newest message, and stay there while a has two or more
  assert.equal(b.count, 1);
  assert.equal(c.count, 1);
  assert.ok(a.count >= 2);
  assert.ok(hs.bytes <= hs.budgetBytes);
  assert.equal(hs.bytes, a.charge() + b.charge() + c.charge());
  assert.equal(hs.messages, a.count + b.count + c.count);
  hs.clear(a); hs.clear(b); hs.clear(c);
  assert.deepEqual([hs.bytes, hs.messages, hs.buffersHeld], [0, 0, 0]);
});

test('histories under a small budget: random frames, limits, evictions, shrinks and replaces keep every room equal to a model of what it keeps', () => {
  for (const seed of [1, 2, 3]) {
    const rnd = seededRandom(seed);
    const limit = 40;
    const hs = new Histories(limit, 96 << 10);
    const rooms = Array.from({ length: 12 }, () => ({ h: new History(), kept: [] as Uint8Array[] }));
    let evictedSeen = 0;
    for (let step = 0; step < 6000; step++) {
      const room = rooms[Math.floor(rnd() * rnd() * rooms.length)]!; // uneven: low rooms busier
      const x = rnd();
      if (x < 0.02 && room.kept.length > 0) {
        // a redaction's tombstone, shorter or longer, in a ring entry or a pooled one
        const i = Math.floor(rnd() * room.kept.length);
        const t = new Uint8Array(1 + Math.floor(rnd() * 400)).fill(step & 0xff);
        hs.replace(room.h, i, t, 0, t.byteLength);
        room.kept[i] = t;
      } else {
        const len = x < 0.06 ? 4097 + Math.floor(rnd() * 9000) : 1 + Math.floor(rnd() * 700);
        const f = new Uint8Array(len);
        for (let k = 0; k < len; k += 61) f[k] = (step + k) & 0xff;
        if (hs.push(room.h, f, 0, len)) room.kept.push(f); else room.kept.length = 0;
        if (room.kept.length > limit) room.kept.shift();
      }
      // evictions drop the oldest of some room: bring the models down to what each room keeps
      for (const r of rooms) while (r.kept.length > r.h.count) r.kept.shift();
      assert.ok(hs.bytes <= hs.budgetBytes, `step ${step}: ${hs.bytes} charged over ${hs.budgetBytes}`);
      if (step % 50 === 0 || hs.evicted !== evictedSeen) {
        evictedSeen = hs.evicted;
        let charged = 0; let msgs = 0;
        for (const r of rooms) {
          assert.equal(r.h.count, r.kept.length);
          for (let i = 0; i < r.kept.length; i++) assert.deepEqual(r.h.at(i).subarray(0, r.h.len(i)), r.kept[i], `seed ${seed} step ${step} entry ${i}`);
          charged += r.h.charge(); msgs += r.h.count;
        }
        assert.equal(hs.bytes, charged);
        assert.equal(hs.messages, msgs);
      }
    }
    assert.ok(hs.evicted > 0, 'the budget evicted');
    for (const r of rooms) hs.clear(r.h);
    assert.deepEqual([hs.bytes, hs.messages, hs.buffersHeld], [0, 0, 0]);
  }
});
