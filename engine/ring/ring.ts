/**
 * A single-producer single-consumer queue of variable-length byte records over a
 * SharedArrayBuffer. One thread owns the RingWriter, one thread owns the RingReader; the roles
 * never change. The ring knows nothing of what the bytes mean.
 *
 * - Full is a return value (`reserve` gives -1, `push` gives false); nothing is overwritten and
 *   the producer never blocks unless it asks to (`waitForSpace`).
 * - A payload larger than `maxRecordBytes` (capacity / 2 - 8) is a RangeError naming the limit.
 * - Every payload offset is a multiple of 8 (records have an 8-byte header and 8-byte alignment),
 *   which keeps V8's copies into and out of the ring on its fast 8-bytes-at-a-time path.
 * - Nothing the producer writes is visible until `publish()` stores the write counter, so a
 *   producer may batch many records per publish. Likewise the consumer's releases are visible to
 *   the producer after `syncRead()` (which `drain` does once per batch).
 *
 * Wake-ups (see docs/RING.md for the argument that none is lost):
 *   consumer, finding the ring empty at write counter W:
 *       store SLEEPING = 1;  if load WRITE != W: store SLEEPING = 0, go on;
 *       else waitAsync(WRITE, W): returns at once if WRITE != W by then; store SLEEPING = 0.
 *   producer, publish:   store WRITE = w;  if load SLEEPING == 1: notify(WRITE).
 * Only the consumer ever clears SLEEPING. The symmetric handshake on READ / PRODUCER_WAITING lets
 * a producer that is allowed to wait (a worker) park until space frees up.
 */
import {
  HEADER_BYTES, RECORD_ALIGN, RECORD_HEADER_BYTES, RING_MAGIC, SKIP, SLOT_CAPACITY, SLOT_MAGIC,
  SLOT_PRODUCER_WAITING, SLOT_READ, SLOT_SLEEPING, SLOT_WRITE, checkCapacity, maxRecordBytes,
  recordSpan, ringByteLength,
} from './layout.js';

export interface RingInitOptions {
  /** Byte offset of the ring inside the buffer (multiple of 64). Default 0. */
  byteOffset?: number;
  /** Starting value of both counters (a multiple of 8); tests use values near 2^32 to exercise the wrap. */
  startIndex?: number;
}

/** Allocates a SharedArrayBuffer and initialises a ring of `capacity` data bytes in it. */
export function createRing(capacity: number, startIndex = 0): SharedArrayBuffer {
  checkCapacity(capacity);
  const sab = new SharedArrayBuffer(ringByteLength(capacity));
  initRing(sab, capacity, { startIndex });
  return sab;
}

/** Writes a fresh header for a ring of `capacity` bytes at `byteOffset` of `sab`. */
export function initRing(sab: SharedArrayBuffer, capacity: number, opts: RingInitOptions = {}): void {
  checkCapacity(capacity);
  const byteOffset = opts.byteOffset ?? 0;
  if (byteOffset % 64 !== 0 || byteOffset + ringByteLength(capacity) > sab.byteLength) {
    throw new RangeError(`ring of ${capacity} bytes does not fit at offset ${byteOffset} of a ${sab.byteLength}-byte buffer`);
  }
  const h = new Int32Array(sab, byteOffset, HEADER_BYTES / 4);
  const start = (opts.startIndex ?? 0) | 0;
  if ((start & (RECORD_ALIGN - 1)) !== 0) {
    throw new RangeError(`ring startIndex must be a multiple of ${RECORD_ALIGN} (records are 8-byte aligned), got ${start >>> 0}`);
  }
  Atomics.store(h, SLOT_WRITE, start);
  Atomics.store(h, SLOT_READ, start);
  Atomics.store(h, SLOT_SLEEPING, 0);
  Atomics.store(h, SLOT_PRODUCER_WAITING, 0);
  Atomics.store(h, SLOT_CAPACITY, capacity);
  Atomics.store(h, SLOT_MAGIC, RING_MAGIC);
}

