/**
 * The state of one shard's rooms: members, seq, epoch, history, presence, read cursors. The sole
 * owner of that state is the shard worker that holds this object; nothing else writes it.
 *
 * Every per-connection and per-room entry has one place that creates it and one that removes
 * it: `addMember` / `removeMember` for memberships and presence, `room()` / `dropRoom` for rooms
 * (dropped once empty for `roomTtlMs`), history entries from the pool released on eviction.
 */
import { randomBytes } from 'node:crypto';
import type { BufferPool } from '../engine/pool/index.js';

export interface Room {
  readonly name: string;
  /** The room name as bytes, for writing frames without re-encoding. */
  readonly nameBytes: Uint8Array;
  readonly epoch: string;
  seq: number;
  /** History: pooled buffers holding encoded `msg` frames, circular, oldest at histHead. */
  readonly histBufs: (Uint8Array | null)[];
  readonly histLens: Int32Array;
  histHead: number;
  histCount: number;
  /** conn -> user, for connections in the room. */
  readonly members: Map<number, string>;
  /** user -> number of that user's connections in the room (presence counts a user once). */
  readonly users: Map<string, number>;
  /** user -> read cursor; lives as long as the room's state. */
  readonly cursors: Map<string, number>;
  /** Date.now() when the last member left; 0 while it has members. */
  emptySince: number;
}

export interface ConnEntry {
  user: string;
  rooms: Set<Room>;
}

export function newEpoch(): string {
  return Date.now().toString(36) + randomBytes(6).toString('base64url');
}

export class Rooms {
  readonly rooms = new Map<string, Room>();
  readonly conns = new Map<number, ConnEntry>();
  historyMessages = 0;
  memberships = 0;
  presentUsers = 0;
  cursorCount = 0;

  constructor(private readonly historyLimit: number, private readonly roomTtlMs: number,
    private readonly pool: BufferPool) {}

  get(name: string): Room | undefined {
    return this.rooms.get(name);
  }

  /** The room, created (seq 0, a new epoch) if this shard has no state for it. */
  room(name: string): Room {
    let r = this.rooms.get(name);
    if (r === undefined) {
      const nameBytes = new Uint8Array(name.length);
      for (let i = 0; i < name.length; i++) nameBytes[i] = name.charCodeAt(i);
      r = {
        name, nameBytes, epoch: newEpoch(), seq: 0,
        histBufs: new Array<Uint8Array | null>(this.historyLimit).fill(null),
        histLens: new Int32Array(this.historyLimit), histHead: 0, histCount: 0,
        members: new Map(), users: new Map(), cursors: new Map(), emptySince: Date.now(),
      };
      this.rooms.set(name, r);
    }
    return r;
  }

  /** Adds conn to room; returns true when this is the user's first connection there (presence join). */
  addMember(r: Room, conn: number, user: string): boolean {
    r.members.set(conn, user);
    r.emptySince = 0;
    this.memberships++;
    let c = this.conns.get(conn);
    if (c === undefined) { c = { user, rooms: new Set() }; this.conns.set(conn, c); }
    c.rooms.add(r);
    const n = r.users.get(user) ?? 0;
    r.users.set(user, n + 1);
    if (!r.cursors.has(user)) { r.cursors.set(user, r.seq); this.cursorCount++; }
    if (n === 0) this.presentUsers++;
    return n === 0;
  }

  /** Removes conn from room; returns the user when it was their last connection there (presence leave). */
  removeMember(r: Room, conn: number): string | null {
    const user = r.members.get(conn);
    if (user === undefined) return null;
    r.members.delete(conn);
    this.memberships--;
    const c = this.conns.get(conn);
    if (c !== undefined) {
      c.rooms.delete(r);
      if (c.rooms.size === 0) this.conns.delete(conn);
    }
    const n = r.users.get(user)! - 1;
    let last: string | null = null;
    if (n === 0) { r.users.delete(user); this.presentUsers--; last = user; } else r.users.set(user, n);
    if (r.members.size === 0) {
      r.emptySince = Date.now();
      if (this.roomTtlMs === 0) this.dropRoom(r);
    }
    return last;
  }

  /** Appends an encoded msg frame (a pooled buffer, ownership passes here) to history. */
  pushHistory(r: Room, buf: Uint8Array, len: number): void {
    const cap = this.historyLimit;
    if (cap === 0) { this.pool.release(buf); return; }
    let slot: number;
    if (r.histCount === cap) {
      slot = r.histHead;
      this.pool.release(r.histBufs[slot]!);
      r.histHead = (r.histHead + 1) % cap;
      this.historyMessages--;
    } else {
      slot = (r.histHead + r.histCount) % cap;
      r.histCount++;
    }
    r.histBufs[slot] = buf;
    r.histLens[slot] = len;
    this.historyMessages++;
  }

  /** The seq of the oldest message history keeps (seq + 1 when it keeps none). */
  firstKept(r: Room): number {
    return r.seq - r.histCount + 1;
  }

  /** History slot index of message `seq` (which must be kept). */
  slotOf(r: Room, seq: number): number {
    return (r.histHead + (seq - this.firstKept(r))) % this.historyLimit;
  }

  dropRoom(r: Room): void {
    for (let i = 0; i < r.histCount; i++) {
      const slot = (r.histHead + i) % this.historyLimit;
      this.pool.release(r.histBufs[slot]!);
      r.histBufs[slot] = null;
    }
    this.historyMessages -= r.histCount;
    r.histCount = 0;
    this.cursorCount -= r.cursors.size;
    this.rooms.delete(r.name);
  }

  /** Drops rooms that have been empty for roomTtlMs. */
  sweep(now: number): void {
    for (const r of this.rooms.values()) {
      if (r.members.size === 0 && r.emptySince !== 0 && now - r.emptySince >= this.roomTtlMs) this.dropRoom(r);
    }
  }

  /** Releases every pooled buffer (the shard is stopping). */
  dispose(): void {
    for (const r of [...this.rooms.values()]) this.dropRoom(r);
    this.conns.clear();
  }
}
