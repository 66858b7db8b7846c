/**
 * The outbound dispatcher: moves each shard's output records (outbound ring) to sockets, as
 * uWS `publish` (C++ fan-out) and `send` calls on views of the ring (no copy), with the acks of
 * a batch sent after its publishes, and resolves server-side publishes. It knows sockets only
 * through its host (the engine), and reports every publish to the slow-consumer guard.
 */
import type { Logger } from 'pino';
import type { Histogram } from 'prom-client';
import { asciiString } from '../protocol/msgpack.js';
import {
  OUT_BODY, OUT_DRAINED, OUT_JOINED, OUT_LEFT, OUT_PUBLISH, OUT_PUBLISH_ACK, OUT_REFUSED, OUT_SEND, OUT_SERVER_ACK, OUT_ADMIN_REPLY, OUT_EVENT, OUT_SERVER_ERR, OUT_CONTROL, getU32,
} from '../protocol/records.js';
import type { ShardLink } from './link.js';
import type { SlowConsumerGuard, Subscribed } from './slow-consumers.js';
import type { TemplatedApp, WebSocket } from './uws.js';

/**
 * Records one pump turn drains before it lets the event loop run. Every record published in a
 * turn leaves in that turn's writes, one per socket, so the batch decides how full the writes
 * are: with 2,048, a saturated many-small-2000x2 (2,000 rooms, up to 16,000 pubs in flight)
 * drained about one pub per room per turn and each socket got ~1 message per write. 16,384 is
 * above the in-flight count of every bench scenario, so a turn usually takes the whole ring; the
 * ring's bytes bound it anyway (docs/LIMITS.md), and a turn's cost stays that of the fan-out the
 * clients already asked for, as in a single-threaded server's turn.
 */
const OUT_BATCH = 16384;
/** Main-thread microseconds mod 2^32 (both ends of the fan-out measurement are on the main thread). */
export const nowMicros = (): number => (performance.now() * 1000) >>> 0;
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** What the dispatcher needs of the engine. */
export interface OutboundHost<C> {
  readonly conns: ReadonlyMap<number, WebSocket<C>>;
  app(): TemplatedApp | null;
  /** Sends one frame; false when the connection was closed as a slow consumer instead. */
  send(ws: WebSocket<C>, frame: Uint8Array): boolean;
  /** Charges a direct reply of `bytes` to its connection's rate limit. */
  chargeReply(ws: WebSocket<C>, bytes: number): void;
  /**
   * The shard's answers are the authority on membership, in ring order: a `joined` puts the room
   * in the connection's set (a refused join may have taken it out meanwhile), a refusal or a
   * `left` takes it out. The main thread's own add/delete when it writes a join or leave only
   * runs ahead of them.
   */
  member(ws: WebSocket<C>, room: string, joined: boolean): void;
  /** A server-side publish was given its seq. */
  /** A server-side publish was given its seq (`dup`: its cid was published before; nothing new stored). */
  serverAck(req: number, seq: number, epoch: string, dup: boolean): void;
  /** A server-side publish failed (OUT_SERVER_ERR: cluster mode's `unavailable`): `body` is a view of the ring, copy it. */
  serverError(req: number, body: Uint8Array): void;
  /** Cluster mode: a kick or disconnect from the control channel (OUT_CONTROL): `body` is a view of the ring, copy it. */
  control(body: Uint8Array): void;
  /** A shard answered an HTTP API request (OUT_ADMIN_REPLY): `body` is a view of the ring, copy it. */
  adminReply(req: number, body: Uint8Array): void;
  /** A shard's webhook event (OUT_EVENT, only with webhooks on): `body` is a view of the ring, copy it. */
  event(room: string, body: Uint8Array): void;
  stopped(): boolean;
}

export class OutboundDispatcher<C extends Subscribed> {
  constructor(
    private readonly host: OutboundHost<C>,
    private readonly guard: SlowConsumerGuard<C>,
    private readonly links: readonly ShardLink[],
    private readonly fanoutLatency: Histogram,
    private readonly log: Logger,
  ) {}

