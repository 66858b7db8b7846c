/**
 * Room bans made by the HTTP API's `kick` (docs/API.md): user x room -> until when (monotonic
 * ms). Bounded by `maxBans` entries: a full table first forgets ended bans, then the oldest
 * ban (counted in `forgotten`, so an operator can see the bound was hit). A reconnect does not
 * reset a ban: it is keyed by user, not by connection.
 */
export class BanTable {
  private readonly until = new Map<string, number>();
  /** Bans dropped before their end because the table was full. */
  forgotten = 0;

  constructor(private readonly maxEntries: number, private readonly now: () => number) {}

  get size(): number {
    return this.until.size;
  }

  /** Bans `user` from `room` for `ms` (replacing an earlier ban of the pair). */
  ban(room: string, user: string, ms: number): void {
    const key = `${room}\u0000${user}`;
    this.until.delete(key);
    if (this.until.size >= this.maxEntries) this.sweep();
    if (this.until.size >= this.maxEntries) {
      const oldest = this.until.keys().next().value as string;
      this.until.delete(oldest);
      this.forgotten++;
    }
    this.until.set(key, this.now() + ms);
  }

  /** Milliseconds left of `user`'s ban from `room` (0 = not banned). */
  remaining(room: string, user: string): number {
    const key = `${room}\u0000${user}`;
    const end = this.until.get(key);
    if (end === undefined) return 0;
    const left = end - this.now();
    if (left > 0) return Math.ceil(left);
    this.until.delete(key);
    return 0;
  }

  /** Lifts a ban; true when there was one. */
  lift(room: string, user: string): boolean {
    return this.until.delete(`${room}\u0000${user}`);
  }

  private sweep(): void {
    const t = this.now();
    for (const [k, end] of this.until) if (end <= t) this.until.delete(k);
  }
}
