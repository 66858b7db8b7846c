/**
 * Idle read cursors: those of named users who have left a room (anonymous users' cursors go when
 * they leave: their ids are per connection, so nobody comes back for them). Present users'
 * cursors are bounded by the memberships; idle ones by `maxCursorsPerRoom` per room and
 * `maxCursorsPerShard` across the shard, least recently left evicted first. An evicted user who
 * comes back starts with no unread messages, as a new user does.
 *
 * The cursor values live in the room's `cursors` map; this is only the eviction order.
 */
import type { Room } from './rooms.js';

interface Idle {
  readonly room: Room;
  readonly user: string;
}

export class Cursors {
  /** Every idle cursor, least recently parked first. */
  private readonly all = new Map<Idle, true>();
  /** Per room, user -> its idle entry, least recently parked first. */
  private readonly byRoom = new Map<Room, Map<string, Idle>>();
  evicted = 0;

  constructor(readonly perRoom: number, readonly perShard: number) {}

  get size(): number {
    return this.all.size;
  }

  /** The user left the room: its cursor becomes idle. Returns how many cursors were evicted. */
  park(r: Room, user: string): number {
    if (!r.cursors.has(user)) return 0;
    let m = this.byRoom.get(r);
    if (m === undefined) { m = new Map(); this.byRoom.set(r, m); }
    const e: Idle = { room: r, user };
    m.set(user, e);
    this.all.set(e, true);
    let n = 0;
    if (m.size > this.perRoom) { this.evict(m.values().next().value!); n++; }
    while (this.all.size > this.perShard) { this.evict(this.all.keys().next().value!); n++; }
    return n;
  }

  /** The user is back in the room: true when it had an idle cursor (now in use again). */
  take(r: Room, user: string): boolean {
    const m = this.byRoom.get(r);
    const e = m?.get(user);
    if (e === undefined) return false;
    this.unlink(m!, e);
    return true;
  }

  /** Forgets the room's idle entries (the room's cursors map is cleared by its owner). */
  dropRoom(r: Room): void {
    const m = this.byRoom.get(r);
    if (m === undefined) return;
    for (const e of m.values()) this.all.delete(e);
    this.byRoom.delete(r);
  }

  private evict(e: Idle): void {
    this.unlink(this.byRoom.get(e.room)!, e);
    e.room.deleteCursor(e.user);
    this.evicted++;
  }

  private unlink(m: Map<string, Idle>, e: Idle): void {
    m.delete(e.user);
    this.all.delete(e);
    if (m.size === 0) this.byRoom.delete(e.room);
  }
}
