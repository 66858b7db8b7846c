/**
 * Keeps every connection's unsent data (held by uWebSockets.js) near maxBufferBytes, so the
 * engine closes a slow consumer with 4008 and a close frame before memory grows, however fast
 * the publishers. uWS's own limit is off (maxBackpressure 0 = unlimited in uWS 20): the C++
 * fan-out of `app.publish` tells JavaScript nothing about which subscriber fell behind, and a
 * limit that fires inside it drops the socket without a close frame (the client sees 1006).
 *
 * The bound is kept by counting, not by timing. A socket's buffer grows only by direct sends
 * (the engine checks those at once) and by publishes to topics it is subscribed to. The guard
 * counts the bytes handed to `app.publish` since the last sweep; when the next publish would
 * take that count past `headroom`, it sweeps first. Every socket was checked at the last sweep,
 * and since then it can have grown by at most the count. A sweep checks only the members of the
 * topics published to since the one before (they are the only sockets that can have grown), so
 * its cost is at most one check per delivery made, not one per connection.
 *
 * uWS keeps publishes under 16 KiB in its topic tree until its per-loop drain, and
 * getBufferedAmount() does not see them until then: a sweep may miss up to one count of them,
 * which drain moves into the buffer later. A timer sweep (run from the timers phase, after that
 * drain) re-checks the members of topics that a counting sweep checked. So, at any time, a
 * socket holds at most maxBufferBytes + 2 x max(headroom, largest publish) + the largest direct
 * reply, and the first sweep after it passes maxBufferBytes closes it (docs/LIMITS.md).
 */
import type { WebSocket } from './uws.js';
import { type RoomSet, roomsAdd, roomsDelete, roomsHas, roomsOf } from './room-set.js';

/**
 * What a socket's user data must carry for the guard: the topics it is subscribed to, kept as a
 * RoomSet (null while none, the topic itself for one, a Set from two on: an idle connection in
 * one room carries no Set).
 */
export interface Subscribed { topics: RoomSet }

/** WebSocket frame header of a server message (no mask): at most 10 bytes. */
const FRAME_HEADER = 10;

export class SlowConsumerGuard<C extends Subscribed> {
  private readonly members = new Map<string, Set<WebSocket<C>>>();
  /** Member sets of the topics published to since the last sweep. */
  private dirty = new Set<Set<WebSocket<C>>>();
  /** Member sets checked by a counting sweep since the last timer sweep. */
  private lingering = new Set<Set<WebSocket<C>>>();
  private count = 0;
  /** Sweeps run because the count passed the headroom (a metric of how often it happens). */
  countedSweeps = 0;

  constructor(
    private readonly maxBuffer: number,
    private readonly headroom: number,
    private readonly closeSlow: (ws: WebSocket<C>) => void,
  ) {}

  /** Call right after ws.subscribe(topic). */
  subscribed(ws: WebSocket<C>, topic: string): void {
    const c = ws.getUserData();
    if (roomsHas(c.topics, topic)) return;
    c.topics = roomsAdd(c.topics, topic);
    let m = this.members.get(topic);
    if (m === undefined) { m = new Set(); this.members.set(topic, m); }
    m.add(ws);
  }

  /** Call right after ws.unsubscribe(topic). */
  unsubscribed(ws: WebSocket<C>, topic: string): void {
    const c = ws.getUserData();
    if (!roomsHas(c.topics, topic)) return;
    c.topics = roomsDelete(c.topics, topic);
    this.forget(ws, topic);
  }

  /** Call from the close handler: uWS has unsubscribed the socket from everything. */
  closed(ws: WebSocket<C>): void {
    const c = ws.getUserData();
    for (const topic of roomsOf(c.topics)) this.forget(ws, topic);
    c.topics = null;
  }

  /** Call before app.publish(topic, a message of `bytes` bytes). */
  beforePublish(topic: string, bytes: number): void {
    const cost = bytes + FRAME_HEADER;
    if (this.count > 0 && this.count + cost > this.headroom) {
      this.countedSweeps++;
      this.sweep(this.dirty);
      for (const m of this.dirty) this.lingering.add(m);
      this.dirty.clear();
      this.count = 0;
    }
    this.count += cost;
    const m = this.members.get(topic);
    if (m !== undefined) this.dirty.add(m);
  }

  /** The periodic sweep: everything published to since the last one, and what a counting sweep checked. */
  timerSweep(): void {
    this.sweep(this.dirty);
    this.sweep(this.lingering);
    this.dirty.clear();
    this.lingering.clear();
    this.count = 0;
  }

  /** Entries held: topics with members, and socket-topic memberships (for stats). */
  size(): { topics: number; memberships: number } {
    let memberships = 0;
    for (const m of this.members.values()) memberships += m.size;
    return { topics: this.members.size, memberships };
  }

  private sweep(sets: Set<Set<WebSocket<C>>>): void {
    const max = this.maxBuffer;
    for (const m of sets) {
      // closeSlow runs the close handler, which deletes from m: safe while iterating a Set.
      for (const ws of m) if (ws.getBufferedAmount() > max) this.closeSlow(ws);
    }
  }

  private forget(ws: WebSocket<C>, topic: string): void {
    const m = this.members.get(topic);
    if (m === undefined) return;
    m.delete(ws);
    if (m.size === 0) this.members.delete(topic);
  }
}
