/**
 * The node's one pub/sub connection. It subscribes only to rooms with local members and turns
 * Redis pub/sub (at most once) into "every message once, in seq order" per room:
 * - continuity (continuity.ts): each room's last delivered seq is kept; a message after a hole is buffered and
 *   the hole is filled from the room's stream; duplicates are dropped;
 * - a changed epoch (Redis lost the room) is reported, then the new epoch is delivered from 1;
 * - a hole the stream no longer holds (trimmed) is reported as lost, never papered over;
 * - any drop of the connection: a fresh connection, every room resubscribed (awaited), then every
 *   room resynchronised from its stream (node-redis's own resubscribe is not trusted: reconnect
 *   is ours);
 * - an idle probe: when nothing arrived for probeIntervalMs, the node publishes to its own service
 *   channel; no echo within probeTimeoutMs means a dead subscription: reconnect.
 * `healthy` (subscribed and probed) is what /readyz should follow.
 */
import { createClient } from 'redis';
import { backoffMs, type RedisConnection } from './connection.js';
import { RedisUnavailableError } from './errors.js';
import type { RedisHistory } from './history.js';
import { RoomFeeds, type FeedEvents } from './continuity.js';
import { CONTROL_CHANNEL, nodeChannel, roomChannel, roomOfChannel } from './keys.js';
import { decodeRoomEvent, WireError, type ChannelEvent } from './wire.js';

export interface SubscriberEvents extends FeedEvents {
  presence(room: string, user: string, state: 'join' | 'leave'): void;
  /** The message `seq` of the room's `epoch` was redacted (from any node's API). */
  redacted?(room: string, seq: number, epoch: string): void;
  /** A payload on the control channel (only with `control` set). */
  control?(payload: Buffer): void;
  health(healthy: boolean): void;
}

export interface SubscriberOptions {
  url: string;
  node: string;
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** Out-of-order messages a room buffers while a fill runs; beyond, the fill reads them from the stream. */
  maxPendingPerRoom?: number;
  /** Messages per fill read. */
  fillBatch?: number;
  /** Last delivered messages a room keeps in memory, so a join can catch up without a round trip. */
  recentPerRoom?: number;
  roomTtlMs?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  connectTimeoutMs?: number;
  /** A SUBSCRIBE's deadline, ms (then the join gets `unavailable`). */
  subscribeTimeoutMs?: number;
  /** Also subscribe CONTROL_CHANNEL (one store per node does) and report its payloads as `control`. */
  control?: boolean;
}

export const DEFAULT_SUBSCRIBER = {
  probeIntervalMs: 2_000, probeTimeoutMs: 1_000, maxPendingPerRoom: 1024, fillBatch: 500, recentPerRoom: 64, roomTtlMs: 0,
  reconnectMinMs: 50, reconnectMaxMs: 2_000, connectTimeoutMs: 800, subscribeTimeoutMs: 800, control: false,
} as const;

function createPubSubClient(url: string, connectTimeoutMs: number) {
  // No reconnect of its own: a dropped subscriber is replaced, then resubscribed and resynced.
  return createClient({ url, RESP: 2, disableOfflineQueue: true, socket: { connectTimeout: connectTimeoutMs, reconnectStrategy: false } });
}
type PubSubClient = ReturnType<typeof createPubSubClient>;

export class RedisSubscriber {
  private readonly o: Required<Omit<SubscriberOptions, 'url' | 'node'>> & { url: string; node: string };
  private readonly feeds: RoomFeeds;
  private client: PubSubClient | null = null;
  private subscribed = false;
  private closed = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private probeTimer: NodeJS.Timeout | null = null;
  private lastActivity = Date.now();
  private probeToken: string | null = null;
  private probeDeadline = 0;
  private probeSeq = 0;
  private wasHealthy = false;
  /** Completed reconnects (for tests and metrics). */
  reconnects = 0;
  /** Room-channel payloads that no script of ours produced (for metrics). */
  badPayloads = 0;
  private readonly listener = (message: Buffer, channel: Buffer): void => this.onRaw(channel.toString('latin1'), message);

  constructor(options: SubscriberOptions, private readonly commands: RedisConnection, history: RedisHistory, private readonly events: SubscriberEvents) {
    this.o = { ...DEFAULT_SUBSCRIBER, ...options };
    this.feeds = new RoomFeeds(this.o, history, events, () => { if (this.subscribed) this.lostConnection(); });
  }

  get healthy(): boolean { return this.subscribed && !this.closed && this.probeToken === null; }

  /** Connects and subscribes the node channel; rejects (unavailable) when Redis is down now, and keeps retrying. */
  async start(): Promise<void> {
    this.probeTimer = setInterval(() => this.tick(), Math.max(10, Math.floor(this.o.probeIntervalMs / 4)));
    await this.connect();
  }

