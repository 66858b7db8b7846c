/**
 * MsgSizer counts exactly what MsgWriter writes, for every call the shard's record writers use:
 * the shard reserves outbound records at the size a sizer counted (workers/handler.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MsgSizer, MsgWriter, utf8Length } from '../engine/protocol/msgpack.js';

type Op = { k: 'map' | 'arr'; n: number } | { k: 'str'; s: string } | { k: 'uint'; n: number } | { k: 'raw'; n: number } | { k: 'u32' | 'byte' | 'nil' | 'bool' };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constantFrom('map' as const, 'arr' as const), n: fc.oneof(fc.nat(20), fc.nat(0x1ffff), fc.constant(0xffff), fc.constant(0x10000)) }),
  fc.record({ k: fc.constant('str' as const), s: fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 70 }), fc.constant('\ud800x'), fc.constant('x'.repeat(70000))) }),
  fc.record({ k: fc.constant('uint' as const), n: fc.oneof(fc.nat(300), fc.nat(0xffffffff), fc.maxSafeNat(), fc.constantFrom(0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff, 0x100000000)) }),
  fc.record({ k: fc.constant('raw' as const), n: fc.nat(100) }),
  fc.record({ k: fc.constantFrom('u32' as const, 'byte' as const, 'nil' as const, 'bool' as const) }),
);

function apply(w: MsgWriter, ops: Op[]): void {
  const raw = new Uint8Array(100);
  for (const o of ops) {
    switch (o.k) {
      case 'map': w.mapHeader(o.n); break;
      case 'arr': w.arrayHeader(o.n); break;
      case 'str': w.str(o.s); break;
      case 'uint': w.uint(o.n); break;
      case 'raw': w.raw(raw, 0, o.n); break;
      case 'u32': w.u32le(0xdeadbeef); break;
      case 'byte': w.byte(7); break;
      case 'nil': w.nil(); break;
      case 'bool': w.bool(true); break;
    }
  }
}

test('MsgSizer counts exactly the bytes MsgWriter writes, and a buffer of that size is enough', () => {
  fc.assert(fc.property(fc.array(op, { maxLength: 12 }), (ops) => {
    const sz = new MsgSizer().start();
    apply(sz, ops);
    const buf = new Uint8Array(sz.pos);
    const w = new MsgWriter(buf);
    apply(w, ops); // throws RangeError if the counted size were short
    assert.equal(w.pos, sz.pos);
  }), { numRuns: 2000, seed: 10 });
});

test('utf8Length agrees with TextEncoder, lone surrogates included', () => {
  const enc = new TextEncoder();
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 50 }), fc.string({ unit: 'grapheme', maxLength: 50 }), (a, b) => {
    assert.equal(utf8Length(a), enc.encode(a).byteLength);
    assert.equal(utf8Length(b), enc.encode(b).byteLength);
  }), { numRuns: 2000, seed: 11 });
  for (const s of ['\ud800', '\udc00', '\ud800\udc00', 'a\ud83d', '\ud83d\ude00\ud83d']) assert.equal(utf8Length(s), enc.encode(s).byteLength, JSON.stringify(s));
});
