/**
 * The state of one shard's rooms: members, seq, epoch, history, presence, read cursors. The sole
 * owner of that state is the shard worker that holds this object; nothing else writes it.
 *
 * Every per-connection and per-room entry has one place that creates it and one that removes
 * it: `addMember` / `removeMember` for memberships and presence, `room()` / `dropRoom` for rooms
 * (dropped once empty, and not published to, for `roomTtlMs`), history entries through
 * `Histories` (history.ts), idle cursors through `Cursors` (cursors.ts).
 *
 * A room costs memory in proportion to what it holds: an empty room is an object with its name
 * and epoch (~300 B of heap measured); its maps and history list appear with their first entry.
 */
import { randomBytes } from 'node:crypto';
import { Histories, History } from './history.js';
import { Cursors } from './cursors.js';
import type { CidWindow } from './cids.js';

const NO_MEMBERS: ReadonlyMap<number, string> = new Map();
const NO_USERS: ReadonlyMap<string, number> = new Map();
const NO_CURSORS: ReadonlyMap<string, number> = new Map();
const NO_INFOS: ReadonlyMap<string, Uint8Array> = new Map();

/**
 * Bytes of identity `info` a shard keeps (docs/LIMITS.md): each present (room, user) with info is
 * charged its MessagePack bytes (at most maxInfoBytes) + INFO_ENTRY_OVERHEAD. A join that would
 * pass it keeps the user without info (counted in `infoSkipped`).
 */
export const INFO_BUDGET_BYTES = 16 << 20;
/** Bytes charged per kept info beside its payload (the Uint8Array, its buffer, the map entry). */
export const INFO_ENTRY_OVERHEAD = 256;

/**
 * One room. Its maps exist only while they hold something (an empty Map costs ~190 B of heap,
 * three of them most of an idle room), and the name is kept once, as the string.
 */
export class Room {
  seq = 0;
  /** The newest messages (encoded `msg` frames), made at the first one; null while it has none. */
  hist: History | null = null;
  /** The cid dedupe window when the shard has no durable store (null until the first pub with a cid). */
  cids: CidWindow | null = null;
  /** Date.now() when it was last left or published to while empty; 0 while it has members. */
  emptySince: number;
  private memberMap: Map<number, string> | null = null;
  private userMap: Map<string, number> | null = null;
  private cursorMap: Map<string, number> | null = null;
  private infoMap: Map<string, Uint8Array> | null = null;

  constructor(readonly name: string, readonly epoch: string, now: number, seq = 0) {
    this.emptySince = now;
    this.seq = seq;
  }

  /** conn -> user, for connections in the room. */
  get members(): ReadonlyMap<number, string> { return this.memberMap ?? NO_MEMBERS; }
  /** user -> number of that user's connections in the room (presence counts a user once). */
  get users(): ReadonlyMap<string, number> { return this.userMap ?? NO_USERS; }
  /** user -> read cursor: present users', and absent named users' within the cursor bounds. */
  get cursors(): ReadonlyMap<string, number> { return this.cursorMap ?? NO_CURSORS; }
  /** user -> the identity `info` (MessagePack map) of that user's latest join here; present users with info only. */
  get infos(): ReadonlyMap<string, Uint8Array> { return this.infoMap ?? NO_INFOS; }

  setMember(conn: number, user: string): void { (this.memberMap ??= new Map()).set(conn, user); }
  deleteMember(conn: number): void {
    if (this.memberMap !== null && this.memberMap.delete(conn) && this.memberMap.size === 0) this.memberMap = null;
  }
  setUser(user: string, n: number): void { (this.userMap ??= new Map()).set(user, n); }
  deleteUser(user: string): void {
    if (this.userMap !== null && this.userMap.delete(user) && this.userMap.size === 0) this.userMap = null;
  }
  setCursor(user: string, seq: number): void { (this.cursorMap ??= new Map()).set(user, seq); }
  /** True when the user had a cursor here. */
  deleteCursor(user: string): boolean {
    if (this.cursorMap === null || !this.cursorMap.delete(user)) return false;
    if (this.cursorMap.size === 0) this.cursorMap = null;
    return true;
  }
  clearCursors(): void { this.cursorMap = null; }
  setInfo(user: string, info: Uint8Array): void { (this.infoMap ??= new Map()).set(user, info); }
  /** The bytes of the info it removed (0: none). */
  deleteInfo(user: string): number {
    const old = this.infoMap?.get(user);
    if (old === undefined) return 0;
    this.infoMap!.delete(user);
    if (this.infoMap!.size === 0) this.infoMap = null;
    return old.byteLength;
  }
}

