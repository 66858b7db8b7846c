/**
 * The memory backend: today's behaviour behind the store interface. Nothing outlives the process;
 * a room lives until the shard evicts it. Per room it keeps at most historyLimit messages (trimmed
 * at commit) and the dedupe ids of at most the last cidWindowMessages messages.
 */
import { BufferedStore, cidKey, type CidHit, type PendingCursor, type RoomEntry } from './buffered.js';
import type { StoredMessage, StoreLimits, TrimResult } from './types.js';
import { checkLimits, DEFAULT_STORE_LIMITS } from './types.js';

interface MemRoom {
  /** Kept messages from index `head` on, in seq order. */
  msgs: StoredMessage[];
  head: number;
  /** cidKey -> hit; `cidOrder` holds the keys in seq order for trimming. */
  cids: Map<string, CidHit>;
  cidOrder: { key: string; seq: number; ts: number }[];
  cidHead: number;
  cursors: Map<string, number>;
}

export class MemoryStore extends BufferedStore<MemRoom> {
  readonly kind = 'memory' as const;
  readonly durable = false;
  private sweep: string[] = [];

  constructor(limits: Partial<StoreLimits> = {}) {
    super(checkLimits({ ...DEFAULT_STORE_LIMITS, ...limits }));
  }

  protected load(): null {
    return null; // the cache is the data: a room not in it does not exist
  }

  protected emptyData(): MemRoom {
    return { msgs: [], head: 0, cids: new Map(), cidOrder: [], cidHead: 0, cursors: new Map() };
  }

  protected flush(rooms: Iterable<RoomEntry<MemRoom>>, cursors: Iterable<PendingCursor<MemRoom>>): void {
    for (const r of rooms) {
      const d = r.data;
      for (const m of r.pending) {
        d.msgs.push(m);
        if (m.cid !== null) {
          const key = cidKey(m.from, m.cid);
          d.cids.set(key, { seq: m.seq, ts: m.ts });
          d.cidOrder.push({ key, seq: m.seq, ts: m.ts });
        }
      }
      const last = r.pending.length > 0 ? r.pending[r.pending.length - 1]!.seq : r.committedSeq;
      this.dropMessages(d, (m) => m.seq <= last - this.limits.historyLimit);
      this.dropCids(d, (c) => c.seq <= last - this.limits.cidWindowMessages);
    }
    for (const c of cursors) c.room.data.cursors.set(c.user, c.seq);
  }

  private dropMessages(d: MemRoom, old: (m: StoredMessage) => boolean): number {
    const start = d.head;
    while (d.head < d.msgs.length && old(d.msgs[d.head]!)) d.head++;
    const removed = d.head - start;
    if (d.head > 64 && d.head * 2 > d.msgs.length) { d.msgs.splice(0, d.head); d.head = 0; }
    return removed;
  }

  private dropCids(d: MemRoom, old: (c: { seq: number; ts: number }) => boolean): number {
    let n = 0;
    while (d.cidHead < d.cidOrder.length && old(d.cidOrder[d.cidHead]!)) {
      const c = d.cidOrder[d.cidHead++]!;
      if (d.cids.get(c.key)?.seq === c.seq) d.cids.delete(c.key);
      n++;
    }
    if (d.cidHead > 64 && d.cidHead * 2 > d.cidOrder.length) { d.cidOrder.splice(0, d.cidHead); d.cidHead = 0; }
    return n;
  }

  protected committedRange(r: RoomEntry<MemRoom>, from: number, to: number, maxBytes: number, newestFirst: boolean): StoredMessage[] {
    const d = r.data;
    if (d.head >= d.msgs.length) return [];
    const base = d.msgs[d.head]!.seq;
    const lo = d.head + Math.max(0, from - base);
    const hi = Math.min(d.msgs.length - 1, d.head + (to - base));
    const out: StoredMessage[] = [];
    let bytes = 0;
    for (let k = 0; k <= hi - lo; k++) {
      const m = d.msgs[newestFirst ? hi - k : lo + k]!;
      if (out.length > 0 && bytes + m.frame.byteLength > maxBytes) break;
      out.push(m);
      bytes += m.frame.byteLength;
    }
    return out;
  }

  protected replaceCommitted(r: RoomEntry<MemRoom>, seq: number, frame: Uint8Array): boolean {
    const d = r.data;
    if (d.head >= d.msgs.length) return false;
    const k = d.head + (seq - d.msgs[d.head]!.seq);
    if (k < d.head || k >= d.msgs.length || d.msgs[k]!.seq !== seq) return false;
    d.msgs[k] = { ...d.msgs[k]!, frame };
    return true;
  }

  protected committedFirst(r: RoomEntry<MemRoom>): number {
    const d = r.data;
    return d.head < d.msgs.length ? d.msgs[d.head]!.seq : r.committedSeq + 1;
  }

  protected committedCursor(r: RoomEntry<MemRoom>, user: string): number | null {
    return r.data.cursors.get(user) ?? null;
  }

  protected committedCid(r: RoomEntry<MemRoom>, user: string, cid: string): CidHit | null {
    return r.data.cids.get(cidKey(user, cid)) ?? null;
  }

  protected trimBackend(now: number, budgetMs: number): TrimResult {
    const deadline = performance.now() + budgetMs;
    if (this.sweep.length === 0) this.sweep = [...this.cache.keys()];
    let removed = 0;
    const ageCut = this.limits.historyMaxAgeMs > 0 ? now - this.limits.historyMaxAgeMs : -Infinity;
    const cidCut = now - this.limits.cidWindowMs;
    while (this.sweep.length > 0) {
      const r = this.cache.get(this.sweep.pop()!);
      if (r !== undefined && !this.dirty.has(r)) {
        removed += this.dropMessages(r.data, (m) => m.ts < ageCut);
        removed += this.dropCids(r.data, (c) => c.ts < cidCut);
      }
      if (performance.now() >= deadline) break;
    }
    return { removed, more: this.sweep.length > 0 };
  }

  protected closeBackend(): void {
    this.sweep = [];
  }
}
