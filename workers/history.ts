/**
 * Room history: per room, the newest messages (each an encoded `msg` frame), contiguous by seq,
 * and one shard-wide owner that keeps the total under a byte budget. Nothing else creates, drops
 * or resizes an entry.
 *
 * A room's entries live in one byte buffer of its own, used as a ring: a message is copied in at
 * the tail, the oldest leaves from the head, and an entry that does not fit before the end of the
 * buffer starts at 0 (the tail is skipped, as in engine/ring). So storing a message allocates
 * nothing but two array slots (its offset and length): no buffer per message, no pool lookup, no
 * ArrayBuffer for the GC to track. A buffer that is full grows (copying the entries, compacted):
 * it doubles up to about 1.25x what the room's historyLimit of such frames takes (while the shard
 * is under its budget), then by 1.25x;
 * one left holding much less than its size shrinks to 1.25x what it holds (see shrinkIfSparse);
 * an empty history holds no buffer. Measured before this
 * (many-small-2000x2): a pooled buffer per message (WeakMap entry, ArrayBuffer, backing store)
 * took about 40% of the shard's CPU while histories filled, in `acquire` and the GC.
 *
 * A frame over LARGE_FRAME bytes is kept apart, in a buffer of its own from the shard's pool of
 * size classes 1/8 apart (as every frame was before): there the per-buffer overhead is small
 * next to the frame, and a ring of a few such frames would copy and churn large buffers at every
 * resize. Evicted, such a buffer goes back to the pool and is reused by the next large frame.
 *
 * Memory is charged as it is held: each room its buffer's whole size plus BUFFER_OVERHEAD (the
 * Uint8Array, its ArrayBuffer and backing store), plus ENTRY_OVERHEAD per entry (its two array
 * slots); a large frame its pooled buffer's size plus POOLED_OVERHEAD. The shard's charged total
 * never exceeds `budgetBytes` after a push.
 *
 * Eviction, when a push takes the shard over `budgetBytes`: the oldest messages of the rooms least
 * recently published to go first, down to one message per room; only when every room is down to
 * its newest message do whole rooms' newest messages go, least recently published first. A room's
 * charge falls mostly by its buffer's shrink, so an evicted room may lose up to about a third of
 * its entries at once (until it holds under 1/1.5 of its buffer). A push to the room already at the back of
 * its list (one busy room) costs no reordering. A room's own `historyLimit` drops its oldest
 * message as before. Either way the kept range stays contiguous and ends at the room's seq, so
 * `hist` and `joined` report `truncated` for what went.
 *
 * Views handed out by `at()` point into the room's buffer: they are valid until that history
 * changes (a push, a drop, a replace), so a page is built and written within one handle().
 */

import { BufferPool, geometricClasses } from '../engine/pool/index.js';

/** Bytes charged per entry: its offset and length slots (8 B each), arrays up to 2x what they hold. */
export const ENTRY_OVERHEAD = 32;
/** Bytes charged per room holding a buffer besides its size: the Uint8Array, ArrayBuffer and backing store (~195 B measured). */
export const BUFFER_OVERHEAD = 256;
/** Frames above this many bytes get a pooled buffer of their own instead of a place in the room's ring. */
export const LARGE_FRAME = 4096;
/** Bytes charged per pooled (large) frame besides its buffer's size (V8's object overhead for a buffer, ~195 B measured). */
export const POOLED_OVERHEAD = 256;
/** The smallest buffer a room holds. */
const MIN_CAP = 256;
/** Pool buffer classes for large frames: up to 2 MiB (a msg frame around the largest body, maxFrameBytes <= 1 MiB). */
const LARGE_CLASSES = geometricClasses(LARGE_FRAME, 2 << 20, 8);

/** Free bytes the history pool keeps for reuse: 1/8 of the budget, at most 16 MiB. */
export function poolFreeBytes(budgetBytes: number): number {
  return Math.min(16 << 20, Math.floor(budgetBytes / 8));
}

const EMPTY = new Uint8Array(0);
const NONE = 0;
const SINGLE = 1;
const MULTI = 2;

/** The buffer size that holds `need` bytes with room to grow: 1.25x, at least MIN_CAP. */
function capFor(need: number): number {
  return Math.max(MIN_CAP, Math.ceil((need + (need >> 2)) / 8) * 8);
}

