/**
 * Memory map of one ring. Everything that lives in shared memory is named here and nowhere else.
 *
 * A ring occupies one region of a SharedArrayBuffer (by default the whole buffer):
 *
 *   byte  0 ..  63  line 0  WRITE     (i32 slot 0)   producer's published write counter
 *   byte 64 .. 127  line 1  READ      (i32 slot 16)  consumer's released read counter
 *   byte 128.. 191  line 2  SLEEPING  (i32 slot 32)  1 while the consumer is parked (or about to)
 *   byte 192.. 255  line 3  PRODUCER_WAITING (i32 slot 48), MAGIC (slot 60), CAPACITY (slot 61)
 *   byte 256.. 256+capacity-1   data: records (8-byte aligned, as is byteOffset, a multiple of 64)
 *
 * Each index written by a different thread sits on its own 64-byte cache line so that the
 * producer's stores do not invalidate the consumer's line and vice versa (false sharing).
 *
 * WRITE and READ are free-running unsigned 32-bit byte counters: they only grow (mod 2^32) and
 * the position in the data area is `counter & (capacity - 1)`. Differences are always taken as
 * `(a - b) >>> 0`, which is right across the 2^32 wrap because capacity <= 2^30.
 *
 * A record is an 8-byte header, a u32 little-endian length word (bytes 0..3) and 4 bytes of
 * padding (4..7, never written or read), followed by the payload, padded to a multiple of 8 bytes:
 *
 *   record start (multiple of 8)
 *   | len (u32) | pad (4) | payload (len bytes) ......... | pad to 8 |
 *   0           4         8                              8+len       recordSpan(len)
 *
 * Records start at multiples of 8, so every payload starts at a multiple of 8 of the data area,
 * which itself starts at byteOffset + 256 (both multiples of 8). That alignment matters: V8 copies
 * into and out of a SharedArrayBuffer 8 bytes at a time only when source and destination are both
 * 8-byte aligned, and byte by byte otherwise (4 KiB: ~300 ns aligned vs ~1,210 ns misaligned), so
 * the former 4-byte header, which put every other payload at 4 mod 8, cost up to 4x per copy.
 *
 * A record never straddles the end of the data area: when it does not fit in the tail, the
 * producer writes SKIP as the length word (an 8-aligned u32 at the current position; a tail is
 * never shorter than 8 bytes) and continues at offset 0; the consumer jumps over the tail. So
 * every record is one contiguous view.
 */

export const CACHE_LINE = 64;
/** The ring header (the four lines above). The data area starts right after it: 8-aligned. */
export const HEADER_BYTES = 4 * CACHE_LINE;

/** Int32Array slot indices (byte offset / 4). */
export const SLOT_WRITE = 0;
export const SLOT_READ = CACHE_LINE / 4;
export const SLOT_SLEEPING = (2 * CACHE_LINE) / 4;
export const SLOT_PRODUCER_WAITING = (3 * CACHE_LINE) / 4;
export const SLOT_MAGIC = SLOT_PRODUCER_WAITING + 12;
export const SLOT_CAPACITY = SLOT_PRODUCER_WAITING + 13;

/** Identifies an initialised ring header ("SCR1"). */
export const RING_MAGIC = 0x31524353;

/** The length word of a record: a u32 at the record's start. */
export const LEN_BYTES = 4;
/** Record header: the length word plus 4 bytes of padding, so that the payload is 8-aligned. */
export const RECORD_HEADER_BYTES = 8;
/** Records, and so payloads, start at multiples of this many bytes of the data area. */
export const RECORD_ALIGN = 8;
/** Length word that means "nothing more before the end of the data area: continue at 0". */
export const SKIP = 0xffffffff;

export const MIN_CAPACITY = 64;
export const MAX_CAPACITY = 1 << 30;

/** Bytes a record of `len` payload bytes occupies in the data area. */
export function recordSpan(len: number): number {
  return (RECORD_HEADER_BYTES + len + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1);
}

/** The largest payload that always fits into an empty ring of this capacity, wherever it wrapped. */
export function maxRecordBytes(capacity: number): number {
  return capacity / 2 - RECORD_HEADER_BYTES;
}

/** Total SharedArrayBuffer bytes for a ring with `capacity` data bytes. */
export function ringByteLength(capacity: number): number {
  return HEADER_BYTES + capacity;
}

export function checkCapacity(capacity: number): void {
  if (!Number.isInteger(capacity) || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY ||
      (capacity & (capacity - 1)) !== 0) {
    throw new RangeError(
      `ring capacity must be a power of two between ${MIN_CAPACITY} and ${MAX_CAPACITY} bytes, got ${capacity}`);
  }
}