  /** Delivers everything published in a link's outbound ring now (a dead shard's, or at drain). */
  deliverAll(link: ShardLink): void {
    link.reader.drain(this.onOut, Infinity, this.flushAcks);
  }

  /**
   * Drains what a live link's shard has published by now, at the end of the turn that woke it
   * (ShardLink.afterWake), ahead of uWS's end-of-turn pub/sub write. Its pump may be parked
   * meanwhile: the pump's wait ends at the shard's next publish, finds the ring as this left it
   * and parks again. Left with records past one batch, it wakes the pump to take the rest (a
   * parked pump would otherwise not come back for them until the shard publishes again).
   */
  drainNow(link: ShardLink): void {
    if (this.host.stopped() || !link.up) return;
    const reader = link.reader;
    if (!reader.hasNext()) return;
    if (reader.drain(this.onOut, OUT_BATCH, this.flushAcks) === OUT_BATCH && reader.hasNext()) reader.wake();
  }

  /**
   * Moves shard output to sockets until the link's generation changes or the engine stops. It
   * parks as soon as the ring is empty rather than polling once per event-loop turn: polling
   * keeps the loop from blocking in epoll, so each turn reads only the few sockets that happen
   * to be ready and a closed loop of clients splits into many small cohorts, each fanned out with
   * its own write per subscriber. Parked, the loop waits for sockets or for the shard's notify
   * (one per output batch), and each turn's fan-out carries what the turn gathered. Measured in
   * fanout-10x100: 0.87x plain uWS's throughput and 1.07x its main-thread CPU per delivery,
   * against 0.80x and 1.20x polling for 64 idle turns (native-bench, 5 runs each).
   */
  async pump(link: ShardLink, gen: number): Promise<void> {
    const reader = link.reader;
    while (!this.host.stopped() && link.generation === gen) {
      const depth = reader.depth();
      if (depth > link.outboundHighWater) link.outboundHighWater = depth;
      const n = reader.drain(this.onOut, OUT_BATCH, this.flushAcks);
      if (n === OUT_BATCH) { await yieldToLoop(); continue; }
      if (reader.hasNext()) continue;
      await reader.waitForData();
    }
  }

  // Acks of this drain batch, sent once the batch's publishes are in (flushAcks). Each sender's
  // ack then leaves in the same write as every message of the batch its rooms got: uWS's send
  // first drains the socket's queued pub/sub messages into the cork. Sent at once instead, the ack
  // would cost the sender a write of its own before the end-of-turn pub/sub drain. The views point
  // into the outbound ring, valid until the batch's read counter is published (after the flush).
  private readonly ackConns: number[] = [];
  private readonly ackFrames: Uint8Array[] = [];
  private ackWs: WebSocket<C> | null = null;
  private ackFrame: Uint8Array | null = null;
  private readonly sendAck = (): void => { this.host.send(this.ackWs!, this.ackFrame!); };

  /** Sends the queued acks, each corked with its socket's queued pub/sub messages. */
  readonly flushAcks = (): void => {
    const ids = this.ackConns;
    if (ids.length === 0) return;
    const frames = this.ackFrames;
    for (let i = 0; i < ids.length; i++) {
      const ws = this.host.conns.get(ids[i]!);
      if (ws === undefined) continue; // closed since (a slow consumer closed mid-batch, say)
      this.ackWs = ws; this.ackFrame = frames[i]!;
      ws.cork(this.sendAck);
    }
    this.ackWs = this.ackFrame = null;
    ids.length = 0;
    frames.length = 0;
  };

  /** The connection a direct reply record is for; queued acks leave first, so a connection's replies keep the shard's order. */
  private replyTo(b: Uint8Array, off: number): WebSocket<C> | undefined {
    this.flushAcks();
    return this.host.conns.get(getU32(b, off + 4));
  }

  private observeFanout(stamp: number): void {
    // Receipt-to-fan-out latency of the sampled pubs (the ones that carry a stamp).
    if (stamp !== 0) this.fanoutLatency.observe((((nowMicros() - stamp) >>> 0) / 1e6));
  }

