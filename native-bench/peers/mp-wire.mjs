/**
 * The MessagePack plumbing of the single-threaded protocol peer (uws-protocol.mjs): a scanner that
 * checks one client frame without decoding its body (standard MessagePack only, one map, no
 * trailing bytes, bounded nesting) and returns the spans of its top-level values, and a writer
 * that encodes server frames into one preallocated, growing buffer. No I/O.
 */

/** Thrown by scan(): code is 'bad_frame' or 'bad_request' (nesting too deep, a key given twice). */
export class WireError extends Error {
  constructor(code, msg) { super(msg); this.code = code; }
}

const dv = (u8) => new DataView(u8.buffer, u8.byteOffset, u8.byteLength);

/**
 * End offset of the value at p (throws WireError on extension types, truncation, depth > maxDepth).
 * depth is the level of the value at p (the frame's own map is level 0, a body is level 1).
 */
export function skip(u8, p, depth, maxDepth) {
  if (p >= u8.length) throw new WireError('bad_frame', 'truncated frame');
  if (depth > maxDepth) throw new WireError('bad_request', `nesting deeper than ${maxDepth} levels`);
  const b = u8[p];
  if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) return p + 1;
  if (b >= 0xa0 && b <= 0xbf) return need(u8, p + 1 + (b & 0x1f));
  if (b >= 0x90 && b <= 0x9f) return items(u8, p + 1, b & 0x0f, depth, maxDepth);
  if (b >= 0x80 && b <= 0x8f) return items(u8, p + 1, 2 * (b & 0x0f), depth, maxDepth);
  const v = dv(u8);
  switch (b) {
    case 0xcc: case 0xd0: return need(u8, p + 2);
    case 0xcd: case 0xd1: return need(u8, p + 3);
    case 0xce: case 0xd2: case 0xca: return need(u8, p + 5);
    case 0xcf: case 0xd3: case 0xcb: return need(u8, p + 9);
    case 0xd9: case 0xc4: need(u8, p + 2); return need(u8, p + 2 + u8[p + 1]);
    case 0xda: case 0xc5: need(u8, p + 3); return need(u8, p + 3 + v.getUint16(p + 1));
    case 0xdb: case 0xc6: need(u8, p + 5); return need(u8, p + 5 + v.getUint32(p + 1));
    case 0xdc: need(u8, p + 3); return items(u8, p + 3, v.getUint16(p + 1), depth, maxDepth);
    case 0xdd: need(u8, p + 5); return items(u8, p + 5, v.getUint32(p + 1), depth, maxDepth);
    case 0xde: need(u8, p + 3); return items(u8, p + 3, 2 * v.getUint16(p + 1), depth, maxDepth);
    case 0xdf: need(u8, p + 5); return items(u8, p + 5, 2 * v.getUint32(p + 1), depth, maxDepth);
    default: throw new WireError('bad_frame', `extension type or reserved byte 0x${b.toString(16)}`);
  }
}
function need(u8, end) {
  if (end > u8.length) throw new WireError('bad_frame', 'truncated frame');
  return end;
}
function items(u8, p, n, depth, maxDepth) {
  if (n > 0 && depth + 1 > maxDepth) throw new WireError('bad_request', `nesting deeper than ${maxDepth} levels`);
  for (let i = 0; i < n; i++) p = skip(u8, p, depth + 1, maxDepth);
  return p;
}

/** [start, end) of the string's bytes at p, or null when the value at p is not a string. */
export function strSpan(u8, p) {
  const b = u8[p];
  if (b >= 0xa0 && b <= 0xbf) return [p + 1, p + 1 + (b & 0x1f)];
  if (b === 0xd9) return [p + 2, p + 2 + u8[p + 1]];
  if (b === 0xda) return [p + 3, p + 3 + dv(u8).getUint16(p + 1)];
  if (b === 0xdb) return [p + 5, p + 5 + dv(u8).getUint32(p + 1)];
  return null;
}

const latin = (u8, a, e) => {
  let s = '';
  for (let i = a; i < e; i++) s += String.fromCharCode(u8[i]);
  return s;
};

/**
 * The spans of a frame's known top-level keys, reused from frame to frame (valid until the next
 * scan): get(name) returns [start, end) of the value, or undefined. No allocation per frame.
 */
export class Keys {
  constructor(names) {
    this.names = names;
    this.bytes = names.map((n) => Uint8Array.from(n, (c) => c.charCodeAt(0)));
    this.index = new Map(names.map((n, i) => [n, i]));
    this.spans = names.map(() => [0, 0]);
    this.seen = new Uint8Array(names.length);
  }
  get(name) {
    const i = this.index.get(name);
    return this.seen[i] ? this.spans[i] : undefined;
  }
  /** Index of the key whose bytes are u8[a, e), or -1. */
  find(u8, a, e) {
    const n = e - a;
    for (let i = 0; i < this.bytes.length; i++) {
      const k = this.bytes[i];
      if (k.length !== n) continue;
      let j = 0;
      while (j < n && k[j] === u8[a + j]) j++;
      if (j === n) return i;
    }
    return -1;
  }
}

/**
 * Checks a whole client frame and fills `keys` with the spans of its known string keys (unknown
 * and non-string keys are skipped; a known key given twice is bad_request).
 */
