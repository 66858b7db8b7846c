/**
 * Unit tests of the SPSC record ring (engine/ring), one thread, both ends in hand. Each test
 * states one rule of docs/RING.md and checks it at its edges: empty, full, the wrap, the largest
 * record, counters that cross 2^32, batching, and the wake-up bookkeeping.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import {
  createRing, initRing, RingReader, RingWriter, HEADER_BYTES, maxRecordBytes, recordSpan, ringByteLength,
} from '../engine/ring/index.js';
import { SKIP, SLOT_READ, SLOT_SLEEPING, SLOT_WRITE } from '../engine/ring/layout.js';

guardHandles();

/** A payload whose bytes say which record it is: byte j of record `id` is (id * 31 + j * 7) & 255. */
function payload(id: number, len: number): Uint8Array {
  const u = new Uint8Array(len);
  for (let j = 0; j < len; j++) u[j] = (id * 31 + j * 7 + 1) & 255;
  return u;
}

function pair(capacity: number, startIndex = 0): { w: RingWriter; r: RingReader; sab: SharedArrayBuffer } {
  const sab = createRing(capacity, startIndex);
  return { w: new RingWriter(sab), r: new RingReader(sab), sab };
}

/** Reads one record, checks it is record `id` of `len` bytes, releases and syncs it. */
function expectRecord(r: RingReader, id: number, len: number): number {
  const got = r.next();
  assert.equal(got, len, `record ${id}: length`);
  assert.deepEqual(r.view(), payload(id, len), `record ${id}: bytes`);
  const off = r.offset;
  r.release(off);
  r.syncRead();
  return off;
}

/**
 * A pending Atomics.waitAsync does not keep a Node 20 event loop alive, not even on the main thread
 * and not even with a timeout: hold a ref'd timer until `p` settles.
 */
async function keptAlive<T>(p: Promise<T>): Promise<T> {
  const t = setInterval(() => undefined, 1 << 30);
  try { return await p; } finally { clearInterval(t); }
}

function header(sab: SharedArrayBuffer, byteOffset = 0): Int32Array {
  return new Int32Array(sab, byteOffset, HEADER_BYTES / 4);
}

test('layout arithmetic: recordSpan, maxRecordBytes, ringByteLength', () => {
  // 8-byte header (u32 length + 4 bytes padding), span rounded up to a multiple of 8
  assert.equal(recordSpan(0), 8);
  assert.equal(recordSpan(1), 16);
  assert.equal(recordSpan(4), 16);
  assert.equal(recordSpan(8), 16);
  assert.equal(recordSpan(9), 24);
  assert.equal(recordSpan(16), 24);
  assert.equal(recordSpan(17), 32);
  for (let len = 0; len < 200; len++) {
    const span = recordSpan(len);
    assert.equal(span % 8, 0, `span of ${len} is a multiple of 8`);
    assert.ok(span >= 8 + len && span < 16 + len, `span of ${len} is the header, the payload and < 8 padding`);
  }
  assert.equal(maxRecordBytes(64), 24);
  assert.equal(maxRecordBytes(1 << 20), (1 << 19) - 8);
  assert.equal(recordSpan(maxRecordBytes(4096)), 2048, 'a maximal record spans exactly half the ring');
  assert.equal(recordSpan(maxRecordBytes(4096) + 1), 2056, 'one byte more spans an 8-byte unit more');
  assert.equal(ringByteLength(1024), HEADER_BYTES + 1024);
});

test('capacity and placement are validated', () => {
  assert.throws(() => createRing(100), RangeError);
  assert.throws(() => createRing(32), RangeError);
  assert.throws(() => createRing(2 ** 31), RangeError);
  assert.throws(() => createRing(64, 2), RangeError, 'startIndex must be a multiple of 8');
  assert.throws(() => createRing(64, 4), /startIndex must be a multiple of 8/, '4 mod 8 would misalign every payload');
  assert.throws(() => createRing(64, 0xfffffffc | 0), /startIndex must be a multiple of 8/);
  assert.ok(createRing(64, 0xfffffff8 | 0));
  const sab = new SharedArrayBuffer(ringByteLength(64) + 64);
  assert.throws(() => initRing(sab, 64, { byteOffset: 32 }), RangeError, 'offset not a multiple of 64');
  assert.throws(() => initRing(sab, 64, { byteOffset: 128 }), RangeError, 'ring does not fit');
  assert.throws(() => new RingReader(sab), TypeError, 'uninitialised header');
  initRing(sab, 64, { byteOffset: 64 });
  assert.throws(() => new RingWriter(sab), TypeError, 'header is at 64, not 0');
  const w = new RingWriter(sab, 64);
  assert.equal(w.capacity, 64);
  assert.equal(w.maxRecordBytes, 24);
});

