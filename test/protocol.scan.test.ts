/**
 * The pure frame scanner and writer, fed literal bytes (hex) and checked against an independent
 * MessagePack library (@msgpack/msgpack): no engine, no sockets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, encode } from '@msgpack/msgpack';
import {
  ClientFrame, E_BAD_FRAME, E_BAD_REQUEST, E_BAD_ROOM, E_UNKNOWN_TYPE, T_HIST, T_JOIN, T_PUB, T_READ,
  writeErr, writeHello, writeMsg,
} from '../engine/protocol/frames.js';
import { MsgWriter, SKIP_EXTENSION, SKIP_TOO_DEEP, SKIP_TRUNCATED, skipValue, skipValueFlat } from '../engine/protocol/msgpack.js';

const hex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'));
const scan = (bytes: Uint8Array): ClientFrame => {
  const f = new ClientFrame();
  f.scan(bytes, 0, bytes.byteLength);
  return f;
};

test('a literal pub frame: type, room span, body span, ref', () => {
  // {t:"pub", room:"r1", body:[1,"x"], ref:7}
  const b = hex('84 a1 74 a3 707562  a4 726f6f6d a2 7231  a4 626f6479 92 01 a1 78  a3 726566 07');
  const f = scan(b);
  assert.equal(f.error, 0, f.message);
  assert.equal(f.type, T_PUB);
  assert.equal(f.ref, 7);
  assert.equal(Buffer.from(b.subarray(f.roomStart, f.roomEnd)).toString(), 'r1');
  assert.deepEqual(decode(b.subarray(f.bodyStart, f.bodyEnd)), [1, 'x']);
});

test('frames made by another library scan to the same fields', () => {
  const f = scan(encode({ ref: 4294967295, t: 'hist', room: 'a:b@c.d-e_f', before: 10, limit: 900 }));
  assert.equal(f.error, 0, f.message);
  assert.equal(f.type, T_HIST);
  assert.equal(f.ref, 4294967295);
  assert.equal(f.before, 10);
  assert.equal(f.histLimit(), 500, 'a limit above 500 counts as 500');
  const j = scan(encode({ t: 'join', room: 'x', since: 3, epoch: 'abc' }));
  assert.equal(j.type, T_JOIN);
  assert.equal(j.since, 3);
  assert.equal(j.epochEnd - j.epochStart, 3);
  const r = scan(encode({ t: 'read', room: 'x', seq: 2 ** 40 }));
  assert.equal(r.type, T_READ);
  assert.equal(r.seq, 2 ** 40);
  // u64 beyond 2^53 counts as 2^53 - 1 (a read beyond the latest counts as the latest).
  const big = scan(hex('83 a1 74 a4 72656164 a4 726f6f6d a1 78 a3 736571 cf ffffffffffffffff'));
  assert.equal(big.error, 0, big.message);
  assert.equal(big.seq, Number.MAX_SAFE_INTEGER);
});

test('structural errors are bad_frame', () => {
  const cases: [string, string][] = [
    ['', 'empty'],
    ['92 01 02', 'an array'],
    ['a3 707562', 'a string'],
    ['82 a1 74 a3 707562', 'a map missing its second pair'],
    ['81 a1 74 a3 7075', 'a truncated string'],
    ['81 a1 74 a3 707562 00', 'trailing bytes'],
    ['81 a1 74 d4 01 00', 'a fixext value'],
    ['81 a1 74 c7 01 05 00', 'an ext8 value'],
    ['81 a1 74 c1', 'the never-used byte 0xc1'],
    ['df ffffffff', 'a map32 claiming 2^32-1 pairs'],
  ];
  for (const [h, what] of cases) assert.equal(scan(hex(h)).error, E_BAD_FRAME, what);
});

test('type, ref, room and field errors', () => {
  assert.equal(scan(encode({ room: 'x' })).error, E_UNKNOWN_TYPE, 'missing t');
  assert.equal(scan(encode({ t: 5, room: 'x' })).error, E_UNKNOWN_TYPE, 't not a string');
  assert.equal(scan(encode({ t: 'pubx', room: 'x' })).error, E_UNKNOWN_TYPE);
  for (const ref of [-1, 1.5, 2 ** 32, 'a', true]) {
    const f = scan(encode({ t: 'who', room: 'x', ref }));
    assert.equal(f.error, E_BAD_REQUEST, `ref ${String(ref)}`);
    assert.equal(f.ref, -1);
  }
  const nilRef = scan(encode({ t: 'who', room: 'x', ref: null }));
  assert.equal(nilRef.error, 0, 'nil ref counts as absent');
  assert.equal(nilRef.ref, -1);
  for (const room of ['', 'a'.repeat(129), 'a b', 'é', 7]) {
    assert.equal(scan(encode({ t: 'who', room })).error, E_BAD_ROOM, `room ${JSON.stringify(room)}`);
  }
  assert.equal(scan(encode({ t: 'who', room: 'a'.repeat(128) })).error, 0);
  assert.equal(scan(encode({ t: 'who' })).error, E_BAD_REQUEST, 'missing room');
  assert.equal(scan(encode({ t: 'pub', room: 'x' })).error, E_BAD_REQUEST, 'pub without body');
  assert.equal(scan(encode({ t: 'pub', room: 'x', body: null })).error, 0, 'nil body is a body');
  assert.equal(scan(encode({ t: 'read', room: 'x' })).error, E_BAD_REQUEST, 'read without seq');
  assert.equal(scan(encode({ t: 'read', room: 'x', seq: -1 })).error, E_BAD_REQUEST);
  assert.equal(scan(encode({ t: 'read', room: 'x', seq: 1.5 })).error, E_BAD_REQUEST);
  assert.equal(scan(encode({ t: 'read', room: 'x', seq: 3.0 })).error, 0, 'an integral float is an integer');
  assert.equal(scan(encode({ t: 'hist', room: 'x', limit: 0 })).error, E_BAD_REQUEST);
  assert.equal(scan(encode({ t: 'hist', room: 'x', before: 5, after: 1 })).error, E_BAD_REQUEST);
  assert.equal(scan(encode({ t: 'join', room: 'x', since: 'a' })).error, E_BAD_REQUEST);
  // a known key twice
  assert.equal(scan(hex('83 a1 74 a3 77686f a4 726f6f6d a1 78 a1 74 a3 77686f')).error, E_BAD_REQUEST);
});

test('unknown and non-string keys are ignored; the ref after a too-deep body is kept', () => {
  // {t:'who', room:'x', extra:{a:[1]}, 7:'int key'}
  const f = scan(hex('84 a1 74 a3 77686f a4 726f6f6d a1 78 a5 6578747261 81 a1 61 91 01 07 a7 696e74206b6579'));
  assert.equal(f.error, 0, f.message);
  let deep: unknown = 1;
  for (let i = 0; i < 40; i++) deep = [deep];
  const d = scan(encode({ t: 'pub', room: 'x', body: deep, ref: 9 }));
  assert.equal(d.error, E_BAD_REQUEST);
  assert.equal(d.ref, 9);
  // 32 nested containers are allowed (the body is level 1); 33 are not.
  let ok: unknown = 0;
  for (let i = 0; i < 32; i++) ok = [ok];
  assert.equal(scan(encode({ t: 'pub', room: 'x', body: ok })).error, 0);
  assert.equal(scan(encode({ t: 'pub', room: 'x', body: [ok] })).error, E_BAD_REQUEST);
});

test('skipValue and skipValueFlat agree and refuse what they must', () => {
  const v = encode({ a: [1, 2, { b: 'c' }], d: new Uint8Array(300), e: 1.5, f: -(2 ** 40) });
  assert.equal(skipValue(v, 0, v.byteLength, 1, 32), v.byteLength);
  assert.equal(skipValueFlat(v, 0, v.byteLength), v.byteLength);
  assert.equal(skipValue(v, 0, v.byteLength - 1, 1, 32), SKIP_TRUNCATED);
  assert.equal(skipValueFlat(v, 0, v.byteLength - 1), SKIP_TRUNCATED);
  assert.equal(skipValue(hex('d6 ff 00000000'), 0, 6, 1, 32), SKIP_EXTENSION, 'a timestamp is an extension');
  assert.equal(skipValue(hex('91 91 01'), 0, 3, 1, 1), SKIP_TOO_DEEP);
  const nested = new Uint8Array(100_001).fill(0x91);
  nested[100_000] = 0x01;
  assert.equal(skipValueFlat(nested, 0, nested.byteLength), nested.byteLength, '100k levels walked without recursion');
});

test('MsgWriter output decodes with another library', () => {
  const buf = new Uint8Array(4096);
  const w = new MsgWriter(buf);
  writeHello(w, 'c1', 'alice', { maxFrame: 65536, maxRooms: 100, ratePerSec: 10, burst: 50, maxBuffer: 1 << 20 });
  assert.deepEqual(decode(buf.subarray(0, w.pos)), {
    t: 'hello', conn: 'c1', user: 'alice', v: 1,
    limits: { maxFrame: 65536, maxRooms: 100, ratePerSec: 10, burst: 50, maxBuffer: 1 << 20 },
  });
  w.reset(buf);
  writeErr(w, E_BAD_ROOM, 'bad room ünïcode', 42, 100);
  assert.deepEqual(decode(buf.subarray(0, w.pos)), { t: 'err', code: 'bad_room', msg: 'bad room ünïcode', retryAfterMs: 100, ref: 42 });
  const body = encode({ text: 'hi', n: [1, 2] });
  const room = new TextEncoder().encode('lobby');
  w.reset(buf);
  writeMsg(w, room, 0, room.length, 2 ** 40, 'bob', body, 0, body.length, 1_795_000_000_000);
  assert.deepEqual(decode(buf.subarray(0, w.pos)), { t: 'msg', room: 'lobby', seq: 2 ** 40, from: 'bob', body: { text: 'hi', n: [1, 2] }, ts: 1_795_000_000_000 });
  for (const n of [0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER]) {
    w.reset(buf);
    w.uint(n);
    assert.equal(decode(buf.subarray(0, w.pos)), n);
  }
  for (const s of ['', 'a'.repeat(31), 'a'.repeat(32), 'a'.repeat(255), 'a'.repeat(256), 'a'.repeat(70000)]) {
    const big = new Uint8Array(80000);
    w.reset(big);
    w.str(s);
    assert.equal(decode(big.subarray(0, w.pos)), s);
  }
  const small = new Uint8Array(4);
  assert.throws(() => new MsgWriter(small).str('too long for it'), RangeError);
});
