/**
 * One main <-> shard channel: the inbound ring (main writes), the outbound ring (main reads), the
 * shard's stats slots, and a backlog for control records that must not be lost when the inbound
 * ring is momentarily full (connection closes, replays, drain). Client frames never wait in the
 * backlog: a full ring is `overloaded` to the client, and while the backlog is non-empty client
 * frames are refused too, so that per-connection order is kept.
 */
import { RingReader, RingWriter, createRing } from '../ring/index.js';
import { S_DELIVERED, S_ERR_BASE, S_IN_HANDLED, S_OUT_PUBLISH_END, S_PUBLISHED, createShardStats } from '../metrics/shard-stats.js';
import { IN_ADMIN, IN_CLOSE, IN_DRAIN, IN_FRAME, IN_FRAME_ANON, IN_FRAME_BODY, IN_FRAME_INFO, IN_REPLAY, putShortAscii, putU32 } from '../protocol/records.js';

export class ShardLink {
  inbound!: SharedArrayBuffer;
  outbound!: SharedArrayBuffer;
  writer!: RingWriter;
  reader!: RingReader;
  readonly stats: Float64Array;
  readonly statsSab: SharedArrayBuffer;
  /** Bumped on every restart; a pump or flush of an older generation stops. */
  generation = 0;
  restarts = 0;
  /** True while its shard task runs. */
  up = false;
  /** True once the shard answered IN_DRAIN. */
  drained = false;
  overloaded = 0;
  /** err counts of earlier (crashed) incarnations, so the counters never go backwards. */
  readonly deadErrors = new Float64Array(16);
  /** Messages published and deliveries made by earlier incarnations, for the same reason. */
  deadPublished = 0;
  deadDelivered = 0;
  /** The running shard task (one per incarnation). */
  task: Promise<unknown> = Promise.resolve();
  /** Aborts the running task: piscina then terminates its worker (a stuck shard). */
  abort: AbortController | null = null;
  /** The heartbeat slot's value when last seen to move, and when (monotonic ms). */
  lastBeat = 0;
  lastBeatAt = 0;
  /** Times this shard was terminated for a stalled heartbeat. */
  stalls = 0;
  /** When (monotonic ms) the restarts within the supervisor's window happened. */
  restartTimes: number[] = [];
  /** The restart budget is spent: the shard is not restarted and its rooms are refused. */
  failed = false;
  private stopped = false;
  inboundHighWater = 0;
  outboundHighWater = 0;
  private backlog: Uint8Array[] = [];
  private flushing = false;
  private wakeOwed = false;
  private readonly scratch = new Uint8Array(512);

  constructor(readonly index: number, private readonly ringBytes: number) {
    this.statsSab = createShardStats();
    this.stats = new Float64Array(this.statsSab);
    this.fresh();
  }

  /** New rings for a new shard incarnation. */
  fresh(): void {
    this.deadPublished += this.stats[S_PUBLISHED]!;
    this.deadDelivered += this.stats[S_DELIVERED]!;
    this.stats[S_PUBLISHED] = 0;
    this.stats[S_DELIVERED] = 0;
    for (let code = 0; code < this.deadErrors.length; code++) {
      this.deadErrors[code]! += this.stats[S_ERR_BASE + code]!;
      this.stats[S_ERR_BASE + code] = 0;
    }
    this.stats[S_OUT_PUBLISH_END] = -1; // no publish of the new incarnation yet (see handledUpTo)
    this.inbound = createRing(this.ringBytes);
    this.outbound = createRing(this.ringBytes);
    const old = this.writer as RingWriter | undefined;
    this.writer = new RingWriter(this.inbound);
    old?.wake(); // a flush waiting for room in the dead ring goes on with the new one at once
    this.reader = new RingReader(this.outbound);
    this.generation++;
    this.drained = false;
  }

  /**
   * For a dead incarnation, before fresh(): the inbound read counter up to which its output was
   * published (those records were answered), or null when its last publish did not happen.
   */
  handledUpTo(): number | null {
    const end = this.stats[S_OUT_PUBLISH_END]!;
    if (end < 0 || this.reader.producerPosition() !== end) return null;
    return this.stats[S_IN_HANDLED]!;
  }

  /**
   * Writes a client frame record; false when it cannot be queued (the client gets `overloaded`).
   * `anon` and `addr` (a hash of the client address) go with joins: the shard's room-creation
   * principal; so does `info` (the identity's, as MessagePack: shown with presence and `who`).
   */
  writeFrame(conn: number, user: string | null, frame: Uint8Array, stamp: number, anon = false, addr = 0, info: Uint8Array | null = null): boolean {
    if (this.backlog.length > 0) { this.overloaded++; return false; }
    const userLen = user === null ? 0 : user.length;
    const infoLen = info === null ? 0 : info.byteLength + 4;
    const w = this.writer;
    const off = w.reserve(IN_FRAME_BODY + frame.byteLength + infoLen + userLen);
    if (off < 0) { this.overloaded++; return false; }
    const b = w.bytes;
    b[off] = IN_FRAME;
    b[off + 1] = userLen;
    b[off + 2] = (anon ? IN_FRAME_ANON : 0) | (info === null ? 0 : IN_FRAME_INFO);
    putU32(b, off + 4, conn);
    putU32(b, off + 8, stamp);
    putU32(b, off + 12, addr);
    b.set(frame, off + IN_FRAME_BODY);
    let u = off + IN_FRAME_BODY + frame.byteLength;
    if (info !== null) {
      b.set(info, u);
      putU32(b, u + info.byteLength, info.byteLength);
      u += infoLen;
    }
    for (let i = 0; i < userLen; i++) b[u + i] = user!.charCodeAt(i);
    w.commit();
    if (w.publishDeferred()) this.owe();
    this.noteInboundDepth();
    return true;
  }

