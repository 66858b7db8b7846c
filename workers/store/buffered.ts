/**
 * The batch semantics every backend shares: writes between beginBatch() and commit() are held
 * here, reads see them, commit() hands them to the backend's flush() in one go (one transaction)
 * and rollback() forgets them. A backend supplies only committed storage: load a room, read a
 * committed range / cursor / cid, flush a batch, trim.
 */
import { StoreError } from '../../engine/store-dir.js';
import { newEpoch } from './epoch.js';
import type { AppendInput, RoomInfo, Store, StoredMessage, StoreLimits, TrimResult } from './types.js';

export interface RoomEntry<D> extends RoomInfo {
  readonly name: string;
  readonly epoch: string;
  seq: number;
  /** The seq the backend has committed. */
  committedSeq: number;
  /** False until a flush has written the room itself. */
  persisted: boolean;
  /** Appends of the open batch, in seq order. */
  pending: StoredMessage[];
  /** The backend's own data for the room (row id, or the memory backend's arrays). */
  data: D;
}

export interface PendingCursor<D> { room: RoomEntry<D>; user: string; seq: number }
export interface CidHit { seq: number; ts: number }

export function cidKey(user: string, cid: string): string {
  return user + '\u0000' + cid;
}

export abstract class BufferedStore<D> implements Store {
  abstract readonly kind: 'memory' | 'sqlite';
  abstract readonly durable: boolean;
  protected readonly cache = new Map<string, RoomEntry<D>>();
  protected readonly dirty = new Set<RoomEntry<D>>();
  protected readonly pendingCursors = new Map<string, PendingCursor<D>>();
  private readonly pendingCids = new Map<string, number>();
  private batch = false;
  protected closed = false;

  constructor(protected readonly limits: StoreLimits) {}

  /** The committed room, or null when the backend does not have it. */
  protected abstract load(name: string): { epoch: string; seq: number; data: D } | null;
  protected abstract emptyData(): D;
  /** Writes the batch (dirty rooms with their pending messages, cursors) atomically, or throws. */
  protected abstract flush(rooms: Iterable<RoomEntry<D>>, cursors: Iterable<PendingCursor<D>>): void;
  protected abstract committedRange(r: RoomEntry<D>, from: number, to: number, maxBytes: number, newestFirst: boolean): StoredMessage[];
  protected abstract committedFirst(r: RoomEntry<D>): number;
  /** Replaces a committed message's frame; false when the backend no longer keeps it. */
  protected abstract replaceCommitted(r: RoomEntry<D>, seq: number, frame: Uint8Array): boolean;
  protected abstract committedCursor(r: RoomEntry<D>, user: string): number | null;
  protected abstract committedCid(r: RoomEntry<D>, user: string, cid: string): CidHit | null;
  protected abstract trimBackend(now: number, budgetMs: number): TrimResult;
  protected abstract closeBackend(): void;
  /** Called after a commit; a backend may drop clean cache entries beyond its bound. */
  protected afterCommit(): void {}

  /**
   * A pending message's own copy of its frame (the caller's bytes may be reused after append()).
   * A backend that keeps frames only until the commit may copy into arenas instead (sqlite.ts).
   */
  protected copyFrame(frame: Uint8Array): Uint8Array {
    return Uint8Array.prototype.slice.call(frame);
  }

  get inBatch(): boolean {
    return this.batch;
  }

  protected entry(name: string): RoomEntry<D> {
    if (this.closed) throw new StoreError('STORE_MISUSE', 'the store is closed');
    let r = this.cache.get(name);
    if (r !== undefined) {
      this.cache.delete(name); // most recently used last, for the backends' LRU bound
      this.cache.set(name, r);
      return r;
    }
    const row = this.load(name);
    r = row === null
      ? { name, epoch: newEpoch(), seq: 0, committedSeq: 0, persisted: false, pending: [], data: this.emptyData() }
      : { name, epoch: row.epoch, seq: row.seq, committedSeq: row.seq, persisted: true, pending: [], data: row.data };
    this.cache.set(name, r);
    return r;
  }

  room(name: string): RoomInfo {
    const r = this.entry(name);
    return { name: r.name, epoch: r.epoch, seq: r.seq };
  }

  beginBatch(): void {
    if (this.closed) throw new StoreError('STORE_MISUSE', 'the store is closed');
    if (this.batch) throw new StoreError('STORE_MISUSE', 'beginBatch() inside an open batch');
    this.batch = true;
  }

  private needBatch(what: string): void {
    if (!this.batch) throw new StoreError('STORE_MISUSE', `${what} outside a batch (call beginBatch() first)`);
  }

  append(room: string, m: AppendInput): void {
    this.needBatch('append()');
    const r = this.entry(room);
    if (m.seq !== r.seq + 1) throw new StoreError('STORE_MISUSE', `append to ${room}: seq ${m.seq}, expected ${r.seq + 1}`);
    r.pending.push({ seq: m.seq, from: m.from, ts: m.ts, cid: m.cid, frame: this.copyFrame(m.frame) });
    r.seq = m.seq;
    this.dirty.add(r);
    if (m.cid !== null) this.pendingCids.set(room + '\u0000' + cidKey(m.from, m.cid), m.seq);
  }

