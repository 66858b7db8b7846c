/**
 * Model-based property test of the SPSC ring: random operation sequences run against the real
 * ring and against a plain-array queue model that computes byte positions itself. Every answer
 * must match: which records come out, their bytes and payload offsets, and exactly when the ring
 * is full (the model predicts `reserve`/`push`/`canFit` from its own used bytes, position and
 * record span, 8-byte header plus payload rounded up to 8, checked against `recordSpan`, including
 * the skipped tail at the wrap). Random capacity, random start counter
 * (often just below 2^32 so the counters wrap during the run). Seeded and bounded; set
 * SHARDCHAT_SOAK=1 for many more runs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { guardHandles } from './helpers/leaks.js';
import { createRing, RingReader, RingWriter, recordSpan } from '../engine/ring/index.js';

guardHandles();

const SOAK = !!process.env.SHARDCHAT_SOAK;

/** Length choice, resolved against the ring's maxRecordBytes when the op runs. */
type Len = 'max' | 'tooBig' | number;

type Op =
  | { op: 'push'; len: Len }
  | { op: 'reserveCommit'; len: Len; keep: number }
  | { op: 'reserveAbandon'; len: Len }
  | { op: 'commit' }
  | { op: 'publish' }
  | { op: 'write'; len: Len }
  | { op: 'canFit'; len: Len }
  | { op: 'next' }
  | { op: 'hasNext' }
  | { op: 'release'; withOffset: boolean }
  | { op: 'releaseWrong' }
  | { op: 'releaseAll' }
  | { op: 'syncRead' }
  | { op: 'drain'; max: number }
  | { op: 'read' }
  | { op: 'depth' };

/** Byte j of record `id`: a record's bytes identify it, so a mix-up or overwrite shows. */
function byteOf(id: number, j: number): number {
  return (Math.imul(id + 1, 0x9e3779b1) >>> 24) ^ ((j * 13 + id) & 255);
}
function payload(id: number, len: number): Uint8Array {
  const u = new Uint8Array(len);
  for (let j = 0; j < len; j++) u[j] = byteOf(id, j);
  return u;
}
const GARBAGE = 0xee;

interface ModelRecord {
  id: number;
  len: number;
  /** Payload offset in the data area. */
  offset: number;
  /** Counter value after the record (past its skip, if any). */
  end: number;
  /** Bytes written by an abandoned-then-committed reservation are GARBAGE, not byteOf(). */
  garbage: boolean;
}

/** How often the runs reached the interesting states (checked, so the generators stay useful). */
const seen = { full: 0, skipWrap: 0, exactTailFit: 0, counterWrap: 0, maxRecord: 0, heldWhileFull: 0 };

