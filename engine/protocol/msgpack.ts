/**
 * The MessagePack subset the wire protocol needs, done by hand so that the hot path allocates
 * nothing and never decodes a message body: `skipValue` walks one value (validating structure,
 * nesting depth, and refusing extension types), `MsgWriter` writes maps, strings, integers and
 * raw already-encoded values into a caller's buffer. Pure: no I/O, no state beyond the writer.
 */

/** skipValue results below zero. */
export const SKIP_TRUNCATED = -1;
export const SKIP_EXTENSION = -2;
export const SKIP_TOO_DEEP = -3;
export const SKIP_INVALID = -4;

/**
 * Returns the offset just past the MessagePack value starting at `p`, or a negative SKIP_* code.
 * `depth` is the nesting level of this value (1 for a body); containers deeper than `maxDepth`
 * give SKIP_TOO_DEEP. Recursion is bounded by maxDepth.
 */
export function skipValue(b: Uint8Array, p: number, end: number, depth: number, maxDepth: number): number {
  if (p >= end) return SKIP_TRUNCATED;
  const c = b[p]!;
  let n: number;
  let items: number;
  if (c <= 0x7f || c >= 0xe0) return p + 1;
  if (c <= 0x8f) { items = (c & 0x0f) * 2; p += 1; }
  else if (c <= 0x9f) { items = c & 0x0f; p += 1; }
  else if (c <= 0xbf) { n = p + 1 + (c & 0x1f); return n <= end ? n : SKIP_TRUNCATED; }
  else {
    switch (c) {
      case 0xc0: case 0xc2: case 0xc3: return p + 1;
      case 0xc1: return SKIP_INVALID;
      case 0xc4: case 0xd9: if (p + 2 > end) return SKIP_TRUNCATED; n = p + 2 + b[p + 1]!; return n <= end ? n : SKIP_TRUNCATED;
      case 0xc5: case 0xda: if (p + 3 > end) return SKIP_TRUNCATED; n = p + 3 + be16(b, p + 1); return n <= end ? n : SKIP_TRUNCATED;
      case 0xc6: case 0xdb: if (p + 5 > end) return SKIP_TRUNCATED; n = p + 5 + be32(b, p + 1); return n <= end ? n : SKIP_TRUNCATED;
      case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return SKIP_EXTENSION;
      case 0xca: return p + 5 <= end ? p + 5 : SKIP_TRUNCATED;
      case 0xcb: return p + 9 <= end ? p + 9 : SKIP_TRUNCATED;
      case 0xcc: case 0xd0: return p + 2 <= end ? p + 2 : SKIP_TRUNCATED;
      case 0xcd: case 0xd1: return p + 3 <= end ? p + 3 : SKIP_TRUNCATED;
      case 0xce: case 0xd2: return p + 5 <= end ? p + 5 : SKIP_TRUNCATED;
      case 0xcf: case 0xd3: return p + 9 <= end ? p + 9 : SKIP_TRUNCATED;
      case 0xdc: if (p + 3 > end) return SKIP_TRUNCATED; items = be16(b, p + 1); p += 3; break;
      case 0xdd: if (p + 5 > end) return SKIP_TRUNCATED; items = be32(b, p + 1); p += 5; break;
      case 0xde: if (p + 3 > end) return SKIP_TRUNCATED; items = be16(b, p + 1) * 2; p += 3; break;
      case 0xdf: if (p + 5 > end) return SKIP_TRUNCATED; items = be32(b, p + 1) * 2; p += 5; break;
      default: return SKIP_INVALID;
    }
  }
  // A container: every item takes at least one byte, so a count beyond the bytes left is truncated.
  if (depth > maxDepth) return SKIP_TOO_DEEP;
  if (items > end - p) return SKIP_TRUNCATED;
  for (let i = 0; i < items; i++) {
    p = skipValue(b, p, end, depth + 1, maxDepth);
    if (p < 0) return p;
  }
  return p;
}

/**
 * Like skipValue but without a depth limit and without recursion (an explicit count of values
 * still to skip), so that a frame can be walked past a body that is too deep: the error can then
 * still carry a `ref` that comes after the body.
 */
export function skipValueFlat(b: Uint8Array, p: number, end: number): number {
  let pending = 1;
  while (pending > 0) {
    if (p >= end) return SKIP_TRUNCATED;
    const c = b[p]!;
    let items = -1;
    if (c >= 0x80 && c <= 0x8f) { items = (c & 0x0f) * 2; p += 1; }
    else if (c >= 0x90 && c <= 0x9f) { items = c & 0x0f; p += 1; }
    else if (c === 0xdc || c === 0xde) {
      if (p + 3 > end) return SKIP_TRUNCATED;
      items = be16(b, p + 1) * (c === 0xde ? 2 : 1); p += 3;
    } else if (c === 0xdd || c === 0xdf) {
      if (p + 5 > end) return SKIP_TRUNCATED;
      items = be32(b, p + 1) * (c === 0xdf ? 2 : 1); p += 5;
    }
    pending--;
    if (items >= 0) {
      if (items > end - p) return SKIP_TRUNCATED;
      pending += items;
    } else {
      p = skipValue(b, p, end, 1, 1);
      if (p < 0) return p;
    }
  }
  return p;
}

