/**
 * Presence across nodes. Per room, a hash `<node>:<conn>` -> user (who is here, on which node)
 * and a hash user -> connection count over all nodes; the script that moves a user's count from
 * 0 to 1 or 1 to 0 publishes the `presence` event on the room's channel, so each event happens
 * once per user whatever the number of tabs and nodes. A node refreshes its heartbeat key (TTL);
 * `sweep()`, which any node may run, removes the entries of nodes whose heartbeat expired and
 * publishes their users' leave events.
 */
import type { RedisConnection } from './connection.js';
import { RedisProtocolError } from './errors.js';
import { NODES_KEY, ROOMS_KEY, nodeAliveKey, nodeRoomsKey, presenceCountKey, presenceKey, roomChannel } from './keys.js';
import { PRESENCE, SWEEP } from './scripts.js';

/** Node ids: 1..64 of [A-Za-z0-9_.-] (no ':' — it separates node and conn in presence fields). */
export function isValidNodeId(node: string): boolean {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(node);
}

export interface SweepResult { readonly removed: number; readonly more: boolean }

export class RedisPresence {
  constructor(private readonly conn: RedisConnection, readonly node: string, private readonly heartbeatTtlMs: number) {
    if (!isValidNodeId(node)) throw new TypeError(`node id ${JSON.stringify(node)} must be 1..64 of [A-Za-z0-9_.-]`);
    if (!Number.isInteger(heartbeatTtlMs) || heartbeatTtlMs < 100) throw new RangeError(`heartbeatTtlMs ${heartbeatTtlMs} must be an integer >= 100`);
  }

  /** Marks this node alive for heartbeatTtlMs; call at least every TTL/3. */
  async heartbeat(): Promise<void> {
    await this.conn.call(['SET', nodeAliveKey(this.node), '1', 'PX', String(this.heartbeatTtlMs)], 'presence heartbeat');
  }

  /** `conn` of `user` joins `room`. Returns the user's connection count in the room over all nodes (1 = first: the event was published). */
  join(room: string, conn: string, user: string): Promise<number> {
    return this.change('j', room, conn, user);
  }

  /** `conn` leaves `room` (no-op when it was not there). Returns the user's remaining count (0 = the leave event was published). */
  leave(room: string, conn: string, user: string): Promise<number> {
    return this.change('l', room, conn, user);
  }

  /** Distinct users present in the room on all nodes. */
  async who(room: string): Promise<string[]> {
    const r = await this.conn.call(['HKEYS', presenceCountKey(room)], `who in ${room}`);
    if (!Array.isArray(r)) throw new RedisProtocolError('HKEYS: bad reply');
    return r.map((b) => (b as Buffer).toString('utf8')).sort();
  }

  async members(room: string): Promise<number> {
    const r = await this.conn.call(['HLEN', presenceCountKey(room)], `members of ${room}`);
    return typeof r === 'number' ? r : 0;
  }

  /** Removes up to `budget` entries of dead nodes (heartbeat expired). */
  async sweep(budget = 1000): Promise<SweepResult> {
    const r = await SWEEP.run(this.conn, [NODES_KEY], ['sc:', String(budget)], 'presence sweep');
    if (!Array.isArray(r) || typeof r[0] !== 'number') throw new RedisProtocolError('sweep script: bad reply');
    return { removed: r[0], more: r[1] === 1 };
  }

  /** A clean shutdown: this node's heartbeat goes at once, so the next sweep removes its entries. */
  async retire(): Promise<void> {
    await this.conn.call(['DEL', nodeAliveKey(this.node)], 'presence retire');
  }

  private async change(op: 'j' | 'l', room: string, conn: string, user: string): Promise<number> {
    const r = await PRESENCE.run(this.conn, [presenceKey(room), presenceCountKey(room), nodeRoomsKey(this.node), NODES_KEY, ROOMS_KEY],
      [op, this.node, conn, user, roomChannel(room), room], `presence in ${room}`);
    if (typeof r !== 'number') throw new RedisProtocolError('presence script: bad reply');
    return r;
  }
}