test('empty ring: next() is -1, hasNext() false, read() null, depth 0', () => {
  const { w, r } = pair(256);
  assert.equal(r.next(), -1);
  assert.equal(r.hasNext(), false);
  assert.equal(r.read(), null);
  assert.equal(r.depth(), 0);
  assert.equal(w.depth(), 0);
  assert.equal(r.drain(() => assert.fail('nothing to drain')), 0);
  // and again after a record went through
  assert.ok(w.write(payload(1, 10)));
  expectRecord(r, 1, 10);
  assert.equal(r.next(), -1);
  assert.equal(r.hasNext(), false);
  assert.equal(r.depth(), 0);
});

test('full: reserve gives -1, push false, nothing is overwritten', () => {
  const { w, r } = pair(64);
  // 8-byte payloads span 16 bytes: exactly 4 fill the 64-byte ring.
  for (let i = 0; i < 4; i++) assert.ok(w.push(payload(i, 8)), `record ${i} fits`);
  w.publish();
  assert.equal(w.depth(), 64);
  assert.equal(w.reserve(0), -1, 'not even an empty record fits');
  assert.equal(w.push(payload(99, 8)), false);
  assert.equal(w.write(payload(98, 1)), false);
  assert.equal(w.canFit(0), false);
  // Handing out and releasing without syncRead() frees nothing for the producer yet.
  assert.equal(r.next(), 8);
  r.release();
  assert.equal(w.push(payload(97, 8)), false, 'release is not visible before syncRead');
  r.syncRead();
  assert.equal(w.canFit(8), true);
  assert.equal(w.canFit(9), false, '9 bytes span 24 > the 16 freed');
  assert.ok(w.push(payload(4, 8)), 'space released by syncRead is reused');
  assert.equal(w.push(payload(96, 0)), false);
  w.publish();
  for (let i = 1; i <= 4; i++) expectRecord(r, i, 8);
  assert.equal(r.next(), -1);
});

test('exact fit at the wrap: a record ending at the end of the data area, the next at 0', () => {
  const { w, r, sab } = pair(64);
  for (let i = 0; i < 3; i++) assert.ok(w.write(payload(i, 8)));
  for (let i = 0; i < 3; i++) expectRecord(r, i, 8);
  // write counter is at 48: an 8-byte payload spans 16 = the tail exactly.
  const off = w.reserve(8);
  assert.equal(off, 56, 'no skip: payload right after the 8-byte record header at 48');
  w.bytes.set(payload(3, 8), off);
  w.commit();
  assert.ok(w.write(payload(4, 5)));
  const words = new Uint32Array(sab, HEADER_BYTES, 16);
  assert.equal(words[12], 8, 'length word at byte 48, no skip marker');
  assert.equal(expectRecord(r, 3, 8), 56);
  assert.equal(expectRecord(r, 4, 5), 8, 'the following record starts at offset 0');
  assert.equal(Atomics.load(header(sab), SLOT_WRITE), 64 + 16);
});

test('skip-marker wrap: a record that does not fit in the tail goes to 0, the tail is skipped', () => {
  const { w, r, sab } = pair(64);
  for (let i = 0; i < 3; i++) assert.ok(w.write(payload(i, 8)));
  for (let i = 0; i < 3; i++) expectRecord(r, i, 8);
  // 16-byte tail left at 48; a 16-byte payload spans 24.
  assert.equal(w.canFit(16), true);
  assert.equal(w.reserve(16), 8, 'placed at the start of the data area');
  w.bytes.set(payload(5, 16), 8);
  w.commit();
  w.publish();
  const words = new Uint32Array(sab, HEADER_BYTES, 16);
  assert.equal(words[12], SKIP, 'skip marker at byte 48');
  assert.equal(w.depth(), 16 + 24, 'the skipped tail counts as used until released');
  // Space accounting includes the skip: 64 - 40 = 24 left, at position 24 (tail 40).
  assert.equal(w.canFit(16), true);
  assert.equal(w.canFit(17), false);
  assert.equal(expectRecord(r, 5, 16), 8);
  assert.equal(r.depth(), 0);
  assert.equal(Atomics.load(header(sab), SLOT_READ), 64 + 24);
});