export interface ConnEntry {
  user: string;
  /** An anonymous connection: its cursors go when it leaves. */
  anon: boolean;
  /**
   * Its rooms here: the one Room while it has one (no Set for an idle user in one room, issue 15:
   * an empty Set is ~180 B), a Set from the second on. The entry goes with its last room.
   */
  rooms: Room | Set<Room>;
}

/** The rooms of a connection entry, as a list (a copy: safe to leave them while iterating). */
export function connRooms(c: ConnEntry): Room[] {
  return c.rooms instanceof Set ? [...c.rooms] : [c.rooms];
}

export interface RoomsOptions {
  historyLimit: number;
  historyBudgetBytes: number;
  roomTtlMs: number;
  maxCursorsPerRoom: number;
  maxCursorsPerShard: number;
}

/**
 * A flat copy of an ASCII string. Strings read from records are built char by char (msgpack.ts
 * asciiString), which V8 keeps as a chain of cons cells past 12 chars (~30 B per char); one kept
 * as a map key for the life of a room or cursor is flattened once, here.
 */
export function flat(s: string): string {
  return s.length <= 12 ? s : Buffer.from(s, 'latin1').toString('latin1');
}

export function newEpoch(): string {
  return Date.now().toString(36) + randomBytes(6).toString('base64url');
}

export class Rooms {
  readonly rooms = new Map<string, Room>();
  readonly conns = new Map<number, ConnEntry>();
  readonly history: Histories;
  readonly idle: Cursors;
  memberships = 0;
  presentUsers = 0;
  /** Bytes charged for kept infos (payload + INFO_ENTRY_OVERHEAD each), at most infoBudgetBytes. */
  infoBytes = 0;
  /** Joins whose info was not kept: the shard's info budget was spent. */
  infoSkipped = 0;
  /** INFO_BUDGET_BYTES; a test may lower it. */
  infoBudgetBytes = INFO_BUDGET_BYTES;
  private readonly roomTtlMs: number;

  constructor(opts: RoomsOptions) {
    this.history = new Histories(opts.historyLimit, opts.historyBudgetBytes);
    this.idle = new Cursors(opts.maxCursorsPerRoom, opts.maxCursorsPerShard);
    this.roomTtlMs = opts.roomTtlMs;
  }

  get historyMessages(): number {
    return this.history.messages;
  }

  /** Read cursors held: present users' plus idle ones. */
  cursorCount = 0;
  /**
   * Names of rooms dropped since the last takeDropped(): the shard tells its store after the
   * batch commits (a store may not forget a room with uncommitted writes). At most the rooms of one batch or tick.
   */
  private dropped: string[] = [];
  /** Set by a shard with a durable store; without one nothing needs telling and nothing is queued. */
  trackDropped = false;

  get(name: string): Room | undefined {
    return this.rooms.get(name);
  }

  /**
   * The room, created if this shard has no state for it: with the epoch and seq `stored` returns
   * (the durable store's), else seq 0 and a new epoch.
   */
  room(name: string, stored?: (name: string) => { epoch: string; seq: number }): Room {
    let r = this.rooms.get(name);
    if (r === undefined) {
      const key = flat(name);
      const s = stored?.(key);
      r = s === undefined ? new Room(key, newEpoch(), Date.now()) : new Room(key, s.epoch, Date.now(), s.seq);
      this.rooms.set(key, r);
    }
    return r;
  }

  /** Queues `name` for the store to forget after the batch, as if dropped (a join refused before the room was made). */
  forget(name: string): void {
    if (this.trackDropped) this.dropped.push(name);
  }

  /** The rooms dropped since the last call (see `dropped`). */
  takeDropped(): string[] {
    const d = this.dropped;
    if (d.length > 0) this.dropped = [];
    return d;
  }

  /**
   * The identity info shown for `user` in `r` from now on: this join's (latest join wins), or
   * none when the join had none or the shard's info budget cannot hold it (counted). `info` is
   * kept as given: the caller passes a copy it owns, never a view of a ring.
   */
  setInfo(r: Room, user: string, info: Uint8Array | null): void {
    const old = r.deleteInfo(user);
    if (old > 0) this.infoBytes -= old + INFO_ENTRY_OVERHEAD;
    if (info === null) return;
    const cost = info.byteLength + INFO_ENTRY_OVERHEAD;
    if (this.infoBytes + cost > this.infoBudgetBytes) { this.infoSkipped++; return; }
    r.setInfo(user, info);
    this.infoBytes += cost;
  }