/** One room's entries, oldest first: small frames in a byte ring of its own, large ones in pooled buffers. */
export class History {
  private buf: Uint8Array = EMPTY;
  /** Offset in buf (-1: a pooled frame, in `ext`) and frame length of each entry; entries [head, length) are kept. */
  private offs: number[] = [];
  private lens: number[] = [];
  private head = 0;
  /** Entries removed so far: entry i's number (the key in `ext`) is shifted + i. */
  private shifted = 0;
  /** Pooled frames by entry number (null until the first). */
  private ext: Map<number, Uint8Array> | null = null;
  /** Entries in the ring (not pooled); read-only outside. */
  ringCount = 0;
  /** Where the oldest ring entry starts, where the next one goes, and the bytes between them (entries + a skipped tail). */
  private hb = 0;
  private tb = 0;
  private used = 0;
  /** Sum of the kept entries' frame lengths (ring and pooled). */
  live = 0;
  /** Bytes of the pooled frames' buffers. */
  pooledBytes = 0;
  /** Bytes charged for this room (see `charge()`). */
  bytes = 0;
  /** Which eviction list holds it: NONE, SINGLE or MULTI. */
  where = NONE;

  get count(): number {
    return this.offs.length - this.head;
  }

  /** Size of the room's ring buffer (0: none). */
  get capacity(): number {
    return this.buf.byteLength;
  }

  /** Bytes of the ring in use: entries, gaps of shortened ones, a skipped tail. */
  get ringUsed(): number {
    return this.used;
  }

  /** Frame bytes of the pooled entries, and of the ring's. */
  private pooledLive = 0;
  get ringLive(): number {
    return this.live - this.pooledLive;
  }

  /** Pooled entries kept. */
  get pooledCount(): number {
    return this.count - this.ringCount;
  }

  /** What this history is charged: its ring buffer with BUFFER_OVERHEAD, ENTRY_OVERHEAD per entry, pooled buffers with POOLED_OVERHEAD. */
  charge(): number {
    const cap = this.buf.byteLength;
    return (cap === 0 ? 0 : cap + BUFFER_OVERHEAD) + this.count * ENTRY_OVERHEAD + this.pooledBytes + this.pooledCount * POOLED_OVERHEAD;
  }

  /** The i-th kept entry's frame (0 = oldest), in its first len(i) bytes: valid until this history changes. */
  at(i: number): Uint8Array {
    const o = this.offs[this.head + i]!;
    if (o < 0) return this.ext!.get(this.shifted + i)!;
    return this.buf.subarray(o, o + this.lens[this.head + i]!);
  }

  /** The i-th kept entry's frame length. */
  len(i: number): number {
    return this.lens[this.head + i]!;
  }

  /** Where a `len`-byte entry goes in the ring as it is, or -1 when it does not fit. */
  private slot(len: number): number {
    const cap = this.buf.byteLength;
    if (this.ringCount === 0) return len <= cap ? 0 : -1;
    if (cap - this.used < len) return -1;
    if (this.tb > this.hb) return cap - this.tb >= len ? this.tb : (len <= this.hb ? 0 : -1);
    return this.hb - this.tb >= len ? this.tb : -1; // wrapped: the free bytes are [tb, hb)
  }

  /** Copies src[start, start+len) into the ring as the newest entry if it fits without growing; false otherwise. */
  append(src: Uint8Array, start: number, len: number): boolean {
    const at = this.slot(len);
    if (at < 0) return false;
    if (this.ringCount === 0) { this.hb = 0; this.tb = 0; this.used = 0; }
    else if (at === 0 && this.tb !== 0) this.used += this.buf.byteLength - this.tb; // the skipped tail
    this.buf.set(src.subarray(start, start + len), at);
    this.offs.push(at);
    this.lens.push(len);
    this.tb = at + len;
    this.used += len;
    this.live += len;
    this.ringCount++;
    return true;
  }

  /** Appends a pooled buffer holding a frame of `len` bytes as the newest entry. */
  appendPooled(b: Uint8Array, len: number): void {
    (this.ext ??= new Map()).set(this.shifted + this.count, b);
    this.offs.push(-1);
    this.lens.push(len);
    this.live += len;
    this.pooledLive += len;
    this.pooledBytes += b.byteLength;
  }