  /** Subscribes `room` and buffers its messages until begin(). */
  async add(room: string): Promise<void> {
    if (this.feeds.has(room)) return;
    const client = this.client;
    if (!this.subscribed || client === null) throw new RedisUnavailableError(`subscribe ${room}`, this.o.reconnectMaxMs, false);
    this.feeds.add(room);
    let timer: NodeJS.Timeout | undefined;
    try {
      // A Redis that hangs must not hang the join: the subscription gets the command deadline.
      await Promise.race([
        client.subscribe(roomChannel(room), this.listener, true),
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no SUBSCRIBE reply within ${this.o.subscribeTimeoutMs} ms`)), this.o.subscribeTimeoutMs); }),
      ]);
    } catch (err) {
      this.feeds.delete(room);
      // If the subscription completes later, undo it (its messages would be dropped anyway).
      if (this.client === client) client.unsubscribe(roomChannel(room), this.listener, true).catch(() => { /* the connection is going: nothing to undo */ });
      throw new RedisUnavailableError(`subscribe ${room}`, this.o.reconnectMaxMs, false, err);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The joiner read the room's history (after add()): deliver from `seq` on. Buffered messages
   * after it are merged in; a hole is filled from the stream. A room already started keeps its
   * position.
   */
  begin(room: string, epoch: string, seq: number): void { this.feeds.begin(room, epoch, seq); }

  /** The room's last delivered seq and epoch (null before begin()). */
  position(room: string): { epoch: string; seq: number } | null { return this.feeds.position(room); }

  /** Delivered messages fromSeq..toSeq from memory, or null when the ring no longer holds them all. */
  recent(room: string, fromSeq: number, toSeq: number): { seq: number; frame: Buffer }[] | null { return this.feeds.recent(room, fromSeq, toSeq); }

  /** Gaps filled from the stream (for tests and metrics). */
  get fills(): number { return this.feeds.fills; }

  async remove(room: string): Promise<void> {
    if (!this.feeds.delete(room)) return;
    if (this.subscribed && this.client !== null) {
      try {
        await this.client.unsubscribe(roomChannel(room), this.listener, true);
      } catch {
        // The connection dropped: the reconnect subscribes only the rooms still listed, so the
        // room is gone from it either way.
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.probeTimer !== null) clearInterval(this.probeTimer);
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.dropClient();
    this.feeds.clear();
  }

  /** Drops the connection as if it had died (what a failed probe does). */
  recycle(): void {
    if (this.closed) return;
    this.lostConnection();
  }

  private async connect(): Promise<void> {
    const client = createPubSubClient(this.o.url, this.o.connectTimeoutMs);
    this.client = client;
    client.on('error', () => { if (this.client === client) this.lostConnection(); });
    client.on('end', () => { if (this.client === client) this.lostConnection(); });
    try {
      await client.connect();
      await client.subscribe(nodeChannel(this.o.node), this.listener, true);
      if (this.o.control) await client.subscribe(CONTROL_CHANNEL, this.listener, true);
      const channels = [...this.feeds.names()].map(roomChannel);
      for (let i = 0; i < channels.length; i += 1000) await client.subscribe(channels.slice(i, i + 1000), this.listener, true);
    } catch (err) {
      if (this.client === client) this.lostConnection();
      throw new RedisUnavailableError('subscriber connect', this.o.reconnectMaxMs, false, err);
    }
    if (this.client !== client || this.closed) return;
    this.subscribed = true;
    this.attempt = 0;
    this.lastActivity = Date.now();
    this.probeToken = null;
    // Everything published while we were away is in the streams: resynchronise every room.
    this.feeds.resyncAll();
    this.setHealth();
  }

  private dropClient(): void {
    const c = this.client;
    this.client = null;
    this.subscribed = false;
    if (c !== null && c.isOpen) c.destroy();
  }

  private lostConnection(): void {
    if (this.client === null && this.reconnectTimer !== null) return;
    this.dropClient();
    this.probeToken = null;
    this.setHealth();
    if (this.closed || this.reconnectTimer !== null) return;
    const delay = backoffMs(this.attempt++, this.o.reconnectMinMs, this.o.reconnectMaxMs);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect().then(() => { this.reconnects++; }, () => { /* lostConnection() scheduled the next attempt */ });
    }, delay);
  }

  private setHealth(): void {
    const h = this.healthy;
    if (h !== this.wasHealthy) {
      this.wasHealthy = h;
      this.events.health(h);
    }
  }

  private tick(): void {
    if (!this.subscribed) return;
    const now = Date.now();
    if (this.probeToken !== null) {
      if (now > this.probeDeadline) this.lostConnection();
      return;
    }
    if (now - this.lastActivity < this.o.probeIntervalMs) return;
    const token = `${process.pid}.${++this.probeSeq}`;
    this.probeToken = token;
    this.probeDeadline = now + this.o.probeTimeoutMs;
    this.commands.call(['PUBLISH', nodeChannel(this.o.node), `probe${token}`], 'subscriber probe').catch(() => {
      // Redis did not take the probe: the deadline will recycle the subscriber.
    });
  }

  private onRaw(channel: string, payload: Buffer): void {
    this.lastActivity = Date.now();
    if (channel === nodeChannel(this.o.node)) {
      if (this.probeToken !== null && payload.toString('latin1') === `probe${this.probeToken}`) {
        this.probeToken = null;
        this.setHealth();
      }
      return;
    }
    if (channel === CONTROL_CHANNEL) { if (this.o.control) this.events.control?.(payload); return; }
    const room = roomOfChannel(channel);
    if (room === null || !this.feeds.has(room)) return;
    let ev: ChannelEvent;
    try {
      ev = decodeRoomEvent(payload);
    } catch (err) {
      // Not one of our scripts' payloads (someone else published on the channel): count it,
      // and check the room against its stream in case a real message hides behind it.
      if (!(err instanceof WireError)) throw err;
      this.badPayloads++;
      this.feeds.check(room);
      return;
    }
    if (ev.kind === 'presence') this.events.presence(room, ev.user, ev.state);
    else if (ev.kind === 'redact') { this.feeds.redact(room, ev.seq, ev.epoch, ev.frame); this.events.redacted?.(room, ev.seq, ev.epoch); }
    else this.feeds.live(room, ev.seq, ev.epoch, ev.frame);
  }
}
