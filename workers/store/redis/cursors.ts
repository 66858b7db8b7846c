/**
 * Read cursors shared by all nodes: a hash per room, user -> seq. The update script never moves
 * a cursor backwards and never past the room's seq, so a late or stale `read` from any node is
 * harmless. A first join creates the cursor at the room's seq (history.ts READ); a publish moves
 * the publisher's cursor to its message (sequencer).
 */
import type { RedisConnection } from './connection.js';
import { RedisProtocolError } from './errors.js';
import { cursorKey, metaKey } from './keys.js';
import { CURSOR } from './scripts.js';

export class RedisCursors {
  constructor(private readonly conn: RedisConnection) {}

  /**
   * Moves `user`'s cursor to `seq` if that is forward (capped at the room's seq). Returns the
   * cursor after the update, or null when the room (or the given epoch) no longer exists.
   */
  async advance(room: string, user: string, seq: number, epoch: string | null = null): Promise<number | null> {
    if (!Number.isSafeInteger(seq) || seq < 0) throw new RangeError(`cursor seq ${seq} is not a non-negative integer`);
    const r = await CURSOR.run(this.conn, [metaKey(room), cursorKey(room)], [user, String(seq), epoch ?? ''], `read cursor in ${room}`);
    if (typeof r !== 'number') throw new RedisProtocolError('cursor script: bad reply');
    return r < 0 ? null : r;
  }

  /** The user's cursor, or null when they have none in the room. */
  async get(room: string, user: string): Promise<number | null> {
    const r = await this.conn.call(['HGET', cursorKey(room), user], `cursor in ${room}`);
    return Buffer.isBuffer(r) ? Number(r.toString('latin1')) : null;
  }
}