function runScenario(capacity: number, start: number, ops: Op[]): void {
  const sab = createRing(capacity, start);
  const w = new RingWriter(sab);
  const r = new RingReader(sab);
  const max = w.maxRecordBytes;
  const mask = capacity - 1;

  // ---- the model ----
  const recs: ModelRecord[] = [];      // every committed record, in order
  let mw = start >>> 0;                // producer's committed counter
  let mWRITE = start >>> 0;            // published counter (shared word)
  let pubCount = 0;                    // records visible to the consumer
  let mREAD = start >>> 0;             // synced read counter (shared word)
  let handed = 0;                      // records handed out by next()
  let released = 0;                    // records released
  let mr = start >>> 0;                // consumer's released counter (not yet synced)
  // (typed through a cast: it is also assigned inside tryReserve, which TS's narrowing ignores)
  let open = null as { len: number; skip: number; offset: number } | null;
  let nextId = 0;

  /** The model's record span: 8-byte header (u32 length + 4 padding), payload, padded to 8. */
  const spanOf = (len: number): number => {
    const span = 8 * Math.ceil((8 + len) / 8);
    assert.equal(recordSpan(len), span, `recordSpan(${len})`);
    return span;
  };
  const resolve = (l: Len): number => (l === 'max' ? max : l === 'tooBig' ? max + 1 : l % (max + 1));
  /** The model's placement of a payload of `len` at the current write counter, or null if full. */
  const place = (len: number): { skip: number; offset: number; need: number } | null => {
    const span = spanOf(len);
    const pos = mw & mask;
    const tail = capacity - pos;
    const skip = span <= tail ? 0 : tail;
    const need = skip + span;
    const used = (mw - mREAD) >>> 0;
    assert.ok(used <= capacity, 'model: used within capacity');
    if (used + need > capacity) {
      seen.full++;
      if (handed > released) seen.heldWhileFull++;
      return null;
    }
    if (skip !== 0) seen.skipWrap++;
    if (span === tail) seen.exactTailFit++;
    if (len === max) seen.maxRecord++;
    if (((mw + need) >>> 0) < mw) seen.counterWrap++;
    // the payload follows the record's 8-byte header (u32 length + 4 bytes padding): 8-aligned
    const offset = (skip === 0 ? pos : 0) + 8;
    assert.equal(offset % 8, 0, 'model: payload offset 8-aligned');
    return { skip, offset, need };
  };
  const commitModel = (len: number, skip: number, offset: number, id: number, garbage: boolean): void => {
    mw = (mw + skip + spanOf(len)) >>> 0;
    recs.push({ id, len, offset, end: mw, garbage });
  };
  const checkBytes = (rec: ModelRecord, what: string): void => {
    const b = r.bytes;
    for (let j = 0; j < rec.len; j++) {
      const want = rec.garbage ? GARBAGE : byteOf(rec.id, j);
      if (b[rec.offset + j] !== want) {
        assert.fail(`${what}: record ${rec.id} byte ${j} is ${b[rec.offset + j]}, want ${want}`);
      }
    }
  };
  const expectNext = (what: string): void => {
    const rec = recs[handed];
    if (handed < pubCount && rec) {
      assert.equal(r.next(), rec.len, `${what}: length of record ${rec.id}`);
      assert.equal(r.offset, rec.offset, `${what}: offset of record ${rec.id}`);
      assert.equal(r.length, rec.len);
      checkBytes(rec, what);
      handed++;
    } else {
      assert.equal(r.next(), -1, `${what}: nothing published beyond what was handed out`);
    }
  };
  const releaseModel = (): void => {
    const rec = recs[released]!;
    checkBytes(rec, 'still intact at release');
    mr = rec.end;
    released++;
  };
  const tryReserve = (len: number): { skip: number; offset: number } | null => {
    const p = place(len);
    const got = w.reserve(len);
    assert.equal(got, p ? p.offset : -1, `reserve(${len}) at counter ${mw} with ${(mw - mREAD) >>> 0} used of ${capacity}`);
    open = p ? { len, skip: p.skip, offset: p.offset } : null;
    return p;
  };

  for (const o of ops) {
    switch (o.op) {
      case 'push':
      case 'write': {
        const len = resolve(o.len);
        if (len > max) {
          assert.throws(() => w.push(new Uint8Array(len)), RangeError);
          open = null;
          break;
        }
        const p = place(len);
        const id = nextId++;
        const ok = o.op === 'push' ? w.push(payload(id, len)) : w.write(payload(id, len));
        assert.equal(ok, p !== null, `${o.op}(${len}) at counter ${mw} with ${(mw - mREAD) >>> 0} used of ${capacity}`);
        open = null;
        if (p) commitModel(len, p.skip, p.offset, id, false);
        if (o.op === 'write' && p) { mWRITE = mw; pubCount = recs.length; }
        break;
      }
      case 'reserveCommit': {
        const len = resolve(o.len);
        if (len > max) { assert.throws(() => w.reserve(len), RangeError); open = null; break; }
        const p = tryReserve(len);
        if (!p) break;
        const keep = Math.min(len, Math.floor(o.keep * (len + 1)));
        const id = nextId++;
        w.bytes.set(payload(id, keep), p.offset);
        w.commit(keep);
        open = null;
        commitModel(keep, p.skip, p.offset, id, false);
        break;
      }
      case 'reserveAbandon': {
        const len = resolve(o.len);
        if (len > max) { assert.throws(() => w.reserve(len), RangeError); open = null; break; }
        const p = tryReserve(len);
        // scribble over the reserved (free) space: must not disturb any live record
        if (p) w.bytes.fill(GARBAGE, p.offset, p.offset + len);
        break;
      }
      case 'commit': {
        if (open) {
          w.commit();
          commitModel(open.len, open.skip, open.offset, nextId++, true);
          open = null;
        } else {
          assert.throws(() => w.commit(), /without an open reservation/);
        }
        break;
      }
      case 'publish':
        w.publish();
        mWRITE = mw;
        pubCount = recs.length;
        break;
      case 'canFit': {
        const len = resolve(o.len);
        if (len > max) { assert.throws(() => w.canFit(len), RangeError); break; }
        assert.equal(w.canFit(len), place(len) !== null, `canFit(${len})`);
        break;
      }
      case 'next':
        expectNext('next');
        break;
      case 'hasNext':
        assert.equal(r.hasNext(), handed < pubCount);
        break;
      case 'release':
        if (released < handed) {
          r.release(o.withOffset ? recs[released]!.offset : undefined);
          releaseModel();
        } else {
          assert.throws(() => r.release(), /no record handed out/);
        }
        break;
      case 'releaseWrong':
        if (handed - released >= 2 && recs[released]!.offset !== recs[released + 1]!.offset) {
          assert.throws(() => r.release(recs[released + 1]!.offset), /out of order/);
        }
        break;
      case 'releaseAll':
        while (released < handed) releaseModel();
        r.releaseAll();
        break;
      case 'syncRead':
        r.syncRead();
        mREAD = mr;
        break;
      case 'drain': {
        let k = 0;
        const n = r.drain((bytes, off, len) => {
          const rec = recs[handed]!;
          assert.ok(handed < pubCount, 'drain hands out only published records');
          assert.equal(bytes, r.bytes);
          assert.equal(off, rec.offset);
          assert.equal(len, rec.len);
          checkBytes(rec, 'drain');
          handed++;
          releaseModel();
          k++;
        }, o.max);
        assert.equal(n, k);
        assert.equal(n, Math.min(o.max, pubCount - (handed - n)), 'drain count');
        if (n > 0) mREAD = mr;
        break;
      }
      case 'read': {
        const rec = recs[handed];
        const got = r.read();
        if (handed < pubCount && rec) {
          assert.ok(got);
          assert.deepEqual(got, rec.garbage ? new Uint8Array(rec.len).fill(GARBAGE) : payload(rec.id, rec.len));
          handed++;
          releaseModel();
          mREAD = mr;
        } else {
          assert.equal(got, null);
        }
        break;
      }
      case 'depth':
        assert.equal(w.depth(), (mWRITE - mREAD) >>> 0);
        assert.equal(r.depth(), (mWRITE - mREAD) >>> 0);
        break;
    }
    assert.ok(((mWRITE - mREAD) >>> 0) <= capacity);
    // records handed out and not released must still be intact
    for (let i = released; i < handed && i < released + 3; i++) checkBytes(recs[i]!, 'held record');
  }

  // Finish: publish, release and sync everything, drain the rest: same records, same order.
  w.publish();
  mWRITE = mw;
  pubCount = recs.length;
  while (released < handed) releaseModel();
  r.releaseAll();
  r.syncRead();
  mREAD = mr;
  while (handed < pubCount) {
    expectNext('final drain');
    releaseModel();
    r.release();
  }
  r.syncRead();
  assert.equal(r.next(), -1);
  assert.equal(r.depth(), 0);
  assert.equal(mw, mWRITE);
  assert.equal(Atomics.load(new Int32Array(sab, 0, 1), 0) >>> 0, mw, 'WRITE word equals the model counter');
  // and the emptied ring takes a maximal record wherever it stands now
  assert.ok(w.write(payload(nextId, max)));
  assert.equal(r.next(), max);
}