  /**
   * The shard is parked and has records to read: wake it once, after this event-loop turn's
   * socket callbacks have all written theirs. A notify costs the main thread a futex call (and,
   * when the two threads share a core, a context switch), so one per turn instead of one per
   * frame; the frames themselves were visible at once to a shard still awake.
   */
  private owe(): void {
    if (this.wakeOwed) return;
    this.wakeOwed = true;
    setImmediate(this.settleWake);
  }

  private readonly settleWake = (): void => {
    this.wakeOwed = false;
    this.writer.notify();
    this.afterWake?.();
  };

  /**
   * Runs right after the end-of-turn notify (the engine drains the outbound ring there): a shard
   * that shares the core with the main thread takes it at the notify and has often answered the
   * turn's frames by the time this runs, so their output leaves in this turn's writes instead of
   * a turn of its own after another wake-up.
   */
  afterWake: (() => void) | null = null;

  /** Writes a server-side publish; false when the ring is full. */
  writeServerPub(req: number, room: string, from: string, body: Uint8Array, cid = ''): boolean {
    if (this.backlog.length > 0) { this.overloaded++; return false; }
    const w = this.writer;
    const off = w.reserve(8 + room.length + from.length + cid.length + body.byteLength);
    if (off < 0) { this.overloaded++; return false; }
    const b = w.bytes;
    b[off] = 3; // IN_SERVER_PUB
    putU32(b, off + 1, req);
    let p = putShortAscii(b, off + 5, room);
    p = putShortAscii(b, p, from);
    p = putShortAscii(b, p, cid);
    b.set(body, p);
    w.commit();
    w.publish();
    this.noteInboundDepth();
    return true;
  }

  /** Writes an HTTP API request for this shard (IN_ADMIN; workers/admin.ts); false when the ring is full. */
  writeAdmin(req: number, op: number, args: Uint8Array): boolean {
    if (this.backlog.length > 0) { this.overloaded++; return false; }
    const w = this.writer;
    const off = w.reserve(6 + args.byteLength);
    if (off < 0) { this.overloaded++; return false; }
    const b = w.bytes;
    b[off] = IN_ADMIN;
    putU32(b, off + 1, req);
    b[off + 5] = op;
    b.set(args, off + 6);
    w.commit();
    w.publish();
    this.noteInboundDepth();
    return true;
  }

  /** Tells the shard to drain (IN_DRAIN). */
  drainNow(): void {
    this.control(Uint8Array.of(IN_DRAIN));
  }

  close(conn: number): void {
    const b = this.scratch;
    b[0] = IN_CLOSE;
    putU32(b, 1, conn);
    // Woken at the end of the turn like a frame's: connection churn closed one socket per
    // callback, and an immediate notify per close handed the core to the shard each time.
    this.control(b.subarray(0, 5), true);
  }

  replay(conn: number, user: string, room: string, anon: boolean, info: Uint8Array | null = null): void {
    // user and room are at most 64 + 128 bytes: the scratch holds them; info needs its own buffer.
    const b = info === null ? this.scratch : new Uint8Array(8 + user.length + room.length + 4 + info.byteLength);
    b[0] = IN_REPLAY;
    putU32(b, 1, conn);
    const p = putShortAscii(b, 5, user);
    const e = putShortAscii(b, p, room);
    b[e] = (anon ? IN_FRAME_ANON : 0) | (info === null ? 0 : IN_FRAME_INFO);
    if (info === null) { this.control(b.subarray(0, e + 1)); return; }
    putU32(b, e + 1, info.byteLength);
    b.set(info, e + 5);
    this.control(b.subarray(0, e + 5 + info.byteLength));
  }

  /**
   * A control record: written now if possible, else kept (copied) and written in order once there
   * is room. `deferWake`: a parked shard is woken at the end of this event-loop turn (owe()), not
   * at once.
   */
  control(rec: Uint8Array, deferWake = false): void {
    if (this.stopped) return; // the engine stopped, or the shard failed for good: nobody reads this ring
    if (this.backlog.length === 0 && this.writer.push(rec)) {
      if (!deferWake) this.writer.publish();
      else if (this.writer.publishDeferred()) this.owe();
      this.noteInboundDepth();
      return;
    }
    this.backlog.push(rec.slice());
    if (!this.flushing) void this.flush();
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.backlog.length > 0 && !this.stopped) {
        const rec = this.backlog[0]!;
        if (this.writer.write(rec)) { this.backlog.shift(); continue; }
        const gen = this.generation;
        await this.writer.waitForSpace(rec.byteLength, 1000);
        if (gen !== this.generation) continue; // restarted: go on with the new ring
      }
    } finally {
      this.flushing = false;
    }
  }

  /** The engine stopped: drop what is queued and end any flush. */
  stop(): void {
    this.stopped = true;
    this.backlog.length = 0;
    this.writer.wake();
  }

  backlogLength(): number {
    return this.backlog.length;
  }

  private noteInboundDepth(): void {
    const d = this.writer.depth();
    if (d > this.inboundHighWater) this.inboundHighWater = d;
  }
}
