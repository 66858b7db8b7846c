/**
 * Room history: per room, the newest messages as a list of entries contiguous by seq (each an
 * encoded `msg` frame in a buffer of exactly its length), and one shard-wide owner that keeps the
 * total under a byte budget. Nothing else creates, drops or resizes an entry.
 *
 * Memory grows with what is held: a room gets its list at its first message; an entry is a copy
 * of exactly `len` bytes (no size-class rounding). Each entry is charged `len + ENTRY_OVERHEAD`
 * against the budget, the overhead being what V8 spends beside the bytes (the Uint8Array, its
 * ArrayBuffer and backing store: about 195 B of heap measured on Node 20, rounded up).
 *
 * Eviction, when a push takes the shard over `budgetBytes`: the oldest messages of the rooms least
 * recently published to go first, down to one message per room; only when every room is down to
 * its newest message do whole rooms' newest messages go, least recently published first. A room's
 * own `historyLimit` drops its oldest message as before. Either way the kept range stays
 * contiguous and ends at the room's seq, so `hist` and `joined` report `truncated` for what went.
 */

/** Bytes charged per entry beside its payload (V8 object overhead, measured ~195 B). */
export const ENTRY_OVERHEAD = 256;

/** One room's entries, oldest first. */
export class History {
  private entries: Uint8Array[] = [];
  private head = 0;
  /** Bytes charged for this room's entries (payload + ENTRY_OVERHEAD each). */
  bytes = 0;

  get count(): number {
    return this.entries.length - this.head;
  }

  /** The i-th kept entry, 0 = oldest. */
  at(i: number): Uint8Array {
    return this.entries[this.head + i]!;
  }

  push(buf: Uint8Array): void {
    this.entries.push(buf);
    this.bytes += buf.byteLength + ENTRY_OVERHEAD;
  }

  /** Removes the oldest entry; returns the bytes it was charged. */
  shift(): number {
    const buf = this.entries[this.head]!;
    this.entries[this.head++] = EMPTY;
    // Compact once the dead prefix is half the array, so the array stays within 2x what it holds.
    if (this.head >= 32 && this.head * 2 >= this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    const charged = buf.byteLength + ENTRY_OVERHEAD;
    this.bytes -= charged;
    return charged;
  }
}

const EMPTY = new Uint8Array(0);

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

  constructor(readonly historyLimit: number, readonly budgetBytes: number) {}

  /** Appends a copy of buf[start, start+len) to h; returns false when history keeps nothing. */
  push(h: History, src: Uint8Array, start: number, len: number): boolean {
    if (this.historyLimit === 0 || len + ENTRY_OVERHEAD > this.budgetBytes) return false;
    this.multi.delete(h);
    this.single.delete(h);
    h.push(src.slice(start, start + len));
    this.messages++;
    this.bytes += len + ENTRY_OVERHEAD;
    if (h.count > this.historyLimit) this.dropOldest(h);
    this.file(h);
    while (this.bytes > this.budgetBytes) this.evictOne();
    return true;
  }

  /** Forgets every entry of h (its room is dropped). */
  clear(h: History): void {
    this.multi.delete(h);
    this.single.delete(h);
    this.messages -= h.count;
    this.bytes -= h.bytes;
    while (h.count > 0) h.shift();
  }

  private dropOldest(h: History): void {
    this.bytes -= h.shift();
    this.messages--;
  }

  private file(h: History): void {
    if (h.count >= 2) this.multi.set(h, true);
    else if (h.count === 1) this.single.set(h, true);
  }

  private evictOne(): void {
    let h: History | undefined;
    for (const k of this.multi.keys()) { h = k; break; }
    if (h !== undefined) {
      this.dropOldest(h);
      if (h.count < 2) { this.multi.delete(h); this.file(h); }
    } else {
      for (const k of this.single.keys()) { h = k; break; }
      if (h === undefined) throw new Error('history over budget with no entries');
      this.dropOldest(h);
      this.single.delete(h);
    }
    this.evicted++;
  }
}
