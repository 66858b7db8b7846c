/**
 * The `cid` dedupe window of one room when the shard has no durable store (`store: 'memory'`):
 * user + cid -> the seq and ts of the message it made, for at most the room's last `maxMessages`
 * messages that are also at most `maxAgeMs` old (the same rule as the durable store's window,
 * docs/STORE.md). Made at a room's first pub with a cid, dropped with the room. With a durable
 * store the store keeps the window instead (it survives a restart there).
 */

interface Hit { seq: number; ts: number }

export class CidWindow {
  /** Insertion order is seq order: every add is the room's newest message. */
  private readonly map = new Map<string, Hit>();

  constructor(private readonly maxMessages: number, private readonly maxAgeMs: number) {}

  get size(): number {
    return this.map.size;
  }

  /** The seq of `user`'s message with this cid within the window (the room is at `roomSeq`), or 0. */
  find(user: string, cid: string, roomSeq: number, now: number): number {
    this.prune(roomSeq, now);
    const hit = this.map.get(user + '\u0000' + cid);
    return hit === undefined ? 0 : hit.seq;
  }

  /** Records message `seq` (the room's newest) as `user`'s with this cid. */
  add(user: string, cid: string, seq: number, ts: number): void {
    const key = user + '\u0000' + cid;
    this.map.delete(key);
    this.map.set(key, { seq, ts });
    this.prune(seq, ts);
  }

  private prune(roomSeq: number, now: number): void {
    for (const [k, h] of this.map) {
      if (h.seq > roomSeq - this.maxMessages && h.ts >= now - this.maxAgeMs) break;
      this.map.delete(k);
    }
  }
}