export function be16(b: Uint8Array, p: number): number {
  return (b[p]! << 8) | b[p + 1]!;
}

export function be32(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}

const f32 = new Float32Array(1);
const f32b = new Uint8Array(f32.buffer);
const f64 = new Float64Array(1);
const f64b = new Uint8Array(f64.buffer);
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Reads a number (any integer or float encoding) at `p`; NaN when the value is not a number.
 * Integers beyond 2^53 come back as +-Infinity so that range checks reject them.
 */
export function readNumber(b: Uint8Array, p: number): number {
  const c = b[p]!;
  if (c <= 0x7f) return c;
  if (c >= 0xe0) return c - 0x100;
  switch (c) {
    case 0xcc: return b[p + 1]!;
    case 0xcd: return be16(b, p + 1);
    case 0xce: return be32(b, p + 1);
    case 0xcf: { const hi = be32(b, p + 1); const lo = be32(b, p + 5); return hi >= 0x200000 ? Infinity : hi * 0x100000000 + lo; }
    case 0xd0: return (b[p + 1]! << 24) >> 24;
    case 0xd1: return (be16(b, p + 1) << 16) >> 16;
    case 0xd2: return be32(b, p + 1) | 0;
    case 0xd3: {
      const hi = be32(b, p + 1) | 0; const lo = be32(b, p + 5);
      if (hi >= 0x200000 || hi < -0x200000) return hi < 0 ? -Infinity : Infinity;
      return hi * 0x100000000 + lo;
    }
    case 0xca: for (let i = 0; i < 4; i++) f32b[LITTLE ? 3 - i : i] = b[p + 1 + i]!; return f32[0]!;
    case 0xcb: for (let i = 0; i < 8; i++) f64b[LITTLE ? 7 - i : i] = b[p + 1 + i]!; return f64[0]!;
    default: return NaN;
  }
}

/** Start and end of the payload of a str at `p`; sets strStart and returns the end, or -1 if `p` holds no str. */
export function strSpan(b: Uint8Array, p: number, out: { strStart: number }): number {
  const c = b[p]!;
  if (c >= 0xa0 && c <= 0xbf) { out.strStart = p + 1; return p + 1 + (c & 0x1f); }
  if (c === 0xd9) { out.strStart = p + 2; return p + 2 + b[p + 1]!; }
  if (c === 0xda) { out.strStart = p + 3; return p + 3 + be16(b, p + 1); }
  if (c === 0xdb) { out.strStart = p + 5; return p + 5 + be32(b, p + 1); }
  return -1;
}

/** Decodes bytes known to be ASCII (room names, user ids) without a TextDecoder. */
export function asciiString(b: Uint8Array, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end; i++) s += String.fromCharCode(b[i]!);
  return s;
}

const utf8 = new TextEncoder();
/**
 * Writes MessagePack into a caller-owned buffer. The caller sizes the buffer (an upper bound, or
 * the exact size a MsgSizer counted); writing past its end throws RangeError rather than
 * corrupting what follows. Each call checks exactly the bytes it writes.
 */
export class MsgWriter {
  buf: Uint8Array;
  pos: number;
  private limit: number;

  constructor(buf: Uint8Array = new Uint8Array(0), pos = 0, limit = buf.byteLength) {
    this.buf = buf;
    this.pos = pos;
    this.limit = limit;
  }

  reset(buf: Uint8Array, pos = 0, limit = buf.byteLength): this {
    this.buf = buf;
    this.pos = pos;
    this.limit = limit;
    return this;
  }

  private room(n: number): void {
    if (this.pos + n > this.limit) {
      throw new RangeError(`MsgWriter: ${n} more bytes at ${this.pos} exceed the buffer's ${this.limit}`);
    }
  }

  mapHeader(n: number): this {
    this.room(n < 16 ? 1 : n < 0x10000 ? 3 : 5);
    const b = this.buf;
    if (n < 16) b[this.pos++] = 0x80 | n;
    else if (n < 0x10000) { b[this.pos++] = 0xde; b[this.pos++] = n >>> 8; b[this.pos++] = n & 0xff; }
    else { b[this.pos++] = 0xdf; this.u32(n); }
    return this;
  }

  arrayHeader(n: number): this {
    this.room(n < 16 ? 1 : n < 0x10000 ? 3 : 5);
    const b = this.buf;
    if (n < 16) b[this.pos++] = 0x90 | n;
    else if (n < 0x10000) { b[this.pos++] = 0xdc; b[this.pos++] = n >>> 8; b[this.pos++] = n & 0xff; }
    else { b[this.pos++] = 0xdd; this.u32(n); }
    return this;
  }