export function scan(u8, keys, maxDepth) {
  if (u8.length === 0) throw new WireError('bad_frame', 'empty frame');
  const b = u8[0];
  let n;
  let p;
  if (b >= 0x80 && b <= 0x8f) { n = b & 0x0f; p = 1; }
  else if (b === 0xde && u8.length >= 3) { n = dv(u8).getUint16(1); p = 3; }
  else if (b === 0xdf && u8.length >= 5) { n = dv(u8).getUint32(1); p = 5; }
  else throw new WireError('bad_frame', 'a frame is exactly one MessagePack map');
  keys.seen.fill(0);
  for (let i = 0; i < n; i++) {
    const kb = u8[p];
    const kEnd = skip(u8, p, 1, maxDepth);
    const vEnd = skip(u8, kEnd, 1, maxDepth);
    // keys are short strings: fixstr without allocating; longer string keys are unknown keys
    if ((kb >= 0xa0 && kb <= 0xbf) || kb === 0xd9) {
      const k = keys.find(u8, p + (kb === 0xd9 ? 2 : 1), kEnd);
      if (k >= 0) {
        if (keys.seen[k]) throw new WireError('bad_request', `key ${keys.names[k]} given twice`);
        keys.seen[k] = 1;
        keys.spans[k][0] = kEnd;
        keys.spans[k][1] = vEnd;
      }
    }
    p = vEnd;
  }
  if (p !== u8.length) throw new WireError('bad_frame', 'trailing bytes after the map');
  return keys;
}

/** The string at span, as latin1 when ASCII (names here are ASCII), else utf8; null when not a string. */
export function readStr(u8, span, dec) {
  const s = strSpan(u8, span[0]);
  if (!s) return null;
  for (let i = s[0]; i < s[1]; i++) if (u8[i] > 0x7f) return dec.decode(u8.subarray(s[0], s[1]));
  return latin(u8, s[0], s[1]);
}

/** An integer (any encoding, or an integral float) at span; undefined for nil; NaN for anything else. */
export function readInt(u8, span) {
  const p = span[0];
  const b = u8[p];
  const v = dv(u8);
  if (b <= 0x7f) return b;
  if (b >= 0xe0) return b - 256;
  switch (b) {
    case 0xc0: return undefined;
    case 0xcc: return u8[p + 1];
    case 0xcd: return v.getUint16(p + 1);
    case 0xce: return v.getUint32(p + 1);
    case 0xcf: return Number(v.getBigUint64(p + 1));
    case 0xd0: return v.getInt8(p + 1);
    case 0xd1: return v.getInt16(p + 1);
    case 0xd2: return v.getInt32(p + 1);
    case 0xd3: return Number(v.getBigInt64(p + 1));
    case 0xca: { const f = v.getFloat32(p + 1); return Number.isInteger(f) ? f : NaN; }
    case 0xcb: { const f = v.getFloat64(p + 1); return Number.isInteger(f) ? f : NaN; }
    default: return NaN;
  }
}

/** Encoder of server frames into one buffer that grows (and is reused: take bytes() before the next reset()). */
export class Writer {
  constructor(size = 1 << 16) { this.buf = Buffer.allocUnsafe(size); this.n = 0; }
  reset() { this.n = 0; return this; }
  room(k) {
    if (this.n + k <= this.buf.length) return;
    const nb = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.n + k));
    this.buf.copy(nb, 0, 0, this.n);
    this.buf = nb;
  }
  map(k) { this.room(5); if (k < 16) this.buf[this.n++] = 0x80 | k; else { this.buf[this.n++] = 0xde; this.buf.writeUInt16BE(k, this.n); this.n += 2; } return this; }
  arr(k) {
    this.room(5);
    if (k < 16) this.buf[this.n++] = 0x90 | k;
    else if (k < 65536) { this.buf[this.n++] = 0xdc; this.buf.writeUInt16BE(k, this.n); this.n += 2; }
    else { this.buf[this.n++] = 0xdd; this.buf.writeUInt32BE(k, this.n); this.n += 4; }
    return this;
  }
  str(s) {
    const max = s.length * 3;
    this.room(max + 5);
    // header sized for the worst case, fixed up once the length is known
    const len = max < 32 ? this.buf.write(s, this.n + 1, 'utf8') : max < 256 ? this.buf.write(s, this.n + 2, 'utf8') : this.buf.write(s, this.n + 5, 'utf8');
    if (max < 32) { this.buf[this.n] = 0xa0 | len; this.n += 1 + len; }
    else if (max < 256) { this.buf[this.n] = 0xd9; this.buf[this.n + 1] = len; this.n += 2 + len; }
    else { this.buf[this.n] = 0xdb; this.buf.writeUInt32BE(len, this.n + 1); this.n += 5 + len; }
    return this;
  }
  uint(x) {
    this.room(9);
    if (x < 128) this.buf[this.n++] = x;
    else if (x < 65536) { this.buf[this.n++] = 0xcd; this.buf.writeUInt16BE(x, this.n); this.n += 2; }
    else if (x < 4294967296) { this.buf[this.n++] = 0xce; this.buf.writeUInt32BE(x, this.n); this.n += 4; }
    else { this.buf[this.n++] = 0xcf; this.buf.writeBigUInt64BE(BigInt(x), this.n); this.n += 8; }
    return this;
  }
  bool(b) { this.room(1); this.buf[this.n++] = b ? 0xc3 : 0xc2; return this; }
  raw(u8, a = 0, e = u8.length) { this.room(e - a); this.buf.set(u8.subarray(a, e), this.n); this.n += e - a; return this; }
  /** A view of what was written (valid until the next write). */
  view() { return this.buf.subarray(0, this.n); }
  /** A copy of what was written. */
  copy() { const b = Buffer.allocUnsafe(this.n); this.buf.copy(b, 0, 0, this.n); return b; }
}