test('skip wrap when the consumer holds records: space for tail + record is required', () => {
  const { w, r } = pair(64);
  for (let i = 0; i < 3; i++) assert.ok(w.write(payload(i, 8)));    // 0..48
  assert.equal(r.next(), 8);
  r.release();
  r.syncRead();                                                      // 16 free at 0..16
  // At 48 a 16-byte payload needs the 16-byte tail plus 24 at 0: only 16 + 16 free.
  assert.equal(w.reserve(16), -1);
  // An 8-byte payload fits the tail exactly, no wrap needed.
  assert.ok(w.write(payload(3, 8)));
  // Now at 64 (= 0): 16 free at 0..16.
  assert.ok(w.write(payload(4, 8)));
  assert.equal(w.reserve(0), -1);
  for (const id of [1, 2, 3, 4]) expectRecord(r, id, 8);
});

test('a record of exactly maxRecordBytes fits an empty ring at every start position', () => {
  for (const cap of [64, 256]) {
    const max = maxRecordBytes(cap);
    for (const base of [0, 0xffffff00 | 0, (2 ** 32 - cap) | 0]) {
      for (let p = 0; p < cap; p += 8) {
        const { w, r, sab } = pair(cap, (base + p) | 0);
        const id = p + cap;
        assert.ok(w.canFit(max), `cap ${cap} pos ${p}`);
        assert.ok(w.write(payload(id, max)), `cap ${cap} base ${base} pos ${p}: max record fits`);
        const wraps = recordSpan(max) > cap - p;
        const off = expectRecord(r, id, max);
        assert.equal(off, wraps ? 8 : p + 8, `cap ${cap} pos ${p}: payload offset`);
        if (wraps) assert.equal(new Uint32Array(sab, HEADER_BYTES)[p >>> 2], SKIP);
        // and a second one right after, through the released space
        assert.ok(w.write(payload(id + 1, max)), `cap ${cap} pos ${p}: second max record fits`);
        expectRecord(r, id + 1, max);
      }
    }
  }
});

test('every payload is 8-byte aligned in the buffer: reserve, next and the view, across wraps', () => {
  // V8 copies into/out of a SharedArrayBuffer 8 bytes at a time only when both ends are 8-aligned.
  for (const byteOffset of [0, 64, 192]) {
    const cap = 256;
    const sab = new SharedArrayBuffer(byteOffset + ringByteLength(cap) + 64);
    initRing(sab, cap, { byteOffset, startIndex: 0xffffff00 | 0 });
    const w = new RingWriter(sab, byteOffset);
    const r = new RingReader(sab, byteOffset);
    assert.equal(w.bytes.byteOffset % 8, 0, 'data area starts 8-aligned');
    let seed = 99;
    const rand = (n: number): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) % n; };
    let sent = 0;
    let got = 0;
    const lens: number[] = [];
    while (got < 2000) {
      for (let k = rand(4); k >= 0; k--) {
        const len = rand(6) === 0 ? w.maxRecordBytes : rand(w.maxRecordBytes + 1);
        const off = w.reserve(len);
        if (off < 0) break;
        assert.equal(off % 8, 0, `reserve(${len}) offset ${off}`);
        const keep = rand(2) === 0 ? len : rand(len + 1);
        w.bytes.set(payload(sent, keep), off);
        w.commit(keep);
        lens.push(keep);
        sent++;
      }
      w.publish();
      while (r.next() >= 0) {
        assert.equal(r.offset % 8, 0, `record ${got} offset ${r.offset}`);
        const v = r.view();
        assert.equal(v.byteOffset % 8, 0, `record ${got} view at ${v.byteOffset} of the buffer`);
        assert.deepEqual(v, payload(got, lens[got]!), `record ${got}`);
        r.release();
        got++;
      }
      r.syncRead();
    }
    assert.equal(got, sent);
  }
});