/** State shared by both ends: views on one initialised ring. */
abstract class RingEnd {
  /** The data area. Record payloads are views into it. */
  readonly bytes: Uint8Array;
  readonly capacity: number;
  readonly maxRecordBytes: number;
  protected readonly header: Int32Array;
  /** The data area as u32s: the length word of the record at position p is words[p >>> 2]. */
  protected readonly words: Uint32Array;
  protected readonly mask: number;

  constructor(readonly sab: SharedArrayBuffer, readonly byteOffset = 0) {
    this.header = new Int32Array(sab, byteOffset, HEADER_BYTES / 4);
    if (Atomics.load(this.header, SLOT_MAGIC) !== RING_MAGIC) {
      throw new TypeError('not an initialised ring: call createRing() or initRing() first');
    }
    this.capacity = Atomics.load(this.header, SLOT_CAPACITY);
    checkCapacity(this.capacity);
    this.mask = this.capacity - 1;
    this.maxRecordBytes = maxRecordBytes(this.capacity);
    this.bytes = new Uint8Array(sab, byteOffset + HEADER_BYTES, this.capacity);
    this.words = new Uint32Array(sab, byteOffset + HEADER_BYTES, this.capacity / 4);
  }

  /** Bytes published by the producer and not yet released by the consumer (approximate). */
  depth(): number {
    return (Atomics.load(this.header, SLOT_WRITE) - Atomics.load(this.header, SLOT_READ)) >>> 0;
  }
}

export class RingWriter extends RingEnd {
  /** Local write counter: committed, maybe not yet published. */
  private w: number;
  private published: number;
  /** Consumer's read counter as last loaded; refreshed only when space looks short. */
  private readCache: number;
  /** Payload offset and length of the open reservation, -1 when none. */
  private resOffset = -1;
  private resLen = 0;
  /** Bytes of skip padding the open reservation needs before it (0 or the tail length). */
  private resSkip = 0;
  /** Number of Atomics.notify calls made (observability; tests assert a busy ring makes few). */
  notifies = 0;

  constructor(sab: SharedArrayBuffer, byteOffset = 0) {
    super(sab, byteOffset);
    this.w = Atomics.load(this.header, SLOT_WRITE) >>> 0;
    this.published = this.w;
    this.readCache = Atomics.load(this.header, SLOT_READ) >>> 0;
  }

  /**
   * Reserves room for a payload of `len` bytes and returns its offset in `bytes`, or -1 when the
   * ring is full. Write the payload at `bytes[offset .. offset+len)`, then `commit()`. A reservation
   * that is never committed is simply forgotten by the next `reserve`.
   */
  reserve(len: number): number {
    // Any reserve, even a refused one, forgets the open reservation: a commit() after a failed
    // reserve must throw, not silently commit the older reservation.
    this.resOffset = -1;
    this.checkLen(len);
    const span = recordSpan(len);
    const pos = this.w & this.mask;
    const tail = this.capacity - pos;
    const skip = span <= tail ? 0 : tail;
    const need = skip + span;
    if (((this.w - this.readCache) >>> 0) + need > this.capacity) {
      this.readCache = Atomics.load(this.header, SLOT_READ) >>> 0;
      if (((this.w - this.readCache) >>> 0) + need > this.capacity) return -1;
    }
    this.resSkip = skip;
    this.resLen = len;
    this.resOffset = (skip === 0 ? pos : 0) + RECORD_HEADER_BYTES;
    return this.resOffset;
  }

  /**
   * Commits the open reservation, optionally shortened to `len` bytes (never longer). The record
   * becomes visible to the consumer at the next `publish()`.
   */
  commit(len = this.resLen): void {
    if (this.resOffset < 0) throw new Error('ring commit without an open reservation');
    if (!(len >= 0 && len <= this.resLen) || !Number.isInteger(len)) {
      throw new RangeError(`ring commit of ${len} bytes exceeds the ${this.resLen} reserved`);
    }
    if (this.resSkip !== 0) {
      this.words[(this.w & this.mask) >>> 2] = SKIP;
      this.w = (this.w + this.resSkip) >>> 0;
    }
    this.words[(this.w & this.mask) >>> 2] = len;
    this.w = (this.w + recordSpan(len)) >>> 0;
    this.resOffset = -1;
  }

  /** The write counter of everything committed so far (published or not). */
  get position(): number {
    return this.w;
  }

