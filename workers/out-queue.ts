/**
 * Cluster mode's way onto the outbound ring. Its records come from callbacks (Redis replies,
 * subscriber messages, timers) that cannot wait for ring room, so a record that does not fit
 * now is copied into a queue and written, in order, once the main thread frees room; every
 * record after it queues too, so the ring sees them in emit order. Committed records are
 * published once per microtask turn (one notify for what a callback wrote).
 *
 * Bound: OUT_QUEUE_MAX_BYTES of queued records. Past it `overflow` is set and the cluster shard
 * ends its task with it: the supervisor restarts the shard, its members get an unsolicited
 * `joined` and reload (docs/LIMITS.md), rather than the queue growing without limit.
 */
import { MsgSizer, MsgWriter } from '../engine/protocol/msgpack.js';
import { OUT_BODY } from '../engine/protocol/records.js';
import { type RingWriter, recordSpan } from '../engine/ring/index.js';

/** Bytes of records waiting for outbound ring room, at most. */
export const OUT_QUEUE_MAX_BYTES = 32 << 20;

export type BodyWriter = (w: MsgWriter) => void;

export class OutQueue {
  private readonly sz = new MsgSizer();
  private readonly w = new MsgWriter();
  private q: (Uint8Array | undefined)[] = [];
  private head = 0;
  private queuedBytes = 0;
  private draining = false;
  private publishScheduled = false;
  private idleWaiters: (() => void)[] = [];
  /** Set once the queue passed its bound: the shard must end (see the header). */
  overflow: Error | null = null;
  /** Times a record waited for ring room (shard stats S_OUT_WAITS). */
  waits = 0;

  constructor(private readonly out: RingWriter, private readonly beforePublish: () => void = () => undefined) {}

  /** Records queued, not yet in the ring. */
  get queued(): number { return this.q.length - this.head; }

  /** Writes one record [kind, roomLen, id, body (by `put`, run twice: size, write), room] now, or queues it. */
  emit(kind: number, id: number, room: string, put: BodyWriter): void {
    put(this.sz.start());
    const bodyLen = this.sz.pos;
    const len = OUT_BODY + bodyLen + room.length;
    if (this.head === this.q.length) {
      const off = this.out.reserve(len);
      if (off >= 0) {
        this.fill(this.out.bytes, off, kind, id, room, bodyLen, put);
        this.out.commit(len);
        this.schedulePublish();
        return;
      }
    }
    const rec = new Uint8Array(len);
    this.fill(rec, 0, kind, id, room, bodyLen, put);
    this.q.push(rec);
    this.queuedBytes += len;
    if (this.queuedBytes > OUT_QUEUE_MAX_BYTES) this.overflow ??= new Error(`outbound queue passed ${OUT_QUEUE_MAX_BYTES} bytes: the main thread is not reading this shard's output`);
    void this.drain();
  }

  /** Publishes what was committed now (the loop calls it before it parks). */
  publishNow(): void {
    this.publishScheduled = false;
    this.beforePublish();
    this.out.publish();
  }

  /** Resolves once nothing is queued and everything is published. */
  idle(): Promise<void> {
    if (this.queued === 0) { this.publishNow(); return Promise.resolve(); }
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private fill(b: Uint8Array, off: number, kind: number, id: number, room: string, bodyLen: number, put: BodyWriter): void {
    b[off] = kind; b[off + 1] = room.length; b[off + 2] = 0; b[off + 3] = 0;
    const v = id < 0 ? 0 : id;
    b[off + 4] = v & 0xff; b[off + 5] = (v >>> 8) & 0xff; b[off + 6] = (v >>> 16) & 0xff; b[off + 7] = v >>> 24;
    const w = this.w.reset(b, off + OUT_BODY, off + OUT_BODY + bodyLen);
    put(w);
    if (w.pos !== off + OUT_BODY + bodyLen) throw new Error(`a record body was sized at ${bodyLen} bytes and wrote ${w.pos - off - OUT_BODY}`);
    for (let i = 0; i < room.length; i++) b[w.pos + i] = room.charCodeAt(i);
  }

  /** Records were committed to the ring directly (webhook events, workers/events.ts): publish them this turn. */
  written(): void { this.schedulePublish(); }

  private schedulePublish(): void {
    if (this.publishScheduled) return;
    this.publishScheduled = true;
    queueMicrotask(() => { if (this.publishScheduled) this.publishNow(); });
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.head < this.q.length) {
        const rec = this.q[this.head]!;
        if (!this.out.push(rec)) {
          this.publishNow();
          this.waits++;
          await this.out.waitForFree(recordSpan(rec.byteLength) * 2);
          continue;
        }
        this.q[this.head++] = undefined;
        this.queuedBytes -= rec.byteLength;
      }
      this.q = [];
      this.head = 0;
      this.publishNow();
    } finally {
      this.draining = false;
    }
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of waiters) f();
  }
}
