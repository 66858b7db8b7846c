/**
 * Fuzzing support, independent of the engine's own MessagePack code: a seeded PRNG, an encoder
 * that can write every encoding variant MessagePack allows (forced integer / string widths,
 * floats with integral values, extension types, duplicate and non-string keys), and an oracle
 * that reads a client frame the way PROTOCOL.md describes it and says what the engine must do
 * with it: which `ref` its reply must (or may) carry, and whether it must be an `err`.
 */

// ---- PRNG ----------------------------------------------------------------------------------

/** sfc32: small, fast, good enough for fuzzing, fully determined by the seed. */
export class Rng {
  private a: number; private b: number; private c: number; private d: number;
  constructor(seed: number) {
    this.a = 0x9e3779b9; this.b = 0x243f6a88; this.c = 0xb7e15162; this.d = seed >>> 0;
    for (let i = 0; i < 20; i++) this.u32();
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }
  /** Float in [0, 1). */
  next(): number { return this.u32() / 4294967296; }
  /** Integer in [0, n). */
  int(n: number): number { return Math.floor(this.next() * n); }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number { return lo + this.int(hi - lo + 1); }
  chance(p: number): boolean { return this.next() < p; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]!; }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
  /** Picks a key of `weights` with probability proportional to its weight. */
  weighted<K extends string>(weights: Record<K, number>): K {
    const keys = Object.keys(weights) as K[];
    let total = 0;
    for (const k of keys) total += weights[k];
    let x = this.next() * total;
    for (const k of keys) { x -= weights[k]; if (x < 0) return k; }
    return keys[keys.length - 1]!;
  }
}

// ---- encoder -------------------------------------------------------------------------------

export type IntFmt = 'auto' | 'u8' | 'u16' | 'u32' | 'u64' | 'i8' | 'i16' | 'i32' | 'i64';
export type StrFmt = 'auto' | 's8' | 's16' | 's32';

/** An integer with a chosen encoding (bigint for 64-bit values beyond 2^53). */
export class I { constructor(readonly v: number | bigint, readonly fmt: IntFmt = 'auto') {} }
/** A float32 or float64. */
export class F { constructor(readonly x: number, readonly bits: 32 | 64 = 64) {} }
/** A str (text or raw bytes, which need not be UTF-8) with a chosen width. */
export class S { constructor(readonly s: string | Uint8Array, readonly fmt: StrFmt = 'auto') {} }
/** A bin value. */
export class Bin { constructor(readonly b: Uint8Array, readonly fmt: 'auto' | 'b8' | 'b16' | 'b32' = 'auto') {} }
/** An extension value: type and data (fixext sizes 1, 2, 4, 8, 16 are used when they fit). */
export class X { constructor(readonly type: number, readonly data: Uint8Array, readonly forceExt8 = false) {} }
/** A map with explicit entries: any keys, duplicates allowed; fmt forces the header width. */
export class M { constructor(public entries: [V, V][], readonly fmt: 'auto' | 'm16' | 'm32' = 'auto') {} }
/** An array with a chosen header width. */
export class A { constructor(readonly items: V[], readonly fmt: 'auto' | 'a16' | 'a32' = 'auto') {} }
/** Bytes written as they are. */
export class Raw { constructor(readonly b: Uint8Array) {} }

export type V = null | boolean | number | string | Uint8Array | V[] | I | F | S | Bin | X | M | A | Raw | { [k: string]: V };

const te = new TextEncoder();