  /** Removes the oldest entry; returns its pooled buffer (for the caller to release), or null for a ring entry. */
  shift(): Uint8Array | null {
    const o = this.offs[this.head]!;
    const l = this.lens[this.head]!;
    const n = this.shifted;
    this.head++;
    this.shifted++;
    // Compact once the dead prefix is half the arrays, so they stay within 2x what they hold.
    if (this.head >= 32 && this.head * 2 >= this.offs.length) {
      this.offs = this.offs.slice(this.head);
      this.lens = this.lens.slice(this.head);
      this.head = 0;
    }
    this.live -= l;
    if (o < 0) {
      const b = this.ext!.get(n)!;
      this.ext!.delete(n);
      this.pooledLive -= l;
      this.pooledBytes -= b.byteLength;
      return b;
    }
    this.ringCount--;
    if (this.ringCount === 0) { this.hb = 0; this.tb = 0; this.used = 0; return null; }
    let k = this.head;
    while (this.offs[k]! < 0) k++;
    const next = this.offs[k]!;
    this.used -= next > o ? next - o : this.buf.byteLength - o + next;
    this.hb = next;
    return null;
  }

  /**
   * Moves the ring entries, compacted from 0, into a new buffer of `cap` bytes (0: none, only
   * when the ring is empty); with `ri >= 0` the ri-th entry (a ring entry) becomes src[start, start+len) on the way.
   */
  resize(cap: number, ri = -1, src: Uint8Array = EMPTY, start = 0, len = 0): void {
    const nb = cap === 0 ? EMPTY : new Uint8Array(cap);
    if (ri < 0 && this.ringCount > 0 && this.moveRing(nb)) return;
    const offs: number[] = [];
    const lens: number[] = [];
    let p = 0;
    let live = 0;
    for (let i = 0, n = this.count; i < n; i++) {
      const o = this.offs[this.head + i]!;
      let l = this.lens[this.head + i]!;
      if (o < 0) { offs.push(-1); lens.push(l); live += l; continue; }
      if (i === ri) { l = len; nb.set(src.subarray(start, start + len), p); }
      else nb.set(this.buf.subarray(o, o + l), p);
      offs.push(p);
      lens.push(l);
      p += l;
      live += l;
    }
    this.buf = nb;
    this.offs = offs;
    this.lens = lens;
    this.head = 0;
    this.hb = 0;
    this.tb = p;
    this.used = p;
    this.live = live;
  }

  /**
   * resize() without a replacement: the ring's bytes move in one copy, or two when it wraps
   * ([hb, the end of the last entry before the wrap), then [0, tb)), gaps of shortened entries
   * and all; only the offsets are rewritten. False (nothing done) when those gaps make it not fit.
   */
  private moveRing(nb: Uint8Array): boolean {
    const hb = this.hb;
    const tb = this.tb;
    const n = this.count;
    let e1 = tb; // end of the part that starts at hb
    if (tb <= hb) {
      e1 = hb;
      for (let i = 0; i < n; i++) {
        const o = this.offs[this.head + i]!;
        if (o >= hb) { const e = o + this.lens[this.head + i]!; if (e > e1) e1 = e; }
      }
    }
    const second = e1 - hb;
    if (second + (tb <= hb ? tb : 0) > nb.byteLength) return false;
    nb.set(this.buf.subarray(hb, e1), 0);
    if (tb <= hb) nb.set(this.buf.subarray(0, tb), second);
    const offs: number[] = new Array<number>(n);
    const lens: number[] = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      const o = this.offs[this.head + i]!;
      offs[i] = o < 0 ? -1 : o >= hb ? o - hb : o + second;
      lens[i] = this.lens[this.head + i]!;
    }
    this.buf = nb;
    this.offs = offs;
    this.lens = lens;
    this.head = 0;
    this.hb = 0;
    this.tb = tb <= hb ? second + tb : tb - hb;
    this.used = this.tb;
    return true;
  }

  /** True when the i-th kept entry is a pooled frame. */
  isPooled(i: number): boolean {
    return this.offs[this.head + i]! < 0;
  }

  /** Puts a pooled buffer holding `len` bytes in the i-th (pooled) entry's place; returns the old buffer. */
  replacePooled(i: number, b: Uint8Array, len: number): Uint8Array {
    const key = this.shifted + i;
    const old = this.ext!.get(key)!;
    this.ext!.set(key, b);
    const was = this.lens[this.head + i]!;
    this.lens[this.head + i] = len;
    this.live += len - was;
    this.pooledLive += len - was;
    this.pooledBytes += b.byteLength - old.byteLength;
    return old;
  }

  /** Puts src[start, start+len) in the i-th (ring) entry's place: in place when it is no longer, else by a rebuild. */
  replace(i: number, src: Uint8Array, start: number, len: number): void {
    const old = this.lens[this.head + i]!;
    if (len <= old) {
      this.buf.set(src.subarray(start, start + len), this.offs[this.head + i]!);
      this.lens[this.head + i] = len;
      this.live += len - old;
      return;
    }
    this.resize(capFor(this.ringLive - old + len), i, src, start, len);
  }

  /**
   * Gives the ring buffer back when the ring holds nothing, and shrinks it to 1.25x what it holds
   * when that is under 1/`sparse` of its size: 3 after a room's own historyLimit drop (a room that
   * keeps publishing must not copy its history back and forth, and a few large entries need room
   * for a skipped tail), 1.5 after an eviction (the room is not being published to; its bytes go
   * to the rooms that are). Either way a resize follows at least a sixth of the buffer leaving,
   * so the copies cost a few bytes per byte stored.
   */
  shrinkIfSparse(sparse: number): void {
    const cap = this.buf.byteLength;
    if (this.ringCount === 0) { if (cap !== 0) this.resize(0); return; }
    if (cap > MIN_CAP && this.ringLive * sparse < cap) this.resize(capFor(this.ringLive));
  }
}

