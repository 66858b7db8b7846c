/**
 * One suite for every store backend: the same behaviours run against memory and sqlite (and any
 * later backend), so a backend cannot drift. `open` makes a store with the given limits; for a
 * durable backend `reopen` closes it and opens the same data again.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Store, StoreLimits } from '../../workers/store/index.js';
import { StoreError } from '../../workers/store/index.js';
import { frameOf } from './store-frames.js';

export { frameOf };

export interface StoreHarness {
  store: Store;
  /** Durable backends: close and open the same data (same limits unless given). */
  reopen?: (limits?: Partial<StoreLimits>) => Store;
}
export type OpenStore = (t: TestContext, limits?: Partial<StoreLimits>) => StoreHarness;

export function put(s: Store, room: string, n: number, opts: { from?: string; ts?: number; cid?: (i: number) => string | null; size?: number } = {}): number[] {
  const seqs: number[] = [];
  for (let i = 0; i < n; i++) {
    const seq = s.room(room).seq + 1;
    s.append(room, { seq, from: opts.from ?? 'u1', ts: opts.ts ?? Date.now(), cid: opts.cid?.(i) ?? null, frame: frameOf(room, seq, opts.size) });
    seqs.push(seq);
  }
  return seqs;
}

function commitPut(s: Store, room: string, n: number, opts: Parameters<typeof put>[3] = {}): number[] {
  s.beginBatch();
  const seqs = put(s, room, n, opts);
  s.commit();
  return seqs;
}

function drainTrim(s: Store, now: number): number {
  let removed = 0;
  for (let i = 0; i < 1000; i++) {
    const r = s.trim(now, 50);
    removed += r.removed;
    if (!r.more) return removed;
  }
  assert.fail('trim() still reports more work after 1000 calls');
}

const misuse = (e: unknown) => e instanceof StoreError && e.code === 'STORE_MISUSE';

