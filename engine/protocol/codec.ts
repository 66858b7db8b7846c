/**
 * A small, general MessagePack codec for whole frames, for clients (the SDK) that need to read
 * and write any value: `encode(value)` and `decode(bytes)`. Standard MessagePack only: no
 * extension types are written, and one read is a `CodecError`, like trailing bytes or nesting
 * beyond `MAX_DEPTH`. The engine's hot path does not use this (it scans, see frames.ts).
 * Pure: no I/O, no Node-only API (TextEncoder/TextDecoder exist in browsers and Node).
 *
 * Mapping: null and undefined -> nil; integers that are safe -> the smallest int encoding,
 * other numbers -> float64; bigint -> int64/uint64; string -> str (UTF-8); Uint8Array -> bin;
 * arrays -> array; other objects -> map of their own enumerable string keys (undefined values
 * are left out, so optional fields can stay undefined). Decoding gives plain objects for maps
 * (keys as strings), numbers for integers up to 2^53 and bigint beyond, Uint8Array for bin.
 */

export const MAX_DEPTH = 100;

export class CodecError extends Error {
  readonly code = 'SHARDCHAT_CODEC';
  constructor(message: string) {
    super(message);
    this.name = 'CodecError';
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

class Writer {
  buf = new Uint8Array(256);
  view = new DataView(this.buf.buffer);
  len = 0;

  need(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void { this.need(1); this.buf[this.len++] = v; }
  u16(tag: number, v: number): void { this.need(3); this.buf[this.len] = tag; this.view.setUint16(this.len + 1, v); this.len += 3; }
  u32(tag: number, v: number): void { this.need(5); this.buf[this.len] = tag; this.view.setUint32(this.len + 1, v); this.len += 5; }
  bytes(b: Uint8Array): void { this.need(b.length); this.buf.set(b, this.len); this.len += b.length; }
}

function writeInt(w: Writer, v: number): void {
  if (v >= 0) {
    if (v < 0x80) w.u8(v);
    else if (v < 0x100) { w.u8(0xcc); w.u8(v); }
    else if (v < 0x10000) w.u16(0xcd, v);
    else if (v < 0x100000000) w.u32(0xce, v);
    else { w.need(9); w.buf[w.len] = 0xcf; w.view.setBigUint64(w.len + 1, BigInt(v)); w.len += 9; }
  } else if (v >= -32) w.u8(v & 0xff);
  else if (v >= -128) { w.u8(0xd0); w.u8(v & 0xff); }
  else if (v >= -32768) { w.need(3); w.buf[w.len] = 0xd1; w.view.setInt16(w.len + 1, v); w.len += 3; }
  else if (v >= -2147483648) { w.need(5); w.buf[w.len] = 0xd2; w.view.setInt32(w.len + 1, v); w.len += 5; }
  else { w.need(9); w.buf[w.len] = 0xd3; w.view.setBigInt64(w.len + 1, BigInt(v)); w.len += 9; }
}

function writeHeader(w: Writer, n: number, fix: number, fixMax: number, t16: number, t32: number): void {
  if (n <= fixMax) w.u8(fix | n);
  else if (n < 0x10000) w.u16(t16, n);
  else w.u32(t32, n);
}

function writeValue(w: Writer, v: unknown, depth: number): void {
  if (v === null || v === undefined) { w.u8(0xc0); return; }
  switch (typeof v) {
    case 'boolean': w.u8(v ? 0xc3 : 0xc2); return;
    case 'number':
      if (Number.isSafeInteger(v)) writeInt(w, v);
      else { w.need(9); w.buf[w.len] = 0xcb; w.view.setFloat64(w.len + 1, v); w.len += 9; }
      return;
    case 'bigint':
      if (v < -(2n ** 63n) || v >= 2n ** 64n) throw new CodecError('bigint out of the 64-bit range');
      w.need(9);
      if (v < 0n) { w.buf[w.len] = 0xd3; w.view.setBigInt64(w.len + 1, v); } else { w.buf[w.len] = 0xcf; w.view.setBigUint64(w.len + 1, v); }
      w.len += 9;
      return;
    case 'string': {
      const b = utf8Encoder.encode(v);
      if (b.length < 32) w.u8(0xa0 | b.length);
      else if (b.length < 0x100) { w.u8(0xd9); w.u8(b.length); }
      else if (b.length < 0x10000) w.u16(0xda, b.length);
      else w.u32(0xdb, b.length);
      w.bytes(b);
      return;
    }
    case 'object': break;
    default: throw new CodecError(`cannot encode a ${typeof v}`);
  }
  if (depth >= MAX_DEPTH) throw new CodecError(`nested deeper than ${MAX_DEPTH} levels`);
  if (v instanceof Uint8Array) {
    if (v.length < 0x100) { w.u8(0xc4); w.u8(v.length); } else if (v.length < 0x10000) w.u16(0xc5, v.length); else w.u32(0xc6, v.length);
    w.bytes(v);
    return;
  }
  if (Array.isArray(v)) {
    writeHeader(w, v.length, 0x90, 15, 0xdc, 0xdd);
    for (const x of v) writeValue(w, x, depth + 1);
    return;
  }
  const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
  writeHeader(w, entries.length, 0x80, 15, 0xde, 0xdf);
  for (const [k, x] of entries) { writeValue(w, k, depth + 1); writeValue(w, x, depth + 1); }
}

/** Encodes one value as standard MessagePack. Throws CodecError for what it cannot encode. */
export function encode(value: unknown): Uint8Array {
  const w = new Writer();
  writeValue(w, value, 0);
  return w.buf.slice(0, w.len);
}

class Reader {
  p = 0;
  readonly view: DataView;
  constructor(readonly b: Uint8Array) { this.view = new DataView(b.buffer, b.byteOffset, b.byteLength); }
  take(n: number): number {
    const at = this.p;
    if (at + n > this.b.length) throw new CodecError('truncated MessagePack');
    this.p += n;
    return at;
  }
}

function int64(r: Reader, signed: boolean): number | bigint {
  const at = r.take(8);
  const v = signed ? r.view.getBigInt64(at) : r.view.getBigUint64(at);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function str(r: Reader, n: number): string {
  const at = r.take(n);
  return utf8Decoder.decode(r.b.subarray(at, at + n));
}

function readValue(r: Reader, depth: number): unknown {
  const c = r.b[r.take(1)]!;
  if (c <= 0x7f) return c;
  if (c >= 0xe0) return c - 0x100;
  if (c <= 0x8f) return readMap(r, c & 0x0f, depth);
  if (c <= 0x9f) return readArray(r, c & 0x0f, depth);
  if (c <= 0xbf) return str(r, c & 0x1f);
  const v = r.view;
  switch (c) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: case 0xc5: case 0xc6: {
      const n = c === 0xc4 ? v.getUint8(r.take(1)) : c === 0xc5 ? v.getUint16(r.take(2)) : v.getUint32(r.take(4));
      const at = r.take(n);
      return r.b.slice(at, at + n);
    }
    case 0xca: return v.getFloat32(r.take(4));
    case 0xcb: return v.getFloat64(r.take(8));
    case 0xcc: return v.getUint8(r.take(1));
    case 0xcd: return v.getUint16(r.take(2));
    case 0xce: return v.getUint32(r.take(4));
    case 0xcf: return int64(r, false);
    case 0xd0: return v.getInt8(r.take(1));
    case 0xd1: return v.getInt16(r.take(2));
    case 0xd2: return v.getInt32(r.take(4));
    case 0xd3: return int64(r, true);
    case 0xd9: return str(r, v.getUint8(r.take(1)));
    case 0xda: return str(r, v.getUint16(r.take(2)));
    case 0xdb: return str(r, v.getUint32(r.take(4)));
    case 0xdc: return readArray(r, v.getUint16(r.take(2)), depth);
    case 0xdd: return readArray(r, v.getUint32(r.take(4)), depth);
    case 0xde: return readMap(r, v.getUint16(r.take(2)), depth);
    case 0xdf: return readMap(r, v.getUint32(r.take(4)), depth);
    case 0xc1: throw new CodecError('invalid MessagePack byte 0xc1');
    default: throw new CodecError('MessagePack extension types are not allowed');
  }
}

function readArray(r: Reader, n: number, depth: number): unknown[] {
  if (depth + 1 >= MAX_DEPTH) throw new CodecError(`nested deeper than ${MAX_DEPTH} levels`);
  if (n > r.b.length - r.p) throw new CodecError('truncated MessagePack');
  const out = new Array<unknown>(n);
  for (let i = 0; i < n; i++) out[i] = readValue(r, depth + 1);
  return out;
}

function readMap(r: Reader, n: number, depth: number): Record<string, unknown> {
  if (depth + 1 >= MAX_DEPTH) throw new CodecError(`nested deeper than ${MAX_DEPTH} levels`);
  if (n * 2 > r.b.length - r.p) throw new CodecError('truncated MessagePack');
  const out: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    const k = readValue(r, depth + 1);
    const x = readValue(r, depth + 1);
    const key = typeof k === 'string' ? k : String(k);
    // A key named __proto__ is data, never the object's prototype.
    Object.defineProperty(out, key, { value: x, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Decodes exactly one MessagePack value filling `bytes`. Throws CodecError otherwise. */
export function decode(bytes: Uint8Array): unknown {
  const r = new Reader(bytes);
  const v = readValue(r, 0);
  if (r.p !== bytes.length) throw new CodecError('trailing bytes after the MessagePack value');
  return v;
}