/** The shard's histories: the per-room limit, the byte budget and the counts stats report. */
export class Histories {
  messages = 0;
  /** Bytes charged (rooms' buffers, their overheads, ENTRY_OVERHEAD per entry, pooled frames). */
  bytes = 0;
  /** Messages dropped to keep the byte budget (not counting historyLimit). */
  evicted = 0;
  /** Rooms holding a ring buffer, and the bytes of those buffers not holding an entry (stats). */
  buffers = 0;
  private capacityBytes = 0;
  private ringBytes = 0;
  /** Histories with two or more entries, least recently pushed first (first to lose old entries). */
  private readonly multi = new Map<History, true>();
  /** Histories with exactly one entry, least recently pushed first. */
  private readonly single = new Map<History, true>();
  /** The history last put at the back of multi / single (undefined: not known). */
  private multiBack: History | undefined;
  private singleBack: History | undefined;
  /**
   * Buffers of large frames. Free lists keep at most poolFreeBytes (1/8 of the budget, at most
   * 16 MiB), trimmed to nothing when a tick finds history idle (see trimIdle).
   */
  readonly pool: BufferPool;
  /** Messages stored so far, and as of the last tick (trimIdle). */
  private stored = 0;
  private storedAtTick = 0;

  constructor(readonly historyLimit: number, readonly budgetBytes: number) {
    this.pool = new BufferPool({ classes: LARGE_CLASSES, maxPooledPerClass: 1 << 20, maxPooledBytes: poolFreeBytes(budgetBytes) });
  }

  /** Bytes of rooms' ring buffers that hold no entry (growth room, skipped tails, what left since the last shrink). */
  get slackBytes(): number {
    return this.capacityBytes - this.ringBytes;
  }

  /** History buffers held: rooms' ring buffers and pooled frames' buffers (0 once every room is gone). */
  get buffersHeld(): number {
    return this.buffers + this.pool.inUse;
  }

  /**
   * Appends a copy of src[start, start+len), the room's newest message, to h. A message that
   * cannot be kept at all (historyLimit 0, or alone over the budget) empties h instead: what is
   * kept always ends at the room's seq. Returns false when h is then empty.
   */
  push(h: History, src: Uint8Array, start: number, len: number): boolean {
    const pooled = len > LARGE_FRAME;
    const alone = pooled
      ? (len > this.pool.maxSize ? Infinity : this.pool.classSizeFor(len) + POOLED_OVERHEAD + ENTRY_OVERHEAD)
      : Math.max(MIN_CAP, len) + BUFFER_OVERHEAD + ENTRY_OVERHEAD;
    if (this.historyLimit === 0 || alone > this.budgetBytes) {
      this.clear(h);
      return false;
    }
    const before = this.account(h);
    this.stored++;
    if (pooled) {
      const b = this.pool.acquire(len);
      b.set(src.subarray(start, start + len));
      h.appendPooled(b, len);
    } else if (!h.append(src, start, len)) {
      // Full: grow, within the budget (the evictions below make room). What it holds is counted
      // as the bytes in use (gaps of shortened entries move with them). A room on its way to its
      // historyLimit doubles, up to 1.25x the size its limit's worth of such frames takes: a
      // filling room then leaves behind about its final size in old buffers for the GC, not the
      // 4x that growing by 1.25x each time would. Past that it grows by 1.25x.
      // Doubling only while the shard has the budget for it: at the budget it would take the bytes
      // from other rooms, whose buffers would shrink (a copy) only for this one to outgrow what it
      // got; 1.25x keeps the churn of rooms sharing a full budget small.
      const need = h.ringUsed + len;
      const full = Math.ceil(((this.historyLimit + 1) * (h.ringLive + len)) / (h.ringCount + 1) * 1.25) + len;
      const doubled = Math.min(2 * h.capacity, full);
      const cap = Math.max(capFor(need), this.bytes - h.capacity + doubled <= this.budgetBytes ? doubled : 0);
      h.resize(Math.max(need, Math.min(cap, this.budgetBytes - BUFFER_OVERHEAD)));
      if (!h.append(src, start, len)) throw new Error(`history: a ${len} B frame did not fit the ${h.capacity} B buffer grown for it`);
    }
    this.messages++;
    if (h.count > this.historyLimit) this.dropOldest(h, 3);
    this.settle(h, before);
    this.file(h);
    while (this.bytes > this.budgetBytes) this.evictOne();
    return true;
  }