test('maxRecordBytes + 1 is a RangeError that names the limit', () => {
  const { w } = pair(1024);
  const max = maxRecordBytes(1024);
  assert.equal(max, 504);
  assert.throws(() => w.reserve(max + 1), (e: unknown) =>
    e instanceof RangeError && e.message.includes('maxRecordBytes') && e.message.includes(String(max)) &&
    e.message.includes('1024 / 2 - 8'));
  assert.throws(() => w.push(new Uint8Array(max + 1)), RangeError);
  assert.throws(() => w.write(new Uint8Array(10_000)), /maxRecordBytes 504/);
  assert.throws(() => w.reserve(-1), RangeError);
  assert.throws(() => w.reserve(1.5), RangeError);
  assert.throws(() => w.reserve(NaN), RangeError);
  assert.throws(() => w.canFit(max + 1), /maxRecordBytes 504/);
  // the refused record left nothing behind
  assert.equal(w.depth(), 0);
  assert.ok(w.write(new Uint8Array(max)));
});

test('zero-length records', () => {
  const { w, r } = pair(64);
  for (let i = 0; i < 8; i++) assert.ok(w.push(new Uint8Array(0)), `empty record ${i} (8 bytes each)`);
  assert.equal(w.push(new Uint8Array(0)), false, '8 x 8 bytes fill 64');
  assert.equal(r.next(), -1, 'not published yet');
  w.publish();
  assert.equal(r.hasNext(), true);
  let n = 0;
  assert.equal(r.drain((_b, _o, len) => { assert.equal(len, 0); n++; }), 8);
  assert.equal(n, 8);
  assert.equal(r.hasNext(), false);
  // A zero-length record is also a valid record at the tail (8 bytes left exactly).
  assert.ok(w.write(payload(1, 24)));                   // 0..32
  assert.ok(w.write(payload(2, 16)));                   // 32..56
  expectRecord(r, 1, 24);
  expectRecord(r, 2, 16);
  assert.ok(w.write(new Uint8Array(0)));                // 56..64, no skip
  assert.equal(r.next(), 0);
  assert.equal(r.offset, 64, 'payload offset of an empty record at the very end');
  assert.equal(r.view().byteLength, 0);
  r.release();
  const out = r.read();
  assert.equal(out, null);
});

test('reserve without commit is invisible; the next reserve replaces it', () => {
  const { w, r } = pair(256);
  const a = w.reserve(40);
  assert.equal(a, 8);
  w.bytes.set(payload(7, 40), a);
  w.publish();
  assert.equal(r.next(), -1, 'an uncommitted reservation is not a record');
  assert.equal(w.depth(), 0);
  const b = w.reserve(10);
  assert.equal(b, a, 'the replacement starts where the forgotten one did');
  w.bytes.set(payload(8, 10), b);
  w.commit();
  w.publish();
  expectRecord(r, 8, 10);
  assert.equal(r.next(), -1);
  assert.throws(() => w.commit(), /without an open reservation/, 'the replaced reservation is gone too');
});

test('a failed reserve forgets an open reservation', () => {
  const { w, r } = pair(128);
  assert.ok(w.write(payload(1, 56)));                   // 0..64
  assert.ok(w.write(payload(2, 40)));                   // 64..112
  assert.equal(w.reserve(8), 120);                      // open, not committed (fills the tail exactly)
  assert.equal(w.reserve(16), -1);                      // needs 16 (tail) + 24: full
  assert.throws(() => w.commit(), /without an open reservation/);
  expectRecord(r, 1, 56);
  expectRecord(r, 2, 40);
  assert.equal(r.next(), -1);
});

