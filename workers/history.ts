/**
 * Room history: per room, the newest messages as a list of entries contiguous by seq (each an
 * encoded `msg` frame in a buffer of exactly its length), and one shard-wide owner that keeps the
 * total under a byte budget. Nothing else creates, drops or resizes an entry.
 *
 * Memory grows with what is held: a room gets its list at its first message; an entry is a pooled
 * buffer from fine size classes (8 per doubling: at most 12.5% above the frame, where the former
 * classes rounded up to 4x), so an evicted entry's buffer is reused by the next message instead of
 * waiting for the GC. Each entry is charged its buffer's size + ENTRY_OVERHEAD against the budget,
 * the overhead being what V8 spends beside the bytes (the Uint8Array, its ArrayBuffer and backing
 * store: about 195 B of heap measured on Node 20, rounded up).
 *
 * Eviction, when a push takes the shard over `budgetBytes`: the oldest messages of the rooms least
 * recently published to go first, down to one message per room; only when every room is down to
 * its newest message do whole rooms' newest messages go, least recently published first. A push
 * to the room already at the back of its list (one busy room) costs no reordering. A room's
 * own `historyLimit` drops its oldest message as before. Either way the kept range stays
 * contiguous and ends at the room's seq, so `hist` and `joined` report `truncated` for what went.
 */

import { BufferPool, geometricClasses } from '../engine/pool/index.js';

/** Free bytes the history pool keeps for reuse: 1/8 of the budget, at most 16 MiB. */
export function poolFreeBytes(budgetBytes: number): number {
  return Math.min(16 << 20, Math.floor(budgetBytes / 8));
}

/** Bytes charged per entry beside its payload (V8 object overhead, measured ~195 B). */
export const ENTRY_OVERHEAD = 256;

/** One room's entries, oldest first. */
export class History {
  private entries: Uint8Array[] = [];
  /** Frame length of each entry (its buffer may be up to one size class larger). */
  private lens: number[] = [];
  private head = 0;
  /** Bytes charged for this room's entries (payload + ENTRY_OVERHEAD each). */
  bytes = 0;
  /** Which eviction list holds it: NONE, SINGLE or MULTI. */
  where = NONE;

  get count(): number {
    return this.entries.length - this.head;
  }

  /** The i-th kept entry's buffer, 0 = oldest; its frame is the first len(i) bytes. */
  at(i: number): Uint8Array {
    return this.entries[this.head + i]!;
  }

  /** The i-th kept entry's frame length. */
  len(i: number): number {
    return this.lens[this.head + i]!;
  }

  push(buf: Uint8Array, len: number): void {
    this.entries.push(buf);
    this.lens.push(len);
    this.bytes += buf.byteLength + ENTRY_OVERHEAD;
  }

  /** Puts `buf` (frame length `len`) in the i-th kept entry's place; returns the old buffer (the caller charges and releases it). */
  replace(i: number, buf: Uint8Array, len: number): Uint8Array {
    const old = this.entries[this.head + i]!;
    this.entries[this.head + i] = buf;
    this.lens[this.head + i] = len;
    this.bytes += buf.byteLength - old.byteLength;
    return old;
  }

  /** Removes the oldest entry and returns its buffer (the caller charges and releases it). */
  shift(): Uint8Array {
    const buf = this.entries[this.head]!;
    this.entries[this.head] = EMPTY;
    this.head++;
    // Compact once the dead prefix is half the array, so the arrays stay within 2x what they hold.
    if (this.head >= 32 && this.head * 2 >= this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.lens = this.lens.slice(this.head);
      this.head = 0;
    }
    this.bytes -= buf.byteLength + ENTRY_OVERHEAD;
    return buf;
  }
}

const EMPTY = new Uint8Array(0);
const NONE = 0;
const SINGLE = 1;
const MULTI = 2;

/** History buffer classes: 64 B to 2 MiB (a msg frame around the largest body, maxFrameBytes <= 1 MiB). */
const HISTORY_CLASSES = geometricClasses(64, 2 << 20, 8);

/** The shard's histories: the per-room limit, the byte budget and the counts stats report. */
export class Histories {
  messages = 0;
  bytes = 0;
  /** Messages dropped to keep the byte budget (not counting historyLimit). */
  evicted = 0;
  /** Histories with two or more entries, least recently pushed first (first to lose old entries). */
  private readonly multi = new Map<History, true>();
  /** Histories with exactly one entry, least recently pushed first. */
  private readonly single = new Map<History, true>();
  /** The history last put at the back of multi / single (undefined: not known). */
  private multiBack: History | undefined;
  private singleBack: History | undefined;

  /**
   * Buffers of entries. Free lists keep at most poolFreeBytes (1/8 of the budget, at most 16 MiB),
   * trimmed to nothing when a tick finds history idle (see trimIdle).
   */
  readonly pool: BufferPool;
  /** Messages stored so far, and as of the last tick (trimIdle). */
  private stored = 0;
  private storedAtTick = 0;

  constructor(readonly historyLimit: number, readonly budgetBytes: number) {
    this.pool = new BufferPool({
      classes: HISTORY_CLASSES, maxPooledPerClass: 1 << 20, maxPooledBytes: poolFreeBytes(budgetBytes),
    });
  }

  /**
   * Appends a copy of src[start, start+len), the room's newest message, to h. A message that
   * cannot be kept at all (historyLimit 0, or alone over the budget) empties h instead: what is
   * kept always ends at the room's seq. Returns false when h is then empty.
   */
  push(h: History, src: Uint8Array, start: number, len: number): boolean {
    if (this.historyLimit === 0 || len > this.pool.maxSize || this.pool.classSizeFor(len) + ENTRY_OVERHEAD > this.budgetBytes) {
      this.clear(h);
      return false;
    }
    const buf = this.pool.acquire(len);
    this.stored++;
    buf.set(src.subarray(start, start + len));
    h.push(buf, len);
    this.messages++;
    this.bytes += buf.byteLength + ENTRY_OVERHEAD;
    if (h.count > this.historyLimit) this.dropOldest(h);
    this.file(h);
    while (this.bytes > this.budgetBytes) this.evictOne();
    return true;
  }

  /**
   * Replaces the i-th kept entry of h by a copy of src[start, start+len) (a redaction's
   * tombstone, no bigger than a message history already keeps). Eviction order is unchanged.
   */
  replace(h: History, i: number, src: Uint8Array, start: number, len: number): void {
    const buf = this.pool.acquire(len);
    buf.set(src.subarray(start, start + len));
    const old = h.replace(i, buf, len);
    this.bytes += buf.byteLength - old.byteLength;
    this.pool.release(old);
    while (this.bytes > this.budgetBytes && this.messages > 0) this.evictOne();
  }

  /** Forgets every entry of h (its room is dropped). */
  clear(h: History): void {
    this.messages -= h.count;
    this.bytes -= h.bytes;
    while (h.count > 0) this.pool.release(h.shift());
    this.file(h);
  }

  /** On the shard's tick: when no message was stored since the last one, the free lists go to the GC. */
  trimIdle(): void {
    if (this.stored === this.storedAtTick) this.pool.trim(0);
    this.storedAtTick = this.stored;
  }

  private dropOldest(h: History): void {
    const buf = h.shift();
    this.bytes -= buf.byteLength + ENTRY_OVERHEAD;
    this.messages--;
    this.pool.release(buf);
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
    this.dropOldest(h);
    // Down to one entry, or none: it changes list (an eviction is not a publish, but a Map only appends).
    if (h.count < 2) this.file(h);
    this.evicted++;
  }
}