  /** Adds conn to room; returns true when this is the user's first connection there (presence join). */
  addMember(r: Room, conn: number, name: string, anon: boolean, cursor = r.seq): boolean {
    const user = r.users.has(name) ? name : flat(name);
    r.setMember(conn, user);
    r.emptySince = 0;
    this.memberships++;
    let c = this.conns.get(conn);
    if (c === undefined) { c = { user, anon, rooms: r }; this.conns.set(conn, c); }
    else if (c.rooms instanceof Set) c.rooms.add(r);
    else if (c.rooms !== r) c.rooms = new Set([c.rooms, r]);
    const n = r.users.get(user) ?? 0;
    r.setUser(user, n + 1);
    if (n === 0) {
      this.presentUsers++;
      // A returning user's cursor is theirs again, no longer idle (and no longer evictable).
      if (!this.idle.take(r, user) && !r.cursors.has(user)) { r.setCursor(user, cursor); this.cursorCount++; }
    }
    return n === 0;
  }

  /** Removes conn from room; returns the user when it was their last connection there (presence leave). */
  removeMember(r: Room, conn: number): string | null {
    const user = r.members.get(conn);
    if (user === undefined) return null;
    r.deleteMember(conn);
    this.memberships--;
    const c = this.conns.get(conn);
    const anon = c?.anon ?? false;
    if (c !== undefined) {
      if (c.rooms instanceof Set) {
        c.rooms.delete(r);
        if (c.rooms.size === 0) this.conns.delete(conn);
      } else if (c.rooms === r) this.conns.delete(conn);
    }
    const n = r.users.get(user)! - 1;
    let last: string | null = null;
    if (n === 0) {
      r.deleteUser(user); this.presentUsers--; last = user;
      const info = r.deleteInfo(user);
      if (info > 0) this.infoBytes -= info + INFO_ENTRY_OVERHEAD;
      if (anon) { if (r.deleteCursor(user)) this.cursorCount--; }
      else this.cursorCount -= this.idle.park(r, user);
    } else r.setUser(user, n);
    if (r.members.size === 0) {
      r.emptySince = Date.now();
      if (this.roomTtlMs === 0) this.dropRoom(r);
    }
    return last;
  }

  /** Appends a copy of an encoded msg frame (src[start, start+len)) to the room's history. */
  pushHistory(r: Room, src: Uint8Array, start: number, len: number): void {
    if (r.hist === null) r.hist = new History();
    if (!this.history.push(r.hist, src, start, len)) r.hist = null;
  }

  /** Messages the room's history keeps. */
  kept(r: Room): number {
    return r.hist === null ? 0 : r.hist.count;
  }

  /** The seq of the oldest message history keeps (seq + 1 when it keeps none). */
  firstKept(r: Room): number {
    return r.seq - this.kept(r) + 1;
  }

  /** History buffer of message `seq` (which must be kept); its frame is the first entryLen bytes. */
  entry(r: Room, seq: number): Uint8Array {
    return r.hist!.at(seq - this.firstKept(r));
  }

  /** Frame length of message `seq` in history (which must keep it). */
  entryLen(r: Room, seq: number): number {
    return r.hist!.len(seq - this.firstKept(r));
  }

  /** A server-side publish to a room without members keeps it alive like a member would. */
  touch(r: Room, now: number): void {
    if (r.members.size === 0) r.emptySince = now;
  }

  dropRoom(r: Room): void {
    if (r.hist !== null) { this.history.clear(r.hist); r.hist = null; }
    this.idle.dropRoom(r);
    this.cursorCount -= r.cursors.size;
    r.clearCursors();
    r.cids = null;
    this.rooms.delete(r.name);
    if (this.trackDropped) this.dropped.push(r.name);
  }

  /** Drops rooms that have been empty for roomTtlMs. */
  sweep(now: number): void {
    for (const r of this.rooms.values()) {
      if (r.members.size === 0 && r.emptySince !== 0 && now - r.emptySince >= this.roomTtlMs) this.dropRoom(r);
    }
  }

  /** Releases all state (the shard is stopping). */
  dispose(): void {
    for (const r of [...this.rooms.values()]) this.dropRoom(r);
    this.conns.clear();
    this.infoBytes = 0;
    this.dropped = [];
  }
}