export class Enc {
  buf = new Uint8Array(1024);
  pos = 0;
  reset(): this { this.pos = 0; return this; }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.pos + n) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.buf.subarray(0, this.pos));
    this.buf = nb;
  }
  u8(x: number): void { this.ensure(1); this.buf[this.pos++] = x & 0xff; }
  u16(x: number): void { this.ensure(2); this.buf[this.pos++] = (x >>> 8) & 0xff; this.buf[this.pos++] = x & 0xff; }
  u32(x: number): void { this.ensure(4); for (let s = 24; s >= 0; s -= 8) this.buf[this.pos++] = (x >>> s) & 0xff; }
  u64(x: bigint): void {
    const v = BigInt.asUintN(64, x);
    this.u32(Number(v >> 32n)); this.u32(Number(v & 0xffffffffn));
  }
  raw(b: Uint8Array): void { this.ensure(b.length); this.buf.set(b, this.pos); this.pos += b.length; }
  out(): Uint8Array { return this.buf.slice(0, this.pos); }

  int(v: number | bigint, fmt: IntFmt): void {
    if (fmt === 'auto') {
      const n = typeof v === 'bigint' ? v : BigInt(v);
      if (n >= 0n) {
        if (n < 128n) return this.u8(Number(n));
        if (n < 256n) { this.u8(0xcc); return this.u8(Number(n)); }
        if (n < 65536n) { this.u8(0xcd); return this.u16(Number(n)); }
        if (n < 4294967296n) { this.u8(0xce); return this.u32(Number(n)); }
        this.u8(0xcf); return this.u64(n);
      }
      if (n >= -32n) return this.u8(Number(n) & 0xff);
      if (n >= -128n) { this.u8(0xd0); return this.u8(Number(n) & 0xff); }
      if (n >= -32768n) { this.u8(0xd1); return this.u16(Number(n) & 0xffff); }
      if (n >= -2147483648n) { this.u8(0xd2); return this.u32(Number(n) >>> 0); }
      this.u8(0xd3); return this.u64(n);
    }
    const n = typeof v === 'bigint' ? v : BigInt(Math.trunc(v));
    switch (fmt) {
      case 'u8': this.u8(0xcc); this.u8(Number(BigInt.asUintN(8, n))); return;
      case 'u16': this.u8(0xcd); this.u16(Number(BigInt.asUintN(16, n))); return;
      case 'u32': this.u8(0xce); this.u32(Number(BigInt.asUintN(32, n))); return;
      case 'u64': this.u8(0xcf); this.u64(n); return;
      case 'i8': this.u8(0xd0); this.u8(Number(BigInt.asUintN(8, n))); return;
      case 'i16': this.u8(0xd1); this.u16(Number(BigInt.asUintN(16, n))); return;
      case 'i32': this.u8(0xd2); this.u32(Number(BigInt.asUintN(32, n))); return;
      case 'i64': this.u8(0xd3); this.u64(n); return;
    }
  }

  str(s: string | Uint8Array, fmt: StrFmt): void {
    const b = typeof s === 'string' ? te.encode(s) : s;
    const n = b.length;
    const f = fmt !== 'auto' ? fmt : n < 32 ? 'fix' : n < 256 ? 's8' : n < 65536 ? 's16' : 's32';
    if (f === 'fix' && n < 32) this.u8(0xa0 | n);
    else if (f === 's8' && n < 256) { this.u8(0xd9); this.u8(n); }
    else if (f === 's16' && n < 65536) { this.u8(0xda); this.u16(n); }
    else { this.u8(0xdb); this.u32(n); }
    this.raw(b);
  }

  value(v: V): void {
    if (v === null) return this.u8(0xc0);
    if (v === true) return this.u8(0xc3);
    if (v === false) return this.u8(0xc2);
    if (typeof v === 'number') {
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) return this.int(v, 'auto');
      return this.value(new F(v, 64));
    }
    if (typeof v === 'string') return this.str(v, 'auto');
    if (v instanceof Uint8Array) return this.value(new Bin(v));
    if (Array.isArray(v)) return this.value(new A(v));
    if (v instanceof I) return this.int(v.v, v.fmt);
    if (v instanceof F) {
      if (v.bits === 32) {
        this.u8(0xca); this.ensure(4);
        new DataView(this.buf.buffer, this.buf.byteOffset).setFloat32(this.pos, v.x); this.pos += 4;
      } else {
        this.u8(0xcb); this.ensure(8);
        new DataView(this.buf.buffer, this.buf.byteOffset).setFloat64(this.pos, v.x); this.pos += 8;
      }
      return;
    }
    if (v instanceof S) return this.str(v.s, v.fmt);
    if (v instanceof Bin) {
      const n = v.b.length;
      const f = v.fmt !== 'auto' ? v.fmt : n < 256 ? 'b8' : n < 65536 ? 'b16' : 'b32';
      if (f === 'b8' && n < 256) { this.u8(0xc4); this.u8(n); } else if (f === 'b16' && n < 65536) { this.u8(0xc5); this.u16(n); } else { this.u8(0xc6); this.u32(n); }
      return this.raw(v.b);
    }
    if (v instanceof X) {
      const n = v.data.length;
      const fix = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[n];
      if (fix !== undefined && !v.forceExt8) this.u8(fix);
      else if (n < 256) { this.u8(0xc7); this.u8(n); } else if (n < 65536) { this.u8(0xc8); this.u16(n); } else { this.u8(0xc9); this.u32(n); }
      this.u8(v.type & 0xff);
      return this.raw(v.data);
    }
    if (v instanceof M) {
      const n = v.entries.length;
      if (v.fmt === 'auto' && n < 16) this.u8(0x80 | n);
      else if (v.fmt !== 'm32' && n < 65536) { this.u8(0xde); this.u16(n); } else { this.u8(0xdf); this.u32(n); }
      for (const [k, x] of v.entries) { this.value(k); this.value(x); }
      return;
    }
    if (v instanceof A) {
      const n = v.items.length;
      if (v.fmt === 'auto' && n < 16) this.u8(0x90 | n);
      else if (v.fmt !== 'a32' && n < 65536) { this.u8(0xdc); this.u16(n); } else { this.u8(0xdd); this.u32(n); }
      for (const x of v.items) this.value(x);
      return;
    }
    if (v instanceof Raw) return this.raw(v.b);
    const keys = Object.keys(v);
    this.value(new M(keys.map((k) => [k, (v as Record<string, V>)[k]!])));
  }
}