  private u32(n: number): void {
    const b = this.buf;
    b[this.pos++] = n >>> 24; b[this.pos++] = (n >>> 16) & 0xff; b[this.pos++] = (n >>> 8) & 0xff; b[this.pos++] = n & 0xff;
  }

  private strHeader(n: number): void {
    this.room((n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5) + n);
    const b = this.buf;
    if (n < 32) b[this.pos++] = 0xa0 | n;
    else if (n < 0x100) { b[this.pos++] = 0xd9; b[this.pos++] = n; }
    else if (n < 0x10000) { b[this.pos++] = 0xda; b[this.pos++] = n >>> 8; b[this.pos++] = n & 0xff; }
    else { b[this.pos++] = 0xdb; this.u32(n); }
  }

  str(s: string): this {
    let ascii = true;
    for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) { ascii = false; break; }
    if (ascii) {
      this.strHeader(s.length);
      const b = this.buf;
      for (let i = 0; i < s.length; i++) b[this.pos++] = s.charCodeAt(i);
      return this;
    }
    const bytes = utf8.encode(s);
    return this.strBytes(bytes, 0, bytes.byteLength);
  }

  strBytes(src: Uint8Array, start: number, end: number): this {
    this.strHeader(end - start);
    this.buf.set(src.subarray(start, end), this.pos);
    this.pos += end - start;
    return this;
  }

  /** A non-negative integer up to 2^53 - 1, in the smallest encoding. */
  uint(n: number): this {
    this.room(n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x100000000 ? 5 : 9);
    const b = this.buf;
    if (n < 0x80) b[this.pos++] = n;
    else if (n < 0x100) { b[this.pos++] = 0xcc; b[this.pos++] = n; }
    else if (n < 0x10000) { b[this.pos++] = 0xcd; b[this.pos++] = n >>> 8; b[this.pos++] = n & 0xff; }
    else if (n < 0x100000000) { b[this.pos++] = 0xce; this.u32(n); }
    else { b[this.pos++] = 0xcf; this.u32(Math.floor(n / 0x100000000)); this.u32(n >>> 0); }
    return this;
  }

  nil(): this { this.room(1); this.buf[this.pos++] = 0xc0; return this; }

  bool(v: boolean): this { this.room(1); this.buf[this.pos++] = v ? 0xc3 : 0xc2; return this; }

  /** Copies bytes that already are one encoded MessagePack value. */
  raw(src: Uint8Array, start: number, end: number): this {
    this.room(end - start);
    this.buf.set(src.subarray(start, end), this.pos);
    this.pos += end - start;
    return this;
  }

  /** A little-endian u32 (record fields beside the MessagePack, not MessagePack itself). */
  u32le(n: number): this {
    this.room(4);
    const b = this.buf;
    b[this.pos++] = n & 0xff; b[this.pos++] = (n >>> 8) & 0xff; b[this.pos++] = (n >>> 16) & 0xff; b[this.pos++] = n >>> 24;
    return this;
  }

  /** One byte (record fields beside the MessagePack). */
  byte(n: number): this {
    this.room(1);
    this.buf[this.pos++] = n;
    return this;
  }
}

/**
 * A MsgWriter that writes nothing and only advances `pos` by what each call would write: run the
 * same encoder over it first to learn a frame's exact size, so that no size is computed by hand
 * beside the code that writes it.
 */
export class MsgSizer extends MsgWriter {
  /** Starts a new measurement at 0. */
  start(): this {
    this.pos = 0;
    return this;
  }

  override mapHeader(n: number): this { this.pos += n < 16 ? 1 : n < 0x10000 ? 3 : 5; return this; }
  override arrayHeader(n: number): this { this.pos += n < 16 ? 1 : n < 0x10000 ? 3 : 5; return this; }
  override str(s: string): this { return this.strLen(utf8Length(s)); }
  override strBytes(_src: Uint8Array, start: number, end: number): this { return this.strLen(end - start); }
  override uint(n: number): this { this.pos += n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x100000000 ? 5 : 9; return this; }
  override nil(): this { this.pos += 1; return this; }
  override bool(_v: boolean): this { this.pos += 1; return this; }
  override raw(_src: Uint8Array, start: number, end: number): this { this.pos += end - start; return this; }
  override u32le(_n: number): this { this.pos += 4; return this; }
  override byte(_n: number): this { this.pos += 1; return this; }

  private strLen(n: number): this {
    this.pos += (n < 32 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5) + n;
    return this;
  }
}

/** Bytes of `s` in UTF-8 (lone surrogates count as U+FFFD, 3 bytes, as TextEncoder writes them). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { n += 4; i++; }
    else n += 3;
  }
  return n;
}