  /** Makes every committed record visible and wakes the consumer if (and only if) it is parked. */
  publish(): void {
    if (this.w === this.published) return;
    this.published = this.w;
    Atomics.store(this.header, SLOT_WRITE, this.w | 0);
    if (Atomics.load(this.header, SLOT_SLEEPING) !== 0) {
      this.notifies++;
      Atomics.notify(this.header, SLOT_WRITE);
    }
  }

  /**
   * Makes every committed record visible like `publish()`, but only reports whether the consumer
   * is parked instead of waking it: when this returns true the caller owes a `notify()`, which it
   * may defer (say, to once per event-loop turn, however many records the turn published). A
   * consumer that is awake sees the records at once; one that parks after this call finds WRITE
   * moved and does not sleep. Only the deferral is new: the handshake is publish()'s.
   */
  publishDeferred(): boolean {
    if (this.w !== this.published) {
      this.published = this.w;
      Atomics.store(this.header, SLOT_WRITE, this.w | 0);
    }
    return Atomics.load(this.header, SLOT_SLEEPING) !== 0;
  }

  /** Wakes the consumer if (and only if) it is parked: settles what `publishDeferred` owed. */
  notify(): void {
    if (Atomics.load(this.header, SLOT_SLEEPING) !== 0) {
      this.notifies++;
      Atomics.notify(this.header, SLOT_WRITE);
    }
  }

  /** Copies `src` in as one record (not yet published). False when the ring is full. */
  push(src: Uint8Array): boolean {
    const off = this.reserve(src.byteLength);
    if (off < 0) return false;
    this.bytes.set(src, off);
    this.commit();
    return true;
  }

  /** `push` then `publish`. */
  write(src: Uint8Array): boolean {
    if (!this.push(src)) return false;
    this.publish();
    return true;
  }

  private checkLen(len: number): void {
    if (!(len >= 0 && len <= this.maxRecordBytes) || !Number.isInteger(len)) {
      throw new RangeError(`ring record of ${len} bytes exceeds maxRecordBytes ${this.maxRecordBytes} (capacity ${this.capacity} / 2 - ${RECORD_HEADER_BYTES})`);
    }
  }

  /**
   * True when a payload of `len` bytes would fit right now. A length above maxRecordBytes is a
   * RangeError (it would never fit: `waitForSpace` would wait forever).
   */
  canFit(len: number): boolean {
    this.checkLen(len);
    const span = recordSpan(len);
    const tail = this.capacity - (this.w & this.mask);
    const need = (span <= tail ? 0 : tail) + span;
    this.readCache = Atomics.load(this.header, SLOT_READ) >>> 0;
    return ((this.w - this.readCache) >>> 0) + need <= this.capacity;
  }

  /**
   * Resolves once a payload of `len` bytes fits (or after `timeoutMs`). Only for a producer that
   * may wait (a worker); the main thread treats full as back-pressure instead. Publishes first,
   * so the consumer has something to release.
   */
  async waitForSpace(len: number, timeoutMs = Infinity): Promise<boolean> {
    return this.waitForRoom(() => this.canFit(len), timeoutMs);
  }

  /**
   * The producer's half of the READ / PRODUCER_WAITING handshake (the mirror of waitForData):
   * announce, re-check, wait on READ with the value seen. `ready` must reload the read counter
   * (canFit and freeBytes do), so `readCache` is the value the wait compares against.
   */
  private async waitForRoom(ready: () => boolean, timeoutMs: number): Promise<boolean> {
    this.publish();
    const deadline = timeoutMs === Infinity ? Infinity : performance.now() + timeoutMs;
    for (;;) {
      if (ready()) return true;
      const seen = this.readCache | 0;
      Atomics.store(this.header, SLOT_PRODUCER_WAITING, 1);
      if ((Atomics.load(this.header, SLOT_READ) | 0) === seen) {
        const left = deadline === Infinity ? Infinity : deadline - performance.now();
        if (left <= 0) {
          Atomics.store(this.header, SLOT_PRODUCER_WAITING, 0);
          return ready();
        }
        const r = Atomics.waitAsync(this.header, SLOT_READ, seen, left);
        if (r.async) await r.value;
      }
      Atomics.store(this.header, SLOT_PRODUCER_WAITING, 0);
    }
  }