const shared = new Enc();
export function encodeV(v: V): Uint8Array {
  shared.reset().value(v);
  return shared.out();
}

// ---- oracle --------------------------------------------------------------------------------

export const CLIENT_TYPES = new Set(['join', 'leave', 'pub', 'hist', 'read', 'who']);
const KNOWN_KEYS = new Set(['t', 'ref', 'room', 'body', 'since', 'epoch', 'before', 'after', 'limit', 'seq']);
export const MAX_DEPTH = 32;
const ROOM_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;

const TRUNC = -1;
const EXT = -2;
const INVALID = -3;

/**
 * Skips one value at p (iteratively: any depth). Returns [end, maxContainerDepth] (the value
 * itself being level 1) or [negative code, depthSoFar].
 */
function skip(b: Uint8Array, p: number, end: number): [number, number] {
  // Stack of items left in each open container.
  const left: number[] = [];
  let maxDepth = 0;
  for (;;) {
    if (p >= end) return [TRUNC, maxDepth];
    const c = b[p]!;
    let items = -1;
    let size = 0;
    if (c <= 0x7f || c >= 0xe0) size = 1;
    else if (c <= 0x8f) { items = (c & 0x0f) * 2; size = 1; }
    else if (c <= 0x9f) { items = c & 0x0f; size = 1; }
    else if (c <= 0xbf) size = 1 + (c & 0x1f);
    else {
      switch (c) {
        case 0xc0: case 0xc2: case 0xc3: size = 1; break;
        case 0xc1: return [INVALID, maxDepth];
        case 0xc4: case 0xd9: if (p + 2 > end) return [TRUNC, maxDepth]; size = 2 + b[p + 1]!; break;
        case 0xc5: case 0xda: if (p + 3 > end) return [TRUNC, maxDepth]; size = 3 + ((b[p + 1]! << 8) | b[p + 2]!); break;
        case 0xc6: case 0xdb: if (p + 5 > end) return [TRUNC, maxDepth]; size = 5 + u32(b, p + 1); break;
        case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return [EXT, maxDepth];
        case 0xca: size = 5; break;
        case 0xcb: size = 9; break;
        case 0xcc: case 0xd0: size = 2; break;
        case 0xcd: case 0xd1: size = 3; break;
        case 0xce: case 0xd2: size = 5; break;
        case 0xcf: case 0xd3: size = 9; break;
        case 0xdc: if (p + 3 > end) return [TRUNC, maxDepth]; items = (b[p + 1]! << 8) | b[p + 2]!; size = 3; break;
        case 0xdd: if (p + 5 > end) return [TRUNC, maxDepth]; items = u32(b, p + 1); size = 5; break;
        case 0xde: if (p + 3 > end) return [TRUNC, maxDepth]; items = ((b[p + 1]! << 8) | b[p + 2]!) * 2; size = 3; break;
        case 0xdf: if (p + 5 > end) return [TRUNC, maxDepth]; items = u32(b, p + 1) * 2; size = 5; break;
        default: return [INVALID, maxDepth];
      }
    }
    if (p + size > end) return [TRUNC, maxDepth];
    p += size;
    if (items > 0) {
      left.push(items);
      if (left.length > maxDepth) maxDepth = left.length;
      continue;
    }
    if (items === 0 && left.length + 1 > maxDepth) maxDepth = left.length + 1;
    // A scalar or an empty container finished: close every container it completes.
    for (;;) {
      if (left.length === 0) return [p, maxDepth];
      const top = left.length - 1;
      left[top]!--;
      if (left[top]! > 0) break;
      left.pop();
    }
  }
}