test('commit shorter than reserved takes only the shorter span; longer is refused', () => {
  const { w, r } = pair(256);
  const off = w.reserve(100);
  w.bytes.set(payload(3, 30), off);
  assert.throws(() => w.commit(101), RangeError);
  assert.throws(() => w.commit(-1), RangeError);
  w.commit(30);
  w.publish();
  assert.equal(w.depth(), recordSpan(30));
  expectRecord(r, 3, 30);
  // a shortened record that had reserved a wrap still wraps (its bytes are at 0)
  const { w: w2, r: r2 } = pair(128);
  assert.ok(w2.write(payload(0, 56))); r2.read();       // at 64
  assert.ok(w2.write(payload(1, 40))); r2.read();       // at 112, tail 16
  const o2 = w2.reserve(16);                            // span 24 > 16: wraps
  assert.equal(o2, 8);
  w2.bytes.set(payload(4, 8), o2);
  w2.commit(8);                                         // 8 (span 16) would have fit the tail; still at 0
  w2.publish();
  assert.equal(expectRecord(r2, 4, 8), 8);
  assert.equal(w2.depth(), 0);
  // commit(0) makes an empty record
  assert.ok(w2.reserve(16) >= 0);
  w2.commit(0);
  w2.publish();
  assert.equal(r2.next(), 0);
});

test('commit without a reservation throws, and so does a second commit', () => {
  const { w } = pair(64);
  assert.throws(() => w.commit(), /without an open reservation/);
  w.reserve(4);
  w.commit();
  assert.throws(() => w.commit(), /without an open reservation/);
});

test('release must follow hand-out order', () => {
  const { w, r } = pair(256);
  for (let i = 0; i < 3; i++) assert.ok(w.push(payload(i, 20)));
  w.publish();
  assert.equal(r.next(), 20);
  const first = r.offset;
  assert.equal(r.next(), 20);
  const second = r.offset;
  assert.notEqual(first, second);
  assert.throws(() => r.release(second), /out of order/);
  // the refused release changed nothing
  r.syncRead();
  assert.equal(r.depth(), 3 * 32);
  // records stay intact while handed out
  assert.deepEqual(r.bytes.subarray(first, first + 20), payload(0, 20));
  r.release(first);
  r.release(second);
  assert.throws(() => r.release(), /no record handed out/, 'the third is not handed out yet');
  r.syncRead();
  assert.equal(r.depth(), 32);
  expectRecord(r, 2, 20);
});

test('release out of order across a skip marker', () => {
  const { w, r } = pair(128);
  assert.ok(w.write(payload(0, 56))); r.read();        // at 64
  assert.ok(w.write(payload(0, 32))); r.read();        // at 104, tail 24
  assert.ok(w.push(payload(1, 8)));                     // 104..120
  assert.ok(w.push(payload(2, 8)));                     // tail 8 skipped, 0..16
  w.publish();
  r.next(); const a = r.offset;
  r.next(); const b = r.offset;
  assert.equal(a, 112);
  assert.equal(b, 8);
  assert.throws(() => r.release(b), /out of order/);
  r.release(a);
  r.release(b);
  r.syncRead();
  assert.equal(r.depth(), 0);
});

test('release with nothing handed out throws', () => {
  const { w, r } = pair(64);
  assert.throws(() => r.release(), /no record handed out/);
  assert.ok(w.write(payload(1, 4)));
  assert.throws(() => r.release(), /no record handed out/, 'published but not handed out');
  r.next();
  r.release();
  assert.throws(() => r.release(), /no record handed out/);
  assert.ok(w.write(payload(2, 4)));
  r.next();
  r.releaseAll();
  assert.throws(() => r.release(), /no record handed out/);
});

test('releaseAll releases every handed-out record and nothing else', () => {
  const { w, r } = pair(256);
  for (let i = 0; i < 4; i++) assert.ok(w.push(payload(i, 9)));
  w.publish();
  r.next(); r.next();
  r.releaseAll();
  r.syncRead();
  assert.equal(r.depth(), 2 * 24);
  expectRecord(r, 2, 9);
  expectRecord(r, 3, 9);
});