  /** Wakes this writer's own pending waitForSpace / waitForFree (the consumer is gone). */
  wake(): void {
    Atomics.notify(this.header, SLOT_READ);
  }

  /** Bytes not yet holding unreleased records, as of a fresh load of the read counter. */
  freeBytes(): number {
    this.readCache = Atomics.load(this.header, SLOT_READ) >>> 0;
    return this.capacity - ((this.w - this.readCache) >>> 0);
  }

  /**
   * Resolves true once `freeBytes() >= bytes` (or false after `timeoutMs`). For a producer about
   * to write several records totalling less than `bytes`, counting one wrap's padding in `bytes`.
   */
  async waitForFree(bytes: number, timeoutMs = Infinity): Promise<boolean> {
    if (bytes > this.capacity) throw new RangeError(`waitForFree(${bytes}) exceeds the ring capacity ${this.capacity}`);
    return this.waitForRoom(() => this.freeBytes() >= bytes, timeoutMs);
  }
}

export class RingReader extends RingEnd {
  /** Released boundary: everything before it may be overwritten by the producer. */
  private r: number;
  /** Next record to hand out; records in [r, peek) are handed out and not yet released. */
  private peekIdx: number;
  /** Producer's write counter as last loaded. */
  private writeCache: number;
  /** Payload offset and length of the record last returned by `next()`. */
  offset = 0;
  length = 0;
  /** Number of times the consumer actually parked (observability). */
  parks = 0;

  constructor(sab: SharedArrayBuffer, byteOffset = 0) {
    super(sab, byteOffset);
    this.r = Atomics.load(this.header, SLOT_READ) >>> 0;
    this.peekIdx = this.r;
    this.writeCache = Atomics.load(this.header, SLOT_WRITE) >>> 0;
  }

  /**
   * Hands out the next record: returns its payload length and sets `offset`/`length`, or returns
   * -1 when nothing more is published. The payload stays valid until it is released. Several
   * records may be out at once; they must be released in the order they were handed out.
   */
  next(): number {
    if (this.peekIdx === this.writeCache) {
      this.writeCache = Atomics.load(this.header, SLOT_WRITE) >>> 0;
      if (this.peekIdx === this.writeCache) return -1;
    }
    let pos = this.peekIdx & this.mask;
    let len = this.words[pos >>> 2]!;
    if (len === SKIP) {
      this.peekIdx = (this.peekIdx + (this.capacity - pos)) >>> 0;
      pos = 0;
      len = this.words[0]!;
    }
    this.offset = pos + RECORD_HEADER_BYTES;
    this.length = len;
    this.peekIdx = (this.peekIdx + recordSpan(len)) >>> 0;
    return len;
  }

  /** A view of the record last returned by `next()` (allocates a view; use offset/length to avoid it). */
  view(): Uint8Array {
    return this.bytes.subarray(this.offset, this.offset + this.length);
  }

  /** True when at least one record is published and not yet handed out. */
  hasNext(): boolean {
    if (this.peekIdx !== this.writeCache) return true;
    this.writeCache = Atomics.load(this.header, SLOT_WRITE) >>> 0;
    return this.peekIdx !== this.writeCache;
  }

  /**
   * Releases the oldest handed-out record, whose payload offset must be `offset` when given
   * (a release out of order throws). The space is returned to the producer at `syncRead()`.
   */
  release(offset?: number): void {
    if (this.r === this.peekIdx) throw new Error('ring release with no record handed out');
    let pos = this.r & this.mask;
    let len = this.words[pos >>> 2]!;
    let r = this.r;
    if (len === SKIP) {
      r = (r + (this.capacity - pos)) >>> 0;
      pos = 0;
      len = this.words[0]!;
    }
    if (offset !== undefined && offset !== pos + RECORD_HEADER_BYTES) {
      throw new Error(`ring release out of order: oldest record is at ${pos + RECORD_HEADER_BYTES}, not ${offset}`);
    }
    this.r = (r + recordSpan(len)) >>> 0;
  }

  /** The released boundary: the read counter just past the last released record. */
  get position(): number {
    return this.r;
  }

