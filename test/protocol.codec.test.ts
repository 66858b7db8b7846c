/**
 * The SDK's general MessagePack codec (engine/protocol/codec.ts), checked against an independent
 * library (@msgpack/msgpack) both ways, with literal bytes for the edges and fast-check for the rest.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decode as refDecode, encode as refEncode } from '@msgpack/msgpack';
import { CodecError, MAX_DEPTH, decode, encode } from '../engine/protocol/codec.js';

const hex = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('literal encodings: smallest integer forms, strings, maps, nil for undefined fields left out', () => {
  assert.equal(toHex(encode(0)), '00');
  assert.equal(toHex(encode(127)), '7f');
  assert.equal(toHex(encode(128)), 'cc80');
  assert.equal(toHex(encode(-1)), 'ff');
  assert.equal(toHex(encode(-33)), 'd0df');
  assert.equal(toHex(encode(65536)), 'ce00010000');
  assert.equal(toHex(encode(2 ** 40)), 'cf0000010000000000');
  assert.equal(toHex(encode(-(2 ** 40))), 'd3ffffff0000000000');
  assert.equal(toHex(encode(1.5)), 'cb3ff8000000000000');
  assert.equal(toHex(encode(null)), 'c0');
  assert.equal(toHex(encode('é')), 'a2c3a9');
  assert.equal(toHex(encode({ t: 'pub', x: undefined })), '81a174a3707562');
  assert.equal(toHex(encode(new Uint8Array([1, 2]))), 'c4020102');
  assert.equal(toHex(encode([true, false])), '92c3c2');
});

test('decode: every integer width, str8/16, bin, float32, map16, array16', () => {
  assert.equal(decode(hex('d1 ff 00')), -256);
  assert.equal(decode(hex('cd 01 00')), 256);
  assert.equal(decode(hex('cf 00 20 00 00 00 00 00 01')), 2 ** 53 + 1 > Number.MAX_SAFE_INTEGER ? 2n ** 53n + 1n : 0);
  assert.equal(decode(hex('d3 ff ff ff ff ff ff ff ff')), -1);
  assert.equal(decode(hex('ca 3f c0 00 00')), 1.5);
  assert.equal(decode(hex('d9 01 61')), 'a');
  assert.equal(decode(hex('da 00 01 62')), 'b');
  assert.deepEqual(decode(hex('c5 00 01 ff')), new Uint8Array([0xff]));
  assert.deepEqual(decode(hex('de 00 01 a1 61 01')), { a: 1 });
  assert.deepEqual(decode(hex('dc 00 02 01 02')), [1, 2]);
});

test('decode refuses what is not one standard value: trailing bytes, truncation, extensions, 0xc1, depth', () => {
  const bad = ['81 a1 61 01 00', '82 a1 61 01', 'a3 61 62', 'd4 01 00', 'c7 01 01 00', 'c1', 'dd ff ff ff ff', ''];
  for (const h of bad) assert.throws(() => decode(hex(h)), CodecError, h);
  const deep = new Uint8Array(MAX_DEPTH + 1).fill(0x91);
  deep[deep.length - 1] = 0x00;
  assert.throws(() => decode(deep), CodecError);
  let v: unknown = 1;
  for (let i = 0; i < MAX_DEPTH + 1; i++) v = [v];
  assert.throws(() => encode(v), CodecError);
  assert.throws(() => encode(() => 1), CodecError);
});

test('a __proto__ key is data, never the prototype', () => {
  const o = decode(hex('81 a9 5f5f70726f746f5f5f 81 a1 78 01')) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(o), Object.prototype);
  assert.deepEqual(Object.keys(o), ['__proto__']);
  assert.equal((o as { x?: unknown }).x, undefined);
});

// JSON-like values (no undefined, no -0, integers safe) round-trip identically through both libraries.
const value = fc.letrec((tie) => ({
  v: fc.oneof({ depthSize: 'small' },
    fc.constant(null), fc.boolean(), fc.integer({ min: -(2 ** 31), max: 2 ** 32 }), fc.maxSafeInteger(),
    fc.double({ noNaN: true }).filter((d) => !Object.is(d, -0)), fc.string({ unit: 'grapheme' }),
    fc.uint8Array({ maxLength: 300 }), fc.array(tie('v'), { maxLength: 20 }),
    fc.dictionary(fc.string().filter((k) => k !== '__proto__'), tie('v'), { maxKeys: 20, noNullPrototype: true })),
})).v;

test('property: our encode is read back by @msgpack/msgpack, and its encode by our decode', () => {
  fc.assert(fc.property(value, (v) => {
    assert.deepEqual(refDecode(encode(v), { useBigInt64: false }), v);
    assert.deepEqual(decode(refEncode(v)), v);
    assert.deepEqual(decode(encode(v)), v);
  }), { numRuns: 500, seed: 13 });
});

test('property: bigints over 2^53 round-trip as bigint; safe 64-bit values as numbers', () => {
  fc.assert(fc.property(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }), (b) => {
    const back = decode(encode(b));
    if (b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER)) assert.equal(back, Number(b));
    else assert.equal(back, b);
    assert.equal(BigInt(refDecode(encode(b), { useBigInt64: true }) as bigint), b);
  }), { numRuns: 300, seed: 13 });
});