  /**
   * Replaces the i-th kept entry of h by a copy of src[start, start+len) (a redaction's
   * tombstone). Eviction order is unchanged.
   */
  replace(h: History, i: number, src: Uint8Array, start: number, len: number): void {
    const before = this.account(h);
    if (h.isPooled(i)) {
      const b = this.pool.acquire(Math.min(len, this.pool.maxSize));
      b.set(src.subarray(start, start + len));
      this.pool.release(h.replacePooled(i, b, len));
    } else {
      h.replace(i, src, start, len);
    }
    this.settle(h, before);
    while (this.bytes > this.budgetBytes && this.messages > 0) this.evictOne();
  }

  /** Forgets every entry of h (its room is dropped). */
  clear(h: History): void {
    const before = this.account(h);
    this.messages -= h.count;
    while (h.count > 0) { const b = h.shift(); if (b !== null) this.pool.release(b); }
    h.shrinkIfSparse(3);
    this.settle(h, before);
    this.file(h);
  }

  /** On the shard's tick: when no message was stored since the last one, the free lists go to the GC. */
  trimIdle(): void {
    if (this.stored === this.storedAtTick) this.pool.trim(0);
    this.storedAtTick = this.stored;
  }

  // What h counted before a change, taken out of the totals; settle() puts the new figures back.
  private account(h: History): number {
    this.capacityBytes -= h.capacity;
    this.ringBytes -= h.ringLive;
    if (h.capacity > 0) this.buffers--;
    return h.bytes;
  }

  private settle(h: History, before: number): void {
    h.bytes = h.charge();
    this.bytes += h.bytes - before;
    this.capacityBytes += h.capacity;
    this.ringBytes += h.ringLive;
    if (h.capacity > 0) this.buffers++;
  }

  private dropOldest(h: History, sparse: number): void {
    const b = h.shift();
    if (b !== null) this.pool.release(b);
    this.messages--;
    h.shrinkIfSparse(sparse);
  }

  /** Puts h at the back of the list for its entry count (it was just pushed to). */
  private file(h: History): void {
    const want = h.count >= 2 ? MULTI : h.count === 1 ? SINGLE : NONE;
    if (want === h.where && (want === NONE || (want === MULTI ? this.multiBack : this.singleBack) === h)) return;
    this.unfile(h);
    if (want === MULTI) { this.multi.set(h, true); this.multiBack = h; }
    else if (want === SINGLE) { this.single.set(h, true); this.singleBack = h; }
    h.where = want;
  }

  private unfile(h: History): void {
    if (h.where === MULTI) { this.multi.delete(h); if (this.multiBack === h) this.multiBack = undefined; }
    else if (h.where === SINGLE) { this.single.delete(h); if (this.singleBack === h) this.singleBack = undefined; }
    h.where = NONE;
  }

  private evictOne(): void {
    let h: History | undefined;
    for (const k of this.multi.keys()) { h = k; break; }
    if (h === undefined) for (const k of this.single.keys()) { h = k; break; }
    if (h === undefined) throw new Error('history over budget with no entries');
    const before = this.account(h);
    this.dropOldest(h, 1.5);
    this.settle(h, before);
    // Down to one entry, or none: it changes list (an eviction is not a publish, but a Map only appends).
    if (h.count < 2) this.file(h);
    this.evicted++;
  }
}
