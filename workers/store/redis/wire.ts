/**
 * The bytes the scripts publish (see scripts.ts), decoded without copying the frame, and the
 * seq slot a frame carries into the sequencer. Pure: no I/O.
 *
 * A node encodes its `msg` frame before Redis has assigned the seq, with the seq as a MessagePack
 * uint64 (0xcf + 8 bytes) whose 8 bytes are a placeholder; the script writes the seq there. So
 * the bytes Redis stores, publishes and replays are the final frame, encoded once.
 */

export type ChannelEvent =
  | { readonly kind: 'msg'; readonly seq: number; readonly epoch: string; readonly frame: Buffer }
  | { readonly kind: 'presence'; readonly state: 'join' | 'leave'; readonly user: string }
  | { readonly kind: 'redact'; readonly seq: number; readonly epoch: string; readonly frame: Buffer };

export class WireError extends Error {
  readonly code = 'internal';
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

export function readSeq(b: Uint8Array, at: number): number {
  const hi = ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
  const lo = ((b[at + 4]! << 24) | (b[at + 5]! << 16) | (b[at + 6]! << 8) | b[at + 7]!) >>> 0;
  return hi * 0x1_0000_0000 + lo;
}

export function writeSeq(b: Uint8Array, at: number, seq: number): void {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`seq ${seq} is not a safe non-negative integer`);
  const hi = Math.floor(seq / 0x1_0000_0000);
  const lo = seq >>> 0;
  b[at] = hi >>> 24; b[at + 1] = (hi >>> 16) & 0xff; b[at + 2] = (hi >>> 8) & 0xff; b[at + 3] = hi & 0xff;
  b[at + 4] = lo >>> 24; b[at + 5] = (lo >>> 16) & 0xff; b[at + 6] = (lo >>> 8) & 0xff; b[at + 7] = lo & 0xff;
}

/** Decodes one room-channel payload; a payload that is neither kind is a WireError. */
export function decodeRoomEvent(p: Buffer): ChannelEvent {
  const kind = p[0];
  if (kind === 0x6d /* m */) {
    if (p.length < 10) throw new WireError(`room message of ${p.length} bytes`);
    const seq = readSeq(p, 1);
    const elen = p[9]!;
    if (p.length < 10 + elen) throw new WireError('room message shorter than its epoch');
    return { kind: 'msg', seq, epoch: p.toString('latin1', 10, 10 + elen), frame: p.subarray(10 + elen) };
  }
  if (kind === 0x78 /* x */) {
    if (p.length < 10) throw new WireError(`room redaction of ${p.length} bytes`);
    const elen = p[9]!;
    if (p.length < 10 + elen) throw new WireError('room redaction shorter than its epoch');
    return { kind: 'redact', seq: readSeq(p, 1), epoch: p.toString('latin1', 10, 10 + elen), frame: p.subarray(10 + elen) };
  }
  if (kind === 0x70 /* p */ && (p[1] === 0x6a || p[1] === 0x6c)) {
    return { kind: 'presence', state: p[1] === 0x6a ? 'join' : 'leave', user: p.toString('utf8', 2) };
  }
  throw new WireError(`unknown room event of ${p.length} bytes starting 0x${(kind ?? 0).toString(16)}`);
}

/**
 * The offset of the seq placeholder in a frame: the 8 bytes after the 0xcf marker that follows
 * the MessagePack key "seq" (0xa3 's' 'e' 'q'). -1 when the frame has none. For frames this
 * project encodes itself (the key is found by scanning, so it must be the map's `seq` key; the
 * encoder writes `seq` before `body`, so a body holding those bytes cannot come first).
 */
export function findSeqSlot(frame: Uint8Array): number {
  for (let i = 0; i + 13 <= frame.length; i++) {
    if (frame[i] === 0xa3 && frame[i + 1] === 0x73 && frame[i + 2] === 0x65 && frame[i + 3] === 0x71 && frame[i + 4] === 0xcf) return i + 5;
  }
  return -1;
}
