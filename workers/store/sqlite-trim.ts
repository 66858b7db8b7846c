/**
 * Background retention for the SQLite backend, in small steps the shard runs from its tick with
 * a time budget. Each step is one short write transaction that removes at most CHUNK rows:
 *   1. rooms appended to since their last trim: messages beyond historyLimit, cids beyond the
 *      window's message count;
 *   2. cids older than the window's age (by the cids_by_age index);
 *   3. a sweep over every room (by row id, at most once per SWEEP_INTERVAL_MS), for the age
 *      limit and for rooms this process never touched (a historyLimit lowered between runs).
 * Only a prefix of a room's history is ever removed, so history has no holes.
 */
import type BetterSqlite3 from 'better-sqlite3';
import { LATEST_SEQ } from './schema.js';
import type { StoreLimits, TrimResult } from './types.js';

export const CHUNK = 256;
export const SWEEP_INTERVAL_MS = 60_000;

export interface TrimState {
  /** Rooms (by name) appended to since they were last trimmed. */
  touched: Set<string>;
  /** The sweep's position (row id), or -1 while no sweep runs. */
  sweepAfter: number;
  nextSweepAt: number;
  nextCidAgeAt: number;
}

export function newTrimState(): TrimState {
  return { touched: new Set(), sweepAfter: -1, nextSweepAt: 0, nextCidAgeAt: 0 };
}

type TrimStatementName = 'begin' | 'commit' | 'raiseSeq' | 'byName' | 'sweep' | 'firstSeq' | 'oldestTs' | 'oldest' | 'deleteUpTo' | 'anyCidUpTo' | 'cidsByCount' | 'cidsByAge';
export type TrimStatements = Record<TrimStatementName, BetterSqlite3.Statement<unknown[], unknown>>;

export function prepareTrim(db: BetterSqlite3.Database): TrimStatements {
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    // rooms.seq is a lower bound (schema v3): the latest seq counts the newest message too, and
    // a trim that removes messages raises rooms.seq to the last one removed, so that removing a
    // room's newest messages (the age limit, historyLimit 0) never lowers its latest seq.
    raiseSeq: db.prepare('UPDATE rooms SET seq = ? WHERE id = ? AND seq < ?'),
    byName: db.prepare(`SELECT id, ${LATEST_SEQ} FROM rooms WHERE name = ?`).raw(),
    sweep: db.prepare(`SELECT id, ${LATEST_SEQ} FROM rooms WHERE id > ? ORDER BY id LIMIT 32`).raw(),
    firstSeq: db.prepare('SELECT min(seq) FROM messages WHERE room = ?').pluck(),
    oldestTs: db.prepare('SELECT ts FROM messages WHERE room = ? ORDER BY seq LIMIT 1').pluck(),
    oldest: db.prepare('SELECT seq, ts FROM messages WHERE room = ? ORDER BY seq LIMIT ?').raw(),
    deleteUpTo: db.prepare('DELETE FROM messages WHERE room = ? AND seq <= ?'),
    anyCidUpTo: db.prepare('SELECT 1 FROM cids WHERE room = ? AND seq <= ? LIMIT 1').pluck(),
    cidsByCount: db.prepare('DELETE FROM cids WHERE room = ? AND seq <= ?'),
    cidsByAge: db.prepare('DELETE FROM cids WHERE (room, user, cid) IN (SELECT room, user, cid FROM cids WHERE ts < ? LIMIT ?)'),
  };
}

/**
 * One room: returns rows removed and whether the room still has work. Looks before it writes
 * (the oldest seq, the oldest ts: one index probe each), so a sweep over rooms with nothing to
 * trim neither reads their history nor takes the write lock.
 */
function trimRoom(db: BetterSqlite3.Database, s: TrimStatements, lim: StoreLimits, id: number, seq: number, now: number): { removed: number; more: boolean } {
  const countCut = seq - lim.historyLimit; // remove seq <= countCut
  const ageCut = lim.historyMaxAgeMs > 0 ? now - lim.historyMaxAgeMs : -Infinity;
  const first = s.firstSeq.get(id) as number | null;
  let upTo = 0;
  let more = false;
  if (first !== null && first <= countCut) {
    upTo = Math.min(countCut, first + CHUNK - 1);
    more = upTo < countCut || ageCut > -Infinity; // the age limit is looked at on the next step

  } else if (first !== null && (s.oldestTs.get(id) as number) < ageCut) {
    const oldest = s.oldest.all(id, CHUNK) as [number, number][];
    for (const [mseq, ts] of oldest) {
      if (ts >= ageCut) break;
      upTo = mseq;
    }
    more = oldest.length === CHUNK && upTo === oldest[CHUNK - 1]![0];
  }
  const cidCut = seq - lim.cidWindowMessages;
  const cidWork = cidCut > 0 && s.anyCidUpTo.get(id, cidCut) !== undefined;
  if (upTo === 0 && !cidWork) return { removed: 0, more: false };
  let removed = 0;
  s.begin.run();
  try {
    if (upTo > 0) {
      removed += s.deleteUpTo.run(id, upTo).changes;
      s.raiseSeq.run(upTo, id, upTo);
    }
    if (cidWork) removed += s.cidsByCount.run(id, cidCut).changes;
    s.commit.run();
  } catch (e) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw e;
  }
  return { removed, more };
}

export function trimStep(db: BetterSqlite3.Database, s: TrimStatements, st: TrimState, lim: StoreLimits, now: number, budgetMs: number): TrimResult {
  const deadline = performance.now() + budgetMs;
  let removed = 0;
  while (performance.now() < deadline) {
    const touched = st.touched.values().next();
    if (!touched.done) {
      const row = s.byName.get(touched.value) as [number, number] | undefined;
      const res = row === undefined ? { removed: 0, more: false } : trimRoom(db, s, lim, row[0], row[1], now);
      removed += res.removed;
      if (!res.more) st.touched.delete(touched.value);
      continue;
    }
    if (now >= st.nextCidAgeAt) {
      const n = s.cidsByAge.run(now - lim.cidWindowMs, CHUNK).changes;
      removed += n;
      if (n < CHUNK) st.nextCidAgeAt = now + SWEEP_INTERVAL_MS / 4;
      continue;
    }
    if (st.sweepAfter < 0) {
      if (now < st.nextSweepAt) break;
      st.sweepAfter = 0;
    }
    const rooms = s.sweep.all(st.sweepAfter) as [number, number][];
    if (rooms.length === 0) { st.sweepAfter = -1; st.nextSweepAt = now + SWEEP_INTERVAL_MS; continue; }
    for (const [id, seq] of rooms) {
      const res = trimRoom(db, s, lim, id, seq, now);
      removed += res.removed;
      if (res.more) break; // stay on this room: the next step continues it
      st.sweepAfter = id;
      if (performance.now() >= deadline) break;
    }
  }
  const more = st.touched.size > 0 || st.sweepAfter >= 0 || now >= st.nextCidAgeAt;
  return { removed, more };
}