function u32(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}

/** A number at p: a JS number (bigint-exact range check done by the caller), or NaN if not a number. */
function readNum(b: Uint8Array, p: number): number | bigint {
  const c = b[p]!;
  const dv = new DataView(b.buffer, b.byteOffset);
  if (c <= 0x7f) return c;
  if (c >= 0xe0) return c - 256;
  switch (c) {
    case 0xcc: return b[p + 1]!;
    case 0xcd: return dv.getUint16(p + 1);
    case 0xce: return dv.getUint32(p + 1);
    case 0xcf: return dv.getBigUint64(p + 1);
    case 0xd0: return dv.getInt8(p + 1);
    case 0xd1: return dv.getInt16(p + 1);
    case 0xd2: return dv.getInt32(p + 1);
    case 0xd3: return dv.getBigInt64(p + 1);
    case 0xca: return dv.getFloat32(p + 1);
    case 0xcb: return dv.getFloat64(p + 1);
    default: return NaN;
  }
}

/** 'valid' (an integer in [0, max]), 'nil', 'big' (integral but above max), 'bad' (anything else). */
function classifyCount(b: Uint8Array, p: number, max: number): { cls: 'valid' | 'nil' | 'big' | 'bad'; v: number } {
  if (b[p] === 0xc0) return { cls: 'nil', v: NaN };
  const n = readNum(b, p);
  if (typeof n === 'bigint') {
    if (n < 0n) return { cls: 'bad', v: NaN };
    return n <= BigInt(max) ? { cls: 'valid', v: Number(n) } : { cls: 'big', v: NaN };
  }
  if (!Number.isFinite(n) || !Number.isInteger(n) || n < 0) return { cls: 'bad', v: NaN };
  if (n > max) return { cls: 'big', v: NaN };
  return { cls: 'valid', v: n === 0 ? 0 : n };
}

