/**
 * Regressions found in review: a shard must never throw on a full-ish outbound ring or a frame of
 * the largest allowed size (a throw restarts the shard and drops every room's state on it).
 * The real Handler over real rings, driven record by record.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, encode } from '@msgpack/msgpack';
import { Handler } from '../workers/handler.js';
import { RingReader, RingWriter, createRing } from '../engine/ring/index.js';
import { IN_FRAME, IN_FRAME_BODY, OUT_BODY, getU32, putU32 } from '../engine/protocol/records.js';
import { inServerPub } from './helpers/handler.js';

const OPTS = {
  historyLimit: 10, maxHistBytes: 1 << 20, roomTtlMs: 0, maxBodyDepth: 32, historyBudgetBytes: 64 << 20,
  maxRoomsPerShard: 1000, roomCreateRate: 1000, roomCreateBurst: 1000, maxCursorsPerRoom: 100, maxCursorsPerShard: 1000,
  cidWindowMessages: 1000, cidWindowMs: 600_000,
};

function inFrame(conn: number, frame: Uint8Array, user = ''): Uint8Array {
  const b = new Uint8Array(IN_FRAME_BODY + frame.byteLength + user.length);
  b[0] = IN_FRAME;
  b[1] = user.length;
  putU32(b, 4, conn);
  b.set(frame, IN_FRAME_BODY);
  for (let i = 0; i < user.length; i++) b[IN_FRAME_BODY + frame.byteLength + i] = user.charCodeAt(i);
  return b;
}

test('an err to a long room name on a nearly full outbound ring waits for room instead of throwing', () => {
  const cap = 65536;
  // Put the write position 104 bytes before the end with 288 bytes free: 184 + 2 x 32624 = cap - 104.
  // The err (~200 B with its record header) does not fit in the 104-byte tail, and the tail it
  // skips plus the record (~304 B) is more than is free. (Before the handler sized records exactly
  // this test had 704 B free, which the exact size now fits in.)
  const sab = createRing(cap, 184);
  const out = new RingWriter(sab);
  for (let i = 0; i < 2; i++) assert.ok(out.push(new Uint8Array(32616)));
  out.publish();
  assert.equal(out.freeBytes(), 288);
  const h = new Handler(out, OPTS);
  const rec = inFrame(7, encode({ t: 'pub', room: 'r'.repeat(128), body: 1, ref: 3 }));
  let need = -1;
  assert.doesNotThrow(() => { need = h.handle(rec, 0, rec.byteLength); });
  assert.ok(need > 288, `asks for more room than is free: ${need}`);
  // Once the consumer frees the ring, the same record is answered with not_joined.
  const reader = new RingReader(sab);
  while (reader.next() >= 0) reader.release();
  reader.syncRead();
  assert.equal(h.handle(rec, 0, rec.byteLength), 0);
  out.publish();
  assert.ok(reader.next() >= 0);
  assert.equal(reader.bytes[reader.offset], 1, 'an OUT_SEND record');
  assert.equal(getU32(reader.bytes, reader.offset + 4), 7);
  const body = reader.bytes.slice(reader.offset + OUT_BODY, reader.offset + reader.length);
  assert.ok(Buffer.from(body).includes(Buffer.from('not_joined')));
  h.rooms.dispose();
});

test('a pub whose body is as large as the largest allowed frame (1 MiB) is published, not a crash', () => {
  const sab = createRing(8 << 20);
  const out = new RingWriter(sab);
  const reader = new RingReader(sab);
  const h = new Handler(out, OPTS);
  const join = inFrame(1, encode({ t: 'join', room: 'big' }), 'u'.repeat(64));
  assert.equal(h.handle(join, 0, join.byteLength), 0);
  const frame = encode({ t: 'pub', room: 'big', body: new Uint8Array((1 << 20) - 40) });
  assert.ok(frame.byteLength <= 1 << 20, `frame of ${frame.byteLength} bytes`);
  const pub = inFrame(1, frame);
  assert.doesNotThrow(() => assert.equal(h.handle(pub, 0, pub.byteLength), 0));
  out.publish();
  let records = 0;
  while (reader.next() >= 0) { records++; reader.release(); }
  assert.equal(records, 3, 'presence, joined, then the msg with its ack');
  assert.equal(h.rooms.get('big')!.seq, 1);
  h.rooms.dispose();
  assert.equal(h.rooms.history.bytes, 0);
});

test('a hist page holds at least one message even when that message alone is over maxHistBytes', () => {
  const sab = createRing(1 << 20);
  const out = new RingWriter(sab);
  const reader = new RingReader(sab);
  const h = new Handler(out, { ...OPTS, maxHistBytes: 4096 });
  const join = inFrame(1, encode({ t: 'join', room: 'h' }), 'u');
  assert.equal(h.handle(join, 0, join.byteLength), 0);
  for (const size of [100, 6000, 100]) {
    const pub = inFrame(1, encode({ t: 'pub', room: 'h', body: new Uint8Array(size) }));
    assert.equal(h.handle(pub, 0, pub.byteLength), 0);
  }
  out.publish();
  while (reader.next() >= 0) reader.release();
  reader.syncRead();
  const pages: number[][] = [];
  for (const q of [{ before: 3 }, { before: 2 }, { after: 1 }]) {
    const f = inFrame(1, encode({ t: 'hist', room: 'h', limit: 10, ...q }));
    assert.equal(h.handle(f, 0, f.byteLength), 0);
    out.publish();
    assert.ok(reader.next() >= 0);
    const frame = decode(reader.bytes.slice(reader.offset + OUT_BODY, reader.offset + reader.length)) as { msgs: { seq: number }[] };
    pages.push(frame.msgs.map((m) => m.seq));
    reader.release();
    reader.syncRead();
  }
  // before 3: seq 2 (6 KB) alone is over 4096 but still comes back; before 2: seq 1; after 1: seq 2 alone.
  assert.deepEqual(pages, [[2], [1], [2]]);
  h.rooms.dispose();
});

/** Pushes records spanning `total` ring bytes (each at most half the ring, so none is refused). */
function fill(out: RingWriter, total: number): void {
  const half = out.capacity / 2;
  while (total > 0) {
    const span = Math.min(total, half);
    assert.ok(out.push(new Uint8Array(span - 8)), `filler of span ${span}`);
    total -= span;
  }
}