const lenArb: fc.Arbitrary<Len> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<Len>('max') },
  { weight: 2, arbitrary: fc.constant<Len>(0) },
  { weight: 1, arbitrary: fc.constant<Len>('tooBig') },
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 16 }) },
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 1 << 20 }) },
);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ op: fc.constant('push' as const), len: lenArb }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('reserveCommit' as const), len: lenArb, keep: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('reserveAbandon' as const), len: lenArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('commit' as const) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('publish' as const) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('write' as const), len: lenArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('canFit' as const), len: lenArb }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('next' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('hasNext' as const) }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('release' as const), withOffset: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('releaseWrong' as const) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('releaseAll' as const) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('syncRead' as const) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('drain' as const), max: fc.oneof(fc.constant(Infinity), fc.integer({ min: 1, max: 5 })) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('read' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('depth' as const) }) },
);

const capArb = fc.constantFrom(64, 128, 256, 1024, 4096);
/** Start counters (multiples of 8): 0, just below 2^32 (wraps during the run), around 2^31, or anywhere. */
const startArb = fc.oneof(
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 1024 }).map((d) => (2 ** 32 - 8 * d) | 0) },
  { weight: 1, arbitrary: fc.integer({ min: -1024, max: 1024 }).map((d) => (2 ** 31 + 8 * d) | 0) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 29 - 1 }).map((x) => (x * 8) | 0) },
);

test('ring matches a queue model over random operation sequences (incl. full, wrap, 2^32)', (t) => {
  fc.assert(
    fc.property(capArb, startArb, fc.array(opArb, { minLength: 1, maxLength: SOAK ? 1500 : 300, size: 'max' }),
      (cap, start, ops) => { runScenario(cap, start, ops); }),
    { seed: 0x5eed1, numRuns: SOAK ? 50_000 : 1000, endOnFailure: false },
  );
  // the generators reach every edge many times (not a vacuous pass)
  t.diagnostic(`edge cases reached: ${JSON.stringify(seen)}`);
  for (const [k, v] of Object.entries(seen)) assert.ok(v >= 50, `edge case '${k}' reached only ${v} times`);
});

test('ring matches the model when the producer mostly fills (push-heavy) and the consumer holds', () => {
  const heavy: fc.Arbitrary<Op> = fc.oneof(
    { weight: 10, arbitrary: fc.record({ op: fc.constant('push' as const), len: lenArb }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('publish' as const) }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('next' as const) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('release' as const), withOffset: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('syncRead' as const) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('canFit' as const), len: lenArb }) },
  );
  fc.assert(
    fc.property(fc.constantFrom(64, 128, 256), startArb, fc.array(heavy, { minLength: 1, maxLength: SOAK ? 3000 : 500, size: 'max' }),
      (cap, start, ops) => { runScenario(cap, start, ops); }),
    { seed: 0x5eed2, numRuns: SOAK ? 10_000 : 300 },
  );
});