test('counters starting near 2^32 wrap correctly over many laps', () => {
  for (const start of [0xffffff00 | 0, 0xfffffff8 | 0, (2 ** 31 - 64) | 0, -4096]) {
    const cap = 256;
    const { w, r, sab } = pair(cap, start);
    const h = header(sab);
    let seed = 12345;
    const rand = (n: number): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) % n; };
    let sent = 0;
    let got = 0;
    const lens: number[] = [];
    while (got < 3000) {
      // write a burst until full or up to 5
      for (let k = 0; k < 5; k++) {
        const len = rand(8) === 0 ? maxRecordBytes(cap) : rand(40);
        if (!w.push(payload(sent, len))) break;
        lens.push(len);
        sent++;
      }
      w.publish();
      const depth = w.depth();
      assert.ok(depth <= cap, `depth ${depth} within capacity`);
      const n = rand(4);
      for (let k = 0; k < n; k++) {
        if (r.next() < 0) break;
        assert.deepEqual(r.view(), payload(got, lens[got]!), `record ${got}`);
        r.release();
        got++;
      }
      r.syncRead();
    }
    // drain the rest
    while (r.next() >= 0) {
      assert.deepEqual(r.view(), payload(got, lens[got]!), `record ${got}`);
      r.release();
      got++;
    }
    r.syncRead();
    assert.equal(got, sent);
    assert.equal(r.depth(), 0);
    // the counters crossed 2^32 (or, for the positive start, the i32 sign boundary at 2^31)
    const toCross = start < 0 ? 2 ** 32 - (start >>> 0) : 2 ** 31 - start;
    assert.ok(((Atomics.load(h, SLOT_WRITE) - start) >>> 0) > toCross + 10 * cap, `start ${start >>> 0}: many laps past the boundary`);
  }
});

test('publish batching: nothing is visible before publish()', () => {
  const { w, r } = pair(1024);
  for (let i = 0; i < 10; i++) assert.ok(w.push(payload(i, i * 3)));
  assert.equal(r.hasNext(), false);
  assert.equal(r.next(), -1);
  assert.equal(r.depth(), 0);
  w.publish();
  assert.equal(r.hasNext(), true);
  for (let i = 0; i < 5; i++) expectRecord(r, i, i * 3);
  // records pushed after the publish stay invisible even while older ones are read
  assert.ok(w.push(payload(10, 5)));
  for (let i = 5; i < 10; i++) expectRecord(r, i, i * 3);
  assert.equal(r.next(), -1);
  w.publish();
  expectRecord(r, 10, 5);
  // publish with nothing new is a no-op
  w.publish();
  assert.equal(r.next(), -1);
});

test('drain hands out bytes/offset/length, honours max, syncs once', () => {
  const { w, r, sab } = pair(1024);
  for (let i = 0; i < 10; i++) assert.ok(w.push(payload(i, 17)));
  w.publish();
  const seen: number[] = [];
  assert.equal(r.drain((bytes, off, len) => {
    assert.equal(bytes, r.bytes);
    assert.deepEqual(bytes.subarray(off, off + len), payload(seen.length, 17));
    seen.push(off);
    // nothing is published to the producer while the batch runs
    assert.equal(Atomics.load(header(sab), SLOT_READ), 0);
  }, 4), 4);
  assert.equal(Atomics.load(header(sab), SLOT_READ), 4 * 32);
  assert.equal(r.drain(() => { seen.push(0); }), 6);
  assert.equal(seen.length, 10);
  assert.equal(r.depth(), 0);
});

test('notify count: a busy ring whose consumer never parks makes no notify', () => {
  const { w, r } = pair(4096);
  let got = 0;
  for (let round = 0; round < 2000; round++) {
    for (let k = 0; k < 7; k++) assert.ok(w.write(payload(round * 7 + k, (round + k) % 100)));
    got += r.drain(() => undefined);
  }
  assert.equal(got, 14000);
  assert.equal(w.notifies, 0);
  assert.equal(r.parks, 0);
});

test('waitForData: parked consumer is notified exactly once by the next publish', async () => {
  const { w, r, sab } = pair(256);
  assert.equal(r.hasNext(), false);
  const p = r.waitForData();
  assert.equal(Atomics.load(header(sab), SLOT_SLEEPING), 1, 'consumer announced it is parked');
  assert.equal(r.parks, 1);
  assert.ok(w.push(payload(1, 3)));
  assert.equal(w.notifies, 0, 'push alone does not publish or notify');
  w.publish();
  assert.equal(w.notifies, 1);
  assert.equal(await p, true);
  assert.equal(Atomics.load(header(sab), SLOT_SLEEPING), 0, 'consumer cleared its own flag');
  expectRecord(r, 1, 3);
  assert.ok(w.write(payload(2, 3)));
  assert.equal(w.notifies, 1, 'an awake consumer costs no notify');
  expectRecord(r, 2, 3);
});