  setCursor(room: string, user: string, seq: number): void {
    this.needBatch('setCursor()');
    const r = this.entry(room);
    this.pendingCursors.set(room + '\u0000' + user, { room: r, user, seq });
    this.dirty.add(r);
  }

  replace(room: string, seq: number, frame: Uint8Array): boolean {
    const r = this.entry(room);
    const copy = Uint8Array.prototype.slice.call(frame);
    const i = r.pending.findIndex((m) => m.seq === seq);
    if (i >= 0) { r.pending[i] = { ...r.pending[i]!, frame: copy }; return true; }
    if (seq < 1 || seq > r.committedSeq) return false;
    return this.replaceCommitted(r, seq, copy);
  }

  commit(): void {
    this.needBatch('commit()');
    if (this.dirty.size > 0 || this.pendingCursors.size > 0) {
      try {
        this.flush(this.dirty, this.pendingCursors.values());
      } catch (e) {
        this.rollback();
        throw e;
      }
      for (const r of this.dirty) { r.committedSeq = r.seq; r.persisted = true; r.pending = []; }
    }
    this.clearBatch();
    this.afterCommit();
  }

  rollback(): void {
    for (const r of this.dirty) { r.seq = r.committedSeq; r.pending = []; }
    this.clearBatch();
  }

  private clearBatch(): void {
    this.dirty.clear();
    this.pendingCursors.clear();
    this.pendingCids.clear();
    this.batch = false;
  }

  firstKept(room: string): number {
    const r = this.entry(room);
    return Math.max(this.committedFirst(r), r.seq - this.limits.historyLimit + 1);
  }

  range(room: string, fromSeq: number, toSeq: number, maxBytes: number): StoredMessage[] {
    const r = this.entry(room);
    const from = Math.max(fromSeq, this.firstKept(room));
    const to = Math.min(toSeq, r.seq);
    if (to < from) return [];
    const out = to >= 1 && from <= r.committedSeq ? this.committedRange(r, from, Math.min(to, r.committedSeq), maxBytes, false) : [];
    let bytes = 0;
    for (const m of out) bytes += m.frame.byteLength;
    for (const m of r.pending) {
      if (m.seq < from || m.seq > to) continue;
      if (out.length > 0 && bytes + m.frame.byteLength > maxBytes) break;
      if (out.length > 0 && out[out.length - 1]!.seq !== m.seq - 1) break; // the committed part stopped at maxBytes
      out.push(m);
      bytes += m.frame.byteLength;
    }
    return out;
  }

  latest(room: string, limit: number, maxBytes: number): StoredMessage[] {
    const r = this.entry(room);
    const from = Math.max(r.seq - limit + 1, this.firstKept(room));
    if (limit < 1 || r.seq < from) return [];
    const rev: StoredMessage[] = [];
    let bytes = 0;
    for (let i = r.pending.length - 1; i >= 0; i--) {
      const m = r.pending[i]!;
      if (m.seq < from) break;
      if (rev.length > 0 && bytes + m.frame.byteLength > maxBytes) return rev.reverse();
      rev.push(m);
      bytes += m.frame.byteLength;
    }
    const hi = Math.min(r.committedSeq, r.seq);
    if (hi >= from) {
      const older = this.committedRange(r, from, hi, rev.length > 0 ? maxBytes - bytes : maxBytes, true);
      // committedRange(newestFirst) returns newest first; it may return one frame over a spent budget.
      for (const m of older) {
        if (rev.length > 0 && bytes + m.frame.byteLength > maxBytes) break;
        rev.push(m);
        bytes += m.frame.byteLength;
      }
    }
    return rev.reverse();
  }

  cursor(room: string, user: string): number | null {
    const p = this.pendingCursors.get(room + '\u0000' + user);
    if (p !== undefined) return p.seq;
    return this.committedCursor(this.entry(room), user);
  }

  findCid(room: string, user: string, cid: string, now: number): number {
    const r = this.entry(room);
    const pending = this.pendingCids.get(room + '\u0000' + cidKey(user, cid));
    if (pending !== undefined) return pending; // this batch: newer than any window edge
    const hit = this.committedCid(r, user, cid);
    if (hit === null) return 0;
    const inWindow = hit.seq > r.seq - this.limits.cidWindowMessages && hit.ts >= now - this.limits.cidWindowMs;
    return inWindow ? hit.seq : 0;
  }

  /** Between batches: a backend's deferred work (the SQLite log's move). Nothing by default. */
  maintain(): void {}

  trim(now: number, budgetMs: number): TrimResult {
    if (this.closed) throw new StoreError('STORE_MISUSE', 'the store is closed');
    if (this.batch) throw new StoreError('STORE_MISUSE', 'trim() inside a batch');
    return this.trimBackend(now, budgetMs);
  }

  evict(room: string): void {
    const r = this.cache.get(room);
    if (r === undefined) return;
    if (this.dirty.has(r)) throw new StoreError('STORE_MISUSE', `evict(${room}) with uncommitted writes`);
    this.cache.delete(room);
  }

  close(): void {
    if (this.closed) return;
    this.rollback();
    this.closed = true;
    this.cache.clear();
    this.closeBackend();
  }
}