/** The payload span of a str at p, null when p holds no str; a span past the end means truncated. */
function strAt(b: Uint8Array, p: number): [number, number] | null {
  const c = b[p]!;
  const end = b.length;
  if (c >= 0xa0 && c <= 0xbf) return [p + 1, p + 1 + (c & 0x1f)];
  if (c === 0xd9) return p + 2 > end ? [end, end + 1] : [p + 2, p + 2 + b[p + 1]!];
  if (c === 0xda) return p + 3 > end ? [end, end + 1] : [p + 3, p + 3 + ((b[p + 1]! << 8) | b[p + 2]!)];
  if (c === 0xdb) return p + 5 > end ? [end, end + 1] : [p + 5, p + 5 + u32(b, p + 1)];
  return null;
}

const latin1 = new TextDecoder('latin1');

export type Verdict = 'valid' | 'mustErr' | 'ambiguous';

export interface Expectation {
  /** The map is exactly one standard MessagePack map (no extension types, no trailing bytes). */
  wellFormed: boolean;
  /** The reply must carry this ref (-1: none required). */
  mustRef: number;
  /** Refs the reply may carry instead of none (only when mustRef is -1). */
  mayRefs: number[];
  verdict: Verdict;
  /** For wellFormed frames: the type, when valid. */
  t: string | null;
  room: string | null;
  why: string;
}

/**
 * What PROTOCOL.md requires of the reply to `b` sent as one binary WebSocket message. Written
 * from the contract, not from the engine's scanner: fields are read in full, then judged.
 */