test('publishDeferred: records visible at once, the notify owed only while the consumer is parked, settled by notify()', async () => {
  const { w, r, sab } = pair(256);
  assert.ok(w.push(payload(1, 3)));
  assert.equal(w.publishDeferred(), false, 'an awake consumer is owed nothing');
  assert.equal(w.notifies, 0);
  expectRecord(r, 1, 3);                     // visible without any notify
  const p = r.waitForData();
  assert.ok(w.push(payload(2, 4)));
  assert.equal(w.publishDeferred(), true, 'a parked consumer is owed a notify');
  assert.equal(w.notifies, 0, 'publishDeferred itself never notifies');
  assert.equal(Atomics.load(header(sab), SLOT_WRITE), 16 + 16, 'the write counter is published');
  w.notify();
  assert.equal(w.notifies, 1);
  assert.equal(await p, true);
  w.notify();
  assert.equal(w.notifies, 1, 'notify() to an awake consumer is free');
  expectRecord(r, 2, 4);
});

test('waitForDataSync: returns at once when data is there, false after its timeout on an empty ring', () => {
  const { w, r, sab } = pair(256);
  assert.equal(r.next(), -1);
  assert.ok(w.write(payload(1, 5)));
  assert.equal(r.waitForDataSync(10_000), true, 'the re-check after announcing sees the record');
  assert.equal(r.parks, 0);
  assert.equal(Atomics.load(header(sab), SLOT_SLEEPING), 0);
  expectRecord(r, 1, 5);
  const t0 = Date.now();
  assert.equal(r.waitForDataSync(30), false);
  assert.ok(Date.now() - t0 >= 25, 'it waited');
  assert.equal(r.parks, 1);
  assert.equal(Atomics.load(header(sab), SLOT_SLEEPING), 0, 'the consumer cleared its flag');
});

test('drain(beforeSync): runs after the last record while the producer still sees the bytes held', () => {
  const { w, r } = pair(64);
  assert.ok(w.write(payload(1, 8)));
  assert.ok(w.write(payload(2, 8)));
  let freeInside = -1;
  const seen: number[] = [];
  const n = r.drain((b, off) => { seen.push(b[off]!); }, Infinity, () => { freeInside = w.freeBytes(); });
  assert.equal(n, 2);
  assert.deepEqual(seen, [payload(1, 8)[0], payload(2, 8)[0]]);
  assert.equal(freeInside, 64 - 32, 'no space handed back before beforeSync ran');
  assert.equal(w.freeBytes(), 64, 'handed back after it');
  let called = false;
  assert.equal(r.drain(() => undefined, Infinity, () => { called = true; }), 0);
  assert.equal(called, false, 'not called for an empty drain');
});

test('waitForData re-check: data published after the ring was seen empty returns at once', async () => {
  const { w, r } = pair(256);
  assert.equal(r.next(), -1);               // seen empty at write counter 0
  assert.ok(w.write(payload(1, 5)));        // SLEEPING is 0: no notify
  assert.equal(w.notifies, 0);
  assert.equal(await r.waitForData(), true);
  assert.equal(r.parks, 0, 'the re-check after announcing found the record: no park');
  expectRecord(r, 1, 5);
});

test('waitForData with a timeout on an idle ring resolves false', async () => {
  const { r, sab } = pair(256);
  const t0 = Date.now();
  assert.equal(await keptAlive(r.waitForData(30)), false);
  assert.ok(Date.now() - t0 >= 25);
  assert.equal(Atomics.load(header(sab), SLOT_SLEEPING), 0);
  assert.equal(await r.waitForData(0), false);
});

test('waitForSpace: resolves when the consumer releases, false on timeout', async () => {
  const { w, r } = pair(64);
  for (let i = 0; i < 4; i++) assert.ok(w.push(payload(i, 8)));
  // not yet published: waitForSpace publishes first so the consumer can make room
  assert.equal(await keptAlive(w.waitForSpace(8, 20)), false);
  assert.equal(r.depth(), 64, 'published by waitForSpace');
  const p = w.waitForSpace(8);
  expectRecord(r, 0, 8);             // syncRead notifies the waiting producer
  assert.equal(await p, true);
  assert.ok(w.write(payload(4, 8)));
  for (let i = 1; i <= 4; i++) expectRecord(r, i, 8);
  assert.equal(await w.waitForSpace(maxRecordBytes(64)), true, 'empty ring: immediate');
  await assert.rejects(w.waitForSpace(maxRecordBytes(64) + 1), RangeError, 'would never fit: refused, not a wait forever');
});

