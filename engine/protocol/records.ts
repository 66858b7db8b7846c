/**
 * Records between the main thread and a shard, one per ring record. The first byte is the kind;
 * integers are little-endian u32. Pure: layouts and field accessors only.
 *
 * Inbound (main -> shard):
 *   IN_FRAME      kind u8 | conn u32 | stamp u32 | userLen u8 | user | client frame bytes (as received)
 *   IN_CLOSE      kind u8 | conn u32
 *   IN_SERVER_PUB kind u8 | req u32 | roomLen u8 | room | fromLen u8 | from | body (one MessagePack value)
 *   IN_REPLAY     kind u8 | conn u32 | userLen u8 | user | roomLen u8 | room   (join after a shard restart)
 *   IN_DRAIN      kind u8                     (everything before it is handled; answer OUT_DRAINED)
 *   IN_CRASH      kind u8 | mode u8           (test hook: 1 = throw from the task, 2 = exit the worker)
 *
 * `stamp`: the main thread's receipt time of a `pub` in microseconds mod 2^32 (0 = none), carried
 * to its publish record so the main thread can measure receipt-to-fan-out latency.
 *
 * Outbound (shard -> main):
 *   OUT_SEND      kind u8 | conn u32 | frame               -> ws.send(frame)
 *   OUT_PUBLISH   kind u8 | stamp u32 | roomLen u8 | room | frame  -> app.publish(room, frame)
 *   OUT_JOINED    kind u8 | conn u32 | roomLen u8 | room | frame  -> send(frame), subscribe(room)
 *   OUT_LEFT      kind u8 | conn u32 | roomLen u8 | room | frame  -> unsubscribe(room), send(frame)
 *   OUT_SERVER_ACK kind u8 | req u32 | seqHi u32 | seqLo u32 | epochLen u8 | epoch
 *   OUT_DRAINED   kind u8
 */

export const IN_FRAME = 1;
export const IN_CLOSE = 2;
export const IN_SERVER_PUB = 3;
export const IN_REPLAY = 4;
export const IN_DRAIN = 5;
export const IN_CRASH = 6;

export const OUT_SEND = 1;
export const OUT_PUBLISH = 2;
export const OUT_JOINED = 3;
export const OUT_LEFT = 4;
export const OUT_SERVER_ACK = 5;
export const OUT_DRAINED = 6;

/** Offset of userLen in an IN_FRAME record. */
export const IN_FRAME_USER = 9;
/** Offset of roomLen in an OUT_PUBLISH record. */
export const OUT_PUBLISH_ROOM = 5;

export const CRASH_THROW = 1;
export const CRASH_EXIT = 2;

export function putU32(b: Uint8Array, p: number, v: number): void {
  b[p] = v & 0xff; b[p + 1] = (v >>> 8) & 0xff; b[p + 2] = (v >>> 16) & 0xff; b[p + 3] = v >>> 24;
}

export function getU32(b: Uint8Array, p: number): number {
  return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
}

/** Writes an ASCII string (room, user, epoch: all validated ASCII) with a u8 length; returns the end. */
export function putShortAscii(b: Uint8Array, p: number, s: string): number {
  b[p] = s.length;
  for (let i = 0; i < s.length; i++) b[p + 1 + i] = s.charCodeAt(i);
  return p + 1 + s.length;
}
