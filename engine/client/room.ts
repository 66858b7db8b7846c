/**
 * What the client knows of one room: its state, epoch, the last seq given to the app, the read
 * cursor and the present users; and the resume rule: a `joined` either continues the sequence
 * (deliver `missed` after the last delivered seq) or starts a gap (truncated, or another epoch).
 * A seq at or below the last delivered one is never delivered again.
 */
import type { Frame, Message, RoomState } from './types.js';

export type JoinOutcome =
  | { kind: 'fresh' }
  | { kind: 'resume'; missed: Message[] }
  | { kind: 'gap'; reason: 'truncated' | 'epoch' };

export function toMessage(f: Frame, room: string): Message | null {
  if (typeof f.seq !== 'number' || typeof f.from !== 'string') return null;
  return { room, seq: f.seq, from: f.from, body: f.body, ts: typeof f.ts === 'number' ? f.ts : 0 };
}

export class RoomTrack {
  state: RoomState = 'left';
  /** The app asked to be in this room (rejoined after every reconnect). */
  wanted = false;
  epoch: string | null = null;
  /** Highest seq given to the app in `epoch`; 0 = none yet. */
  last = 0;
  /** Highest seq the engine has for the room, as far as we know. */
  latest = 0;
  cursor = 0;
  users = new Set<string>();
  /** Presence changes seen while a `who` is out (replayed on its snapshot); null when none is. */
  presenceLog: { user: string; join: boolean }[] | null = null;
  /** Live messages held while a gap reload is in flight; null when not reloading. */
  held: Message[] | null = null;
  joinRef = -1;
  waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  constructor(readonly name: string) {}

  get unread(): number { return Math.max(0, this.latest - this.cursor); }

  joinFrame(): Frame {
    const f: Frame = { t: 'join', room: this.name };
    if (this.epoch !== null) { f.since = this.last; f.epoch = this.epoch; }
    return f;
  }

  /** Applies a `joined` (solicited or not) and says how to deliver. */
  onJoined(f: Frame, solicited: boolean): JoinOutcome {
    const epoch = String(f.epoch);
    const seq = typeof f.seq === 'number' ? f.seq : 0;
    const unread = typeof f.unread === 'number' ? f.unread : 0;
    const had = this.epoch;
    this.latest = seq;
    this.cursor = seq - unread;
    this.epoch = epoch;
    if (had === null) { this.last = seq; return { kind: 'fresh' }; }
    if (had !== epoch) { this.last = 0; return { kind: 'gap', reason: 'epoch' }; }
    if (f.truncated === true) return { kind: 'gap', reason: 'truncated' };
    if (!solicited) return { kind: 'resume', missed: [] };
    const missed: Message[] = [];
    if (Array.isArray(f.missed)) {
      for (const m of f.missed as Frame[]) {
        const msg = toMessage(m, this.name);
        if (msg) missed.push(msg);
      }
    }
    return { kind: 'resume', missed };
  }

  /** True if `m` is new to the app (and records it as delivered). */
  accept(m: Message): boolean {
    if (m.seq <= this.last) return false;
    this.last = m.seq;
    if (m.seq > this.latest) this.latest = m.seq;
    return true;
  }
}