test('depth() tracks published minus synced bytes from both ends', () => {
  const { w, r } = pair(1024, 0xfffffff0 | 0);
  assert.equal(w.depth(), 0);
  assert.ok(w.push(payload(0, 8)));                     // span 16: exactly the tail, ends at 2^32
  assert.equal(w.depth(), 0, 'unpublished bytes are not counted');
  w.publish();
  assert.equal(w.depth(), 16);
  assert.equal(r.depth(), 16);
  assert.ok(w.write(payload(1, 100)));
  assert.equal(r.depth(), 16 + 112);
  r.next(); r.release();
  assert.equal(r.depth(), 128, 'released but not synced');
  r.syncRead();
  assert.equal(r.depth(), 112);
  r.read();
  assert.equal(w.depth(), 0);
});

test('two rings side by side in one buffer do not touch each other', () => {
  const cap = 128;
  const sab = new SharedArrayBuffer(2 * ringByteLength(cap) + 64);
  initRing(sab, cap, { byteOffset: 0 });
  initRing(sab, cap, { byteOffset: ringByteLength(cap) + 64 });
  const w1 = new RingWriter(sab, 0);
  const w2 = new RingWriter(sab, ringByteLength(cap) + 64);
  const r1 = new RingReader(sab, 0);
  const r2 = new RingReader(sab, ringByteLength(cap) + 64);
  for (let i = 0; i < 200; i++) {
    assert.ok(w1.write(payload(i, maxRecordBytes(cap))));
    assert.ok(w2.write(payload(i + 1000, i % 50)));
    expectRecord(r2, i + 1000, i % 50);
    expectRecord(r1, i, maxRecordBytes(cap));
  }
});

test('drain: a record whose handler throws is released, not held for good', () => {
  const { w, r } = pair(64);
  assert.ok(w.write(new Uint8Array(0)));                // 0..8
  r.read();
  assert.ok(w.write(payload(1, 24)));                   // 8..40, span 32
  assert.throws(() => r.drain(() => { throw new Error('handler failed'); }), /handler failed/);
  assert.equal(r.depth(), 0, 'the failed record was released and synced');
  // Were it still held, a maximal record at 40 (tail 24, so 24 + 32 more bytes) would never fit
  // while the consumer, with nothing left to read, parks: both ends would wait forever.
  assert.equal(w.canFit(24), true);
  assert.throws(() => r.release(), /no record handed out/);
  assert.ok(w.write(payload(2, 24)));                   // tail 40..64 skipped, 0..32
  assert.ok(w.write(payload(3, 0)) === true);           // 32..40: the ring is exactly full
  assert.equal(w.freeBytes(), 0);
  const lens: number[] = [];
  assert.equal(r.drain((_b, _o, len) => { lens.push(len); }), 2);
  assert.deepEqual(lens, [24, 0]);
  assert.equal(r.depth(), 0);
});

test('freeBytes and waitForFree: room for several records at once', async () => {
  const { w, r } = pair(256);
  assert.equal(w.freeBytes(), 256);
  for (let i = 0; i < 4; i++) assert.ok(w.push(payload(i, 40)));   // 4 x 48
  assert.equal(w.freeBytes(), 256 - 192, 'counts committed bytes, published or not');
  assert.equal(await w.waitForFree(64), true, 'already free: immediate');
  await assert.rejects(w.waitForFree(257), RangeError);
  assert.equal(await keptAlive(w.waitForFree(100, 20)), false, 'times out while nothing is released');
  assert.equal(r.depth(), 192, 'waitForFree published first');
  const p = w.waitForFree(100);
  expectRecord(r, 0, 40);                              // 112 free: wakes the producer
  assert.equal(await p, true);
  assert.equal(w.freeBytes(), 112);
});

test('wake() releases a parked waitForData (shutdown)', async () => {
  const { r } = pair(256);
  const p = r.waitForData();
  assert.equal(r.parks, 1);
  r.wake();
  assert.equal(await p, true, 'resolves like a notify; the caller then finds no record');
  assert.equal(r.hasNext(), false);
});