/**
 * Puts an outbound ring (whose reader has consumed everything) into the state "write position
 * `tail` bytes before the end, `free` bytes free" (free >= tail, both multiples of 8).
 */
function position(out: RingWriter, reader: RingReader, tail: number, free: number): void {
  const cap = out.capacity;
  const drain = (): void => { out.publish(); while (reader.next() >= 0) reader.release(); reader.syncRead(); };
  drain();
  const start = free - tail; // where the occupied span begins: it then ends at cap - tail
  // The published WRITE counter is word 0 of the ring header (engine/ring/layout.ts SLOT_WRITE).
  const pos = (Atomics.load(new Uint32Array(out.bytes.buffer, 0, 1), 0) >>> 0) & (cap - 1);
  const toEnd = cap - pos;
  // Move the write position to `start` with fillers that never straddle the end, and consume them.
  if (start >= pos) fill(out, start - pos);
  else { fill(out, toEnd); fill(out, start); }
  drain();
  fill(out, cap - free);
  out.publish();
  assert.equal(out.freeBytes(), free);
}

test('every record kind is sized by its writer: wherever the ring wraps and however little is free, a handler answers or asks for bytes that then suffice', () => {
  const cap = 65536;
  type Scenario = { name: string; prepare: (h: Handler, run: (rec: Uint8Array) => void) => Uint8Array };
  const j = (room: string, user: string, extra: Record<string, unknown> = {}): Uint8Array => inFrame(1, encode({ t: 'join', room, ...extra }), user);
  const long = 'L'.repeat(128);
  const scenarios: Scenario[] = [
    { name: 'err (not_joined) to a long room', prepare: () => inFrame(7, encode({ t: 'pub', room: long, body: 'x'.repeat(300), ref: 0xffffffff })) },
    { name: 'join: presence + joined, long names', prepare: () => j(long, 'u'.repeat(64), { ref: 70000 }) },
    { name: 'join with since: joined.missed', prepare: (_h, run) => {
      run(j('m', 'writer'));
      for (let i = 0; i < 6; i++) run(inFrame(1, encode({ t: 'pub', room: 'm', body: 'b'.repeat(500 * i) })));
      return inFrame(2, encode({ t: 'join', room: 'm', since: 1 }), 'reader');
    } },
    { name: 'pub: msg + ack in one record', prepare: (_h, run) => { run(j(long, 'p'.repeat(64))); return inFrame(1, encode({ t: 'pub', room: long, body: 'é'.repeat(1500), ref: 1 << 20 })); } },
    { name: 'server publish: msg + server ack', prepare: () => inServerPub(0xfffffff0, long, 's'.repeat(64), { big: 'z'.repeat(2000) }) },
    { name: 'hist page', prepare: (_h, run) => {
      run(j('h', 'writer'));
      for (let i = 0; i < 8; i++) run(inFrame(1, encode({ t: 'pub', room: 'h', body: new Uint8Array(300 * i) })));
      return inFrame(1, encode({ t: 'hist', room: 'h', limit: 500, ref: 3 }));
    } },
    { name: 'who', prepare: (_h, run) => {
      for (let i = 0; i < 40; i++) run(inFrame(10 + i, encode({ t: 'join', room: 'w' }), `user-${i}-${'q'.repeat(40)}`));
      return inFrame(10, encode({ t: 'who', room: 'w', ref: 9 }));
    } },
    { name: 'leave: left + presence', prepare: (_h, run) => { run(j(long, 'v'.repeat(64))); return inFrame(1, encode({ t: 'leave', room: long, ref: 5 })); } },
    { name: 'read ack', prepare: (_h, run) => { run(j('rd', 'r')); run(inFrame(1, encode({ t: 'pub', room: 'rd', body: 1 }))); return inFrame(1, encode({ t: 'read', room: 'rd', seq: 1, ref: 4 })); } },
    { name: 'room_limit refusal', prepare: (_h, run) => { run(j('only', 'x')); return j(long, 'y'); } },
  ];
  let combos = 0;
  for (const sc of scenarios) {
    for (const tail of [8, 16, 56, 104, 200, 408, 1000, 2048, 4104]) {
      for (let free = tail; free <= tail + 5000; free += 40) {
        const sab = createRing(cap);
        const out = new RingWriter(sab);
        const reader = new RingReader(sab);
        const h = new Handler(out, { ...OPTS, historyLimit: 100, maxRoomsPerShard: sc.name === 'room_limit refusal' ? 1 : 1000 });
        const run = (rec: Uint8Array): void => {
          assert.equal(h.handle(rec, 0, rec.byteLength), 0, `${sc.name}: preparing`);
          out.publish(); while (reader.next() >= 0) reader.release(); reader.syncRead();
        };
        const rec = sc.prepare(h, run);
        position(out, reader, tail, free);
        let need = 0;
        assert.doesNotThrow(() => { need = h.handle(rec, 0, rec.byteLength); }, `${sc.name}, tail ${tail}, free ${free}`);
        if (need > 0) {
          assert.ok(need > free && need <= cap, `${sc.name}, tail ${tail}, free ${free}: asked for ${need}`);
          out.publish(); while (reader.next() >= 0) reader.release(); reader.syncRead();
          assert.equal(h.handle(rec, 0, rec.byteLength), 0, `${sc.name}, tail ${tail}, free ${free}: ${need} bytes were enough`);
        }
        combos++;
        h.rooms.dispose();
      }
    }
  }
  assert.ok(combos > 10_000, `${combos} combinations`);
});