export function storeSuite(backend: string, open: OpenStore): void {
  test(`${backend}: a room is created lazily, seq 0, with an epoch that stays`, (t) => {
    const { store } = open(t);
    const a = store.room('lobby');
    assert.equal(a.seq, 0);
    assert.match(a.epoch, /^[0-9a-z]+[A-Za-z0-9_-]{8}$/);
    assert.equal(store.room('lobby').epoch, a.epoch);
    assert.notEqual(store.room('other').epoch, a.epoch);
    assert.equal(store.firstKept('lobby'), 1);
    assert.deepEqual(store.range('lobby', 1, 10, 1 << 20), []);
    assert.deepEqual(store.latest('lobby', 10, 1 << 20), []);
  });

  test(`${backend}: append, commit, range and latest round-trip the frames and columns`, (t) => {
    const { store } = open(t);
    const ts = 1_700_000_000_000;
    store.beginBatch();
    put(store, 'r', 5, { from: 'alice', ts, cid: (i) => (i === 2 ? 'c-2' : null) });
    store.commit();
    assert.equal(store.room('r').seq, 5);
    const all = store.range('r', 1, 5, 1 << 20);
    assert.deepEqual(all.map((m) => m.seq), [1, 2, 3, 4, 5]);
    for (const m of all) {
      assert.deepEqual(new Uint8Array(m.frame), frameOf('r', m.seq));
      assert.equal(m.from, 'alice');
      assert.equal(m.ts, ts);
      assert.equal(m.cid, m.seq === 3 ? 'c-2' : null);
    }
    assert.deepEqual(store.range('r', 2, 3, 1 << 20).map((m) => m.seq), [2, 3]);
    assert.deepEqual(store.range('r', 4, 99, 1 << 20).map((m) => m.seq), [4, 5]);
    assert.deepEqual(store.latest('r', 2, 1 << 20).map((m) => m.seq), [4, 5]);
    // maxBytes: whole frames only, at least one; range keeps the oldest, latest the newest.
    assert.deepEqual(store.range('r', 1, 5, 50).map((m) => m.seq), [1, 2]);
    assert.deepEqual(store.range('r', 1, 5, 1).map((m) => m.seq), [1]);
    assert.deepEqual(store.latest('r', 5, 50).map((m) => m.seq), [4, 5]);
    assert.deepEqual(store.latest('r', 5, 1).map((m) => m.seq), [5]);
  });

  test(`${backend}: the frame is copied at append; reads inside a batch see the batch`, (t) => {
    const { store } = open(t);
    commitPut(store, 'r', 3);
    store.beginBatch();
    const frame = frameOf('r', 4);
    store.append('r', { seq: 4, from: 'u1', ts: 1, cid: 'x', frame });
    frame.fill(0);
    store.setCursor('r', 'bob', 4);
    assert.equal(store.room('r').seq, 4);
    assert.deepEqual(store.range('r', 2, 4, 1 << 20).map((m) => m.seq), [2, 3, 4]);
    assert.deepEqual(store.latest('r', 2, 1 << 20).map((m) => m.seq), [3, 4]);
    assert.deepEqual(store.latest('r', 4, 50).map((m) => m.seq), [3, 4]);
    assert.equal(store.cursor('r', 'bob'), 4);
    assert.equal(store.findCid('r', 'u1', 'x', Date.now()), 4);
    store.commit();
    assert.deepEqual(new Uint8Array(store.range('r', 4, 4, 1 << 20)[0]!.frame), frameOf('r', 4));
  });

  test(`${backend}: rollback forgets the batch and restores the committed seq`, (t) => {
    const { store } = open(t);
    commitPut(store, 'r', 2);
    store.beginBatch();
    put(store, 'r', 3, { cid: () => 'dup' });
    put(store, 'fresh', 1);
    store.setCursor('r', 'bob', 5);
    store.rollback();
    assert.equal(store.inBatch, false);
    assert.equal(store.room('r').seq, 2);
    assert.equal(store.room('fresh').seq, 0);
    assert.deepEqual(store.range('r', 1, 10, 1 << 20).map((m) => m.seq), [1, 2]);
    assert.equal(store.cursor('r', 'bob'), null);
    assert.equal(store.findCid('r', 'u1', 'dup', Date.now()), 0);
    assert.deepEqual(commitPut(store, 'r', 1), [3]); // the rolled-back seqs are assigned again
  });

  test(`${backend}: misuse is a STORE_MISUSE error, not corruption`, (t) => {
    const { store } = open(t);
    assert.throws(() => store.append('r', { seq: 1, from: 'u', ts: 1, cid: null, frame: frameOf('r', 1) }), misuse);
    assert.throws(() => store.setCursor('r', 'u', 1), misuse);
    assert.throws(() => store.commit(), misuse);
    store.beginBatch();
    assert.throws(() => store.beginBatch(), misuse);
    assert.throws(() => store.append('r', { seq: 2, from: 'u', ts: 1, cid: null, frame: frameOf('r', 2) }), misuse);
    assert.throws(() => store.trim(Date.now(), 1), misuse);
    store.append('r', { seq: 1, from: 'u', ts: 1, cid: null, frame: frameOf('r', 1) });
    assert.throws(() => store.evict('r'), misuse);
    store.commit();
    assert.equal(store.room('r').seq, 1);
  });

  test(`${backend}: read cursors per user and room`, (t) => {
    const { store } = open(t);
    commitPut(store, 'a', 5);
    assert.equal(store.cursor('a', 'bob'), null);
    store.beginBatch();
    store.setCursor('a', 'bob', 3);
    store.setCursor('a', 'carol', 5);
    store.setCursor('b', 'bob', 0);
    store.commit();
    store.beginBatch();
    store.setCursor('a', 'bob', 4);
    store.commit();
    assert.equal(store.cursor('a', 'bob'), 4);
    assert.equal(store.cursor('a', 'carol'), 5);
    assert.equal(store.cursor('b', 'bob'), 0);
    assert.equal(store.cursor('b', 'carol'), null);
  });

  test(`${backend}: a repeated cid from the same user in the same room within the window gives the original seq`, (t) => {
    const now = 1_800_000_000_000;
    const { store } = open(t, { cidWindowMessages: 10, cidWindowMs: 60_000 });
    commitPut(store, 'r', 1, { from: 'alice', ts: now, cid: () => 'm1' });
    commitPut(store, 'r', 1, { from: 'bob', ts: now, cid: () => 'm2' });
    assert.equal(store.findCid('r', 'alice', 'm1', now), 1);
    assert.equal(store.findCid('r', 'bob', 'm1', now), 0, 'another user with the same cid is another message');
    assert.equal(store.findCid('other', 'alice', 'm1', now), 0, 'the same cid in another room is another message');
    assert.equal(store.findCid('r', 'bob', 'm2', now), 2);
    assert.equal(store.findCid('r', 'alice', 'm1', now + 60_001), 0, 'older than cidWindowMs');
    commitPut(store, 'r', 9, { ts: now });
    assert.equal(store.room('r').seq, 11);
    assert.equal(store.findCid('r', 'alice', 'm1', now), 0, 'more than cidWindowMessages ago');
    assert.equal(store.findCid('r', 'bob', 'm2', now), 2, 'exactly the last 10 messages');
  });

  test(`${backend}: historyLimit keeps the newest messages; trim() removes the rest in steps`, (t) => {
    const { store } = open(t, { historyLimit: 10 });
    for (let b = 0; b < 30; b++) commitPut(store, 'r', 20);
    commitPut(store, 'quiet', 3);
    assert.equal(store.room('r').seq, 600);
    assert.equal(store.firstKept('r'), 591);
    assert.deepEqual(store.range('r', 1, 600, 1 << 20).map((m) => m.seq), [591, 592, 593, 594, 595, 596, 597, 598, 599, 600]);
    assert.deepEqual(store.latest('r', 50, 1 << 20).map((m) => m.seq)[0], 591);
    drainTrim(store, Date.now());
    assert.equal(store.firstKept('r'), 591);
    assert.equal(store.range('r', 1, 600, 1 << 20).length, 10);
    assert.deepEqual(store.range('quiet', 1, 3, 1 << 20).map((m) => m.seq), [1, 2, 3]);
    assert.equal(store.trim(Date.now(), 5).more, false);
  });

  test(`${backend}: historyMaxAgeMs trims messages older than the age, oldest first`, (t) => {
    const now = 1_800_000_000_000;
    const { store } = open(t, { historyMaxAgeMs: 60_000, historyLimit: 1000 });
    commitPut(store, 'r', 300, { ts: now - 120_000 });
    commitPut(store, 'r', 5, { ts: now - 1000 });
    commitPut(store, 's', 4, { ts: now - 1000 });
    const removed = drainTrim(store, now);
    assert.ok(removed >= 300, `removed ${removed}`);
    assert.equal(store.firstKept('r'), 301);
    assert.deepEqual(store.range('r', 1, 1000, 1 << 20).map((m) => m.seq), [301, 302, 303, 304, 305]);
    assert.equal(store.range('s', 1, 10, 1 << 20).length, 4);
  });

  test(`${backend}: many rooms, interleaved in batches, keep their own seq and frames`, (t) => {
    const { store } = open(t);
    for (let b = 0; b < 20; b++) {
      store.beginBatch();
      for (let k = 0; k < 10; k++) put(store, `room-${(b * 7 + k) % 13}`, 1 + (k % 3));
      store.commit();
    }
    let total = 0;
    for (let r = 0; r < 13; r++) {
      const name = `room-${r}`;
      const seq = store.room(name).seq;
      const got = store.range(name, 1, seq, 1 << 30);
      assert.deepEqual(got.map((m) => m.seq), Array.from({ length: seq }, (_, i) => i + 1));
      for (const m of got) assert.deepEqual(new Uint8Array(m.frame), frameOf(name, m.seq));
      total += seq;
    }
    assert.equal(total, 20 * 19); // each batch appends 1 + k % 3 for k = 0..9: 19 messages
  });

  test(`${backend}: evict() and, when durable, reopening`, (t) => {
    const now = Date.now();
    const h = open(t, { cidWindowMessages: 100, cidWindowMs: 600_000 });
    commitPut(h.store, 'r', 4, { from: 'alice', ts: now, cid: (i) => `c${i}` });
    h.store.beginBatch();
    h.store.setCursor('r', 'alice', 3);
    h.store.commit();
    const epoch = h.store.room('r').epoch;
    h.store.evict('r');
    if (!h.store.durable) {
      assert.equal(h.reopen, undefined);
      assert.equal(h.store.room('r').seq, 0, 'the memory backend drops an evicted room');
      assert.notEqual(h.store.room('r').epoch, epoch);
      return;
    }
    assert.equal(h.store.room('r').epoch, epoch, 'a durable backend keeps an evicted room');
    assert.equal(h.store.room('r').seq, 4);
    const s2 = h.reopen!();
    assert.equal(s2.room('r').epoch, epoch);
    assert.equal(s2.room('r').seq, 4);
    assert.equal(s2.cursor('r', 'alice'), 3);
    assert.equal(s2.findCid('r', 'alice', 'c2', now), 3, 'the cid window survives a reopen');
    assert.deepEqual(s2.range('r', 1, 4, 1 << 20).map((m) => [m.seq, m.from, m.ts, m.cid]),
      [[1, 'alice', now, 'c0'], [2, 'alice', now, 'c1'], [3, 'alice', now, 'c2'], [4, 'alice', now, 'c3']]);
    assert.deepEqual(commitPut(s2, 'r', 1), [5], 'seq continues after a reopen');
  });
}
