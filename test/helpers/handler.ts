/**
 * A real shard Handler over real rings, driven record by record in the test's own thread (where
 * `gc()` is available, so heap figures are exact). Records are built as the main thread builds them.
 */
import { encode } from '@msgpack/msgpack';
import { Handler, type HandlerOptions } from '../../workers/handler.js';
import type { Store } from '../../workers/store/index.js';
import { RingReader, RingWriter, createRing } from '../../engine/ring/index.js';
import { IN_CLOSE, IN_FRAME, IN_FRAME_ANON, IN_FRAME_BODY, IN_SERVER_PUB, OUT_BODY, putU32 } from '../../engine/protocol/records.js';

export const HANDLER_OPTS: HandlerOptions = {
  historyLimit: 1000, maxHistBytes: 1 << 20, roomTtlMs: 300_000, maxBodyDepth: 32, historyBudgetBytes: 64 << 20,
  maxRoomsPerShard: 1_000_000, roomCreateRate: 1e6, roomCreateBurst: 1e6, maxCursorsPerRoom: 10_000, maxCursorsPerShard: 200_000,
  cidWindowMessages: 1000, cidWindowMs: 600_000,
};

/** An IN_FRAME record as link.writeFrame writes it. */
export function inFrame(conn: number, frame: Uint8Array, user = '', anon = false, addr = 0): Uint8Array {
  const b = new Uint8Array(IN_FRAME_BODY + frame.byteLength + user.length);
  b[0] = IN_FRAME;
  b[1] = user.length;
  b[2] = anon ? IN_FRAME_ANON : 0;
  putU32(b, 4, conn);
  putU32(b, 12, addr);
  b.set(frame, IN_FRAME_BODY);
  for (let i = 0; i < user.length; i++) b[IN_FRAME_BODY + frame.byteLength + i] = user.charCodeAt(i);
  return b;
}

export function inClose(conn: number): Uint8Array {
  const b = new Uint8Array(5);
  b[0] = IN_CLOSE;
  putU32(b, 1, conn);
  return b;
}

export function inServerPub(req: number, room: string, from: string, body: unknown): Uint8Array {
  const enc = encode(body);
  const b = new Uint8Array(8 + room.length + from.length + enc.byteLength);
  b[0] = IN_SERVER_PUB;
  putU32(b, 1, req);
  let p = 5;
  b[p++] = room.length;
  for (let i = 0; i < room.length; i++) b[p++] = room.charCodeAt(i);
  b[p++] = from.length;
  for (let i = 0; i < from.length; i++) b[p++] = from.charCodeAt(i);
  b[p++] = 0; // no cid
  b.set(enc, p);
  return b;
}

/** A Handler with its outbound ring and a reader that consumes (and optionally keeps) what it writes. */
export class ShardBench {
  readonly out: RingWriter;
  readonly reader: RingReader;
  readonly h: Handler;

  constructor(opts: Partial<HandlerOptions> = {}, ringBytes = 8 << 20, store: Store | null = null) {
    const sab = createRing(ringBytes);
    this.out = new RingWriter(sab);
    this.reader = new RingReader(sab);
    this.h = new Handler(this.out, { ...HANDLER_OPTS, ...opts }, store);
  }

  /** Handles one record (it must not need to wait), then consumes the output; returns the outbound bodies. */
  run(rec: Uint8Array, keep = false): Uint8Array[] {
    const need = this.h.handle(rec, 0, rec.byteLength);
    if (need !== 0) throw new Error(`handler asked for ${need} outbound bytes on a drained ring`);
    this.h.commit(); // as the shard loop does: the store's batch before the output
    this.out.publish();
    const bodies: Uint8Array[] = [];
    while (this.reader.next() >= 0) {
      if (keep) bodies.push(this.reader.bytes.slice(this.reader.offset, this.reader.offset + this.reader.length));
      this.reader.release();
    }
    this.reader.syncRead();
    return bodies;
  }

  frame(conn: number, frame: Record<string, unknown>, user = '', anon = false, addr = 0, keep = false): Uint8Array[] {
    return this.run(inFrame(conn, encode(frame), user, anon, addr), keep);
  }
}

/** The body (server frame) of an outbound record, as kept by ShardBench.run(…, true). */
export function outBody(rec: Uint8Array): Uint8Array {
  return rec.subarray(OUT_BODY, rec.byteLength - rec[1]!);
}