  readonly onOut = (b: Uint8Array, off: number, len: number): void => {
    // Layout (protocol/records.ts): [0] kind, [1] roomLen, [4] id, [8..] body, room at the end.
    const end = off + len;
    const rs = end - b[off + 1]!;
    switch (b[off]) {
      case OUT_PUBLISH: {
        this.guard.beforePublish(asciiString(b, rs, end), rs - off - OUT_BODY);
        this.host.app()?.publish(b.subarray(rs, end), b.subarray(off + OUT_BODY, rs), true);
        this.observeFanout(getU32(b, off + 4));
        return;
      }
      case OUT_PUBLISH_ACK: {
        const p = off + OUT_BODY;
        const ms = p + 8;
        const me = ms + getU32(b, p + 4);
        const id = getU32(b, off + 4);
        this.guard.beforePublish(asciiString(b, rs, end), me - ms);
        this.host.app()?.publish(b.subarray(rs, end), b.subarray(ms, me), true);
        if (this.host.conns.has(id)) { this.ackConns.push(id); this.ackFrames.push(b.subarray(me, rs)); }
        this.observeFanout(getU32(b, p));
        return;
      }
      case OUT_SEND: {
        const ws = this.replyTo(b, off);
        if (ws !== undefined && this.host.send(ws, b.subarray(off + OUT_BODY, rs))) this.host.chargeReply(ws, rs - off - OUT_BODY);
        return;
      }
      case OUT_REFUSED: {
        const ws = this.replyTo(b, off);
        if (ws === undefined) return;
        this.host.member(ws, asciiString(b, rs, end), false);
        this.host.send(ws, b.subarray(off + OUT_BODY, rs));
        return;
      }
      case OUT_JOINED: {
        const ws = this.replyTo(b, off);
        if (ws === undefined) return;
        const room = asciiString(b, rs, end);
        // Before the send: a send that closes a slow consumer runs the close handler at once,
        // which must see the room to tell the shard.
        this.host.member(ws, room, true);
        if (this.host.send(ws, b.subarray(off + OUT_BODY, rs))) {
          this.host.chargeReply(ws, rs - off - OUT_BODY);
          ws.subscribe(b.subarray(rs, end));
          this.guard.subscribed(ws, room);
        }
        return;
      }
      case OUT_LEFT: {
        const ws = this.replyTo(b, off);
        if (ws === undefined) return;
        const room = asciiString(b, rs, end);
        this.host.member(ws, room, false);
        ws.unsubscribe(b.subarray(rs, end));
        this.guard.unsubscribed(ws, room);
        this.host.send(ws, b.subarray(off + OUT_BODY, rs));
        return;
      }
      case OUT_EVENT:
        this.host.event(asciiString(b, rs, end), b.subarray(off + OUT_BODY, rs));
        return;
      case OUT_ADMIN_REPLY:
        this.host.adminReply(getU32(b, off + 4), b.subarray(off + OUT_BODY, rs));
        return;
      case OUT_CONTROL:
        this.host.control(b.subarray(off + OUT_BODY, rs));
        return;
      case OUT_SERVER_ERR:
        this.host.serverError(getU32(b, off + 4), b.subarray(off + OUT_BODY, rs));
        return;
      case OUT_SERVER_ACK: {
        const req = getU32(b, off + 4);
        const p = off + OUT_BODY;
        const seq = getU32(b, p) * 0x100000000 + getU32(b, p + 4);
        const epochEnd = p + 9 + b[p + 8]!;
        this.host.serverAck(req, seq, asciiString(b, p + 9, epochEnd), b[epochEnd] === 1);
        return;
      }
      case OUT_DRAINED:
        for (const l of this.links) if (l.reader.bytes === b) l.drained = true;
        return;
      default:
        this.log.error({ event: 'bad_outbound_record', kind: b[off] }, 'unknown outbound record');
    }
  };
}