export function expect(b: Uint8Array): Expectation {
  const end = b.length;
  const out: Expectation = { wellFormed: false, mustRef: -1, mayRefs: [], verdict: 'mustErr', t: null, room: null, why: '' };
  if (end === 0) { out.why = 'empty'; return out; }
  const c = b[0]!;
  let pairs: number; let p: number;
  if (c >= 0x80 && c <= 0x8f) { pairs = c & 0x0f; p = 1; }
  else if (c === 0xde && end >= 3) { pairs = (b[1]! << 8) | b[2]!; p = 3; }
  else if (c === 0xdf && end >= 5) { pairs = u32(b, 1); p = 5; }
  else { out.why = 'not a map'; return out; }
  interface Field { count: number; at: number; depth: number }
  const fields = new Map<string, Field>();
  let deepValue = false;
  let deepNonStrKey = false;
  let deepBody = false;
  for (let i = 0; i < pairs; i++) {
    if (p >= end) { out.why = 'truncated'; return out; }
    let key: string | null = null;
    const s = strAt(b, p);
    if (s !== null) {
      if (s[1] > end) { out.why = 'truncated key'; return out; }
      key = latin1.decode(b.subarray(s[0], s[1]));
      p = s[1];
    } else {
      const [k, d] = skip(b, p, end);
      if (k < 0) { out.why = k === EXT ? 'ext key' : 'bad key'; return out; }
      if (d > MAX_DEPTH) deepNonStrKey = true;
      p = k;
    }
    const [v, d] = skip(b, p, end);
    if (v < 0) { out.why = v === EXT ? 'extension type' : v === TRUNC ? 'truncated value' : 'invalid byte'; return out; }
    if (key !== null) {
      if (d > MAX_DEPTH) { deepValue = true; if (key === 'body') deepBody = true; }
      if (KNOWN_KEYS.has(key)) {
        const f = fields.get(key);
        if (f) f.count++; else fields.set(key, { count: 1, at: p, depth: d });
        if (key === 'ref') {
          const r = classifyCount(b, p, 0xffffffff);
          if (r.cls === 'valid') out.mayRefs.push(r.v);
        }
      }
    }
    p = v;
  }
  if (p !== end) { out.why = 'trailing bytes'; return out; }
  out.wellFormed = true;

  const reasons: string[] = [];
  const ambiguous: string[] = [];
  // ref
  const ref = fields.get('ref');
  if (ref && ref.count > 1) reasons.push('duplicate ref');
  else {
    out.mayRefs = [];
    if (ref) {
      const r = classifyCount(b, ref.at, 0xffffffff);
      if (r.cls === 'valid') out.mustRef = r.v;
      else if (r.cls !== 'nil') reasons.push('invalid ref');
    }
  }
  for (const [k, f] of fields) if (f.count > 1 && k !== 'ref') reasons.push(`duplicate ${k}`);
  if (deepValue) reasons.push(deepBody ? 'body too deep' : 'value too deep');
  if (deepNonStrKey) ambiguous.push('non-string key nested too deep');
  // t
  const tf = fields.get('t');
  let t: string | null = null;
  if (!tf) reasons.push('missing t');
  else {
    const s = strAt(b, tf.at);
    const name = s ? latin1.decode(b.subarray(s[0], s[1])) : null;
    if (name !== null && CLIENT_TYPES.has(name)) t = name; else reasons.push('unknown t');
  }
  // room
  const rf = fields.get('room');
  let room: string | null = null;
  if (!rf) reasons.push('missing room');
  else {
    const s = strAt(b, rf.at);
    if (!s) reasons.push('room not a string');
    else {
      room = latin1.decode(b.subarray(s[0], s[1]));
      if (!ROOM_RE.test(room)) { reasons.push('bad room'); room = null; }
    }
  }
  // type-specific fields; known fields a type does not use are judged ambiguous when malformed
  const count = (k: string, max = Number.MAX_SAFE_INTEGER): 'absent' | 'valid' | 'nil' | 'big' | 'bad' => {
    const f = fields.get(k);
    return f ? classifyCount(b, f.at, max).cls : 'absent';
  };
  const used = new Set<string>(['t', 'ref', 'room']);
  if (t === 'join') {
    used.add('since'); used.add('epoch');
    const since = count('since');
    if (since === 'bad') reasons.push('bad since');
    if (since === 'big') ambiguous.push('since beyond 2^53');
    const ef = fields.get('epoch');
    if (ef && b[ef.at] !== 0xc0 && !strAt(b, ef.at)) reasons.push('epoch not a string');
  } else if (t === 'pub') {
    used.add('body');
    if (!fields.get('body')) reasons.push('missing body');
  } else if (t === 'hist') {
    used.add('before'); used.add('after'); used.add('limit');
    const before = count('before'); const after = count('after'); const limit = count('limit');
    if (before === 'bad') reasons.push('bad before');
    if (after === 'bad') reasons.push('bad after');
    if ((before === 'valid' || before === 'big') && (after === 'valid' || after === 'big')) reasons.push('before and after');
    if (before === 'big' || after === 'big') ambiguous.push('before/after beyond 2^53');
    if (limit === 'bad') reasons.push('bad limit');
    else if (limit === 'valid' && classifyCount(b, fields.get('limit')!.at, Number.MAX_SAFE_INTEGER).v < 1) reasons.push('limit < 1');
    if (limit === 'big') ambiguous.push('limit beyond 2^53 (contract: above 500 counts as 500)');
  } else if (t === 'read') {
    used.add('seq');
    const seq = count('seq');
    if (seq === 'absent' || seq === 'nil') reasons.push('missing seq');
    if (seq === 'bad') reasons.push('bad seq');
    if (seq === 'big') ambiguous.push('seq beyond 2^53');
  }
  for (const k of fields.keys()) {
    if (used.has(k)) continue;
    if (k === 'body') continue; // any value is fine
    const f = fields.get(k)!;
    if (k === 'epoch') { if (b[f.at] !== 0xc0 && !strAt(b, f.at)) ambiguous.push(`epoch of the wrong type in ${t ?? 'frame'}`); continue; }
    const cls = classifyCount(b, f.at, Number.MAX_SAFE_INTEGER).cls;
    if (cls === 'bad' || cls === 'big') ambiguous.push(`${k} of the wrong type in ${t ?? 'frame'}`);
  }
  out.t = t;
  out.room = room;
  if (reasons.length > 0) { out.verdict = 'mustErr'; out.why = reasons.join(', '); }
  else if (ambiguous.length > 0) { out.verdict = 'ambiguous'; out.why = ambiguous.join(', '); }
  else { out.verdict = 'valid'; out.why = 'valid'; }
  return out;
}