  /** The read counter just past the record last handed out by `next()`. */
  get peekPosition(): number {
    return this.peekIdx;
  }

  /** The producer's published write counter, loaded now. */
  producerPosition(): number {
    return Atomics.load(this.header, SLOT_WRITE) >>> 0;
  }

  /** Releases everything handed out so far. */
  releaseAll(): void {
    this.r = this.peekIdx;
  }

  /** Publishes the released boundary to the producer, waking it if it waits for space. */
  syncRead(): void {
    Atomics.store(this.header, SLOT_READ, this.r | 0);
    if (Atomics.load(this.header, SLOT_PRODUCER_WAITING) !== 0) {
      Atomics.notify(this.header, SLOT_READ);
    }
  }

  /**
   * Hands each published record to `fn(bytes, offset, length)`, releasing it after `fn` returns,
   * up to `max` records; then publishes the read counter once. Returns the number processed.
   * A record whose `fn` throws is released too (dropped) before the error propagates: left
   * handed out, it would stay held for good and every later release would free the record
   * before the one just handled. `beforeSync`, if given, runs after the last record and before
   * the read counter is published: the records' bytes are still intact then, so views kept from
   * them may be used up there.
   */
  drain(fn: (bytes: Uint8Array, offset: number, length: number) => void, max = Infinity, beforeSync?: () => void): number {
    let n = 0;
    try {
      while (n < max && this.next() >= 0) {
        n++;
        try {
          fn(this.bytes, this.offset, this.length);
        } finally {
          this.release();
        }
      }
    } finally {
      try {
        if (n > 0) beforeSync?.();
      } finally {
        if (n > 0) this.syncRead();
      }
    }
    return n;
  }

  /** Wakes this reader's own pending waitForData (used when shutting down the consumer side). */
  wake(): void {
    Atomics.notify(this.header, SLOT_WRITE);
  }

  /** Copies the next record out and releases it, or returns null. */
  read(): Uint8Array | null {
    if (this.next() < 0) return null;
    const out = this.bytes.slice(this.offset, this.offset + this.length);
    this.release();
    this.syncRead();
    return out;
  }

  /**
   * The consumer's announcement before it parks (docs/RING.md, "Wake-ups"): returns the write
   * counter to wait on, or null when a publish raced the announcement (the flag is then cleared
   * and the caller goes on reading). After a wait, the caller clears the flag with `unpark()`.
   */
  private announcePark(): number | null {
    const seen = this.writeCache | 0;
    Atomics.store(this.header, SLOT_SLEEPING, 1);
    // Re-check after announcing: a publish that raced with the announcement is seen here, and
    // any publish after it sees SLEEPING == 1 and notifies.
    if ((Atomics.load(this.header, SLOT_WRITE) | 0) !== seen) {
      Atomics.store(this.header, SLOT_SLEEPING, 0);
      return null;
    }
    this.parks++;
    return seen;
  }

  private unpark(outcome: string): boolean {
    Atomics.store(this.header, SLOT_SLEEPING, 0);
    return outcome !== 'timed-out' || this.hasNext();
  }

  /**
   * Resolves when a record is published that was not there when the ring was seen empty, or after
   * `timeoutMs` (resolving false). Never blocks the thread: uses Atomics.waitAsync.
   * Call only when `hasNext()` is false.
   */
  async waitForData(timeoutMs = Infinity): Promise<boolean> {
    const seen = this.announcePark();
    if (seen === null) return true;
    const res = Atomics.waitAsync(this.header, SLOT_WRITE, seen, timeoutMs);
    return this.unpark(res.async ? await res.value : res.value);
  }

  /**
   * `waitForData` that blocks the calling thread in Atomics.wait: same handshake, but the waker's
   * notify reaches a futex directly instead of posting a task to this thread's event loop, which
   * is cheaper on both sides. Only for a thread with nothing else to do meanwhile (a shard worker
   * between batches); never on the main thread. Returns false on timeout with nothing to read.
   */
  waitForDataSync(timeoutMs: number): boolean {
    const seen = this.announcePark();
    if (seen === null) return true;
    return this.unpark(Atomics.wait(this.header, SLOT_WRITE, seen, timeoutMs));
  }
}
