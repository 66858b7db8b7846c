/**
 * The backends against each other: seeded random sequences of batches (appends with and without
 * cids, cursors, commits and rollbacks, trims) and reads (range, latest, firstKept, cursor,
 * findCid, inside and outside batches), applied to a memory and a sqlite store side by side.
 * Every read must give the same answer from both. Small limits so that history and the cid
 * window wrap many times.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { frameOf, mulberry32 } from './helpers/store-frames.js';
import { MemoryStore, SqliteStore, type Store, type StoredMessage } from '../workers/store/index.js';

guardHandles();

const ROOMS = ['a', 'b', 'c'];
const USERS = ['u1', 'u2'];
const SEEDS = 25;
const STEPS = 400;

const view = (ms: StoredMessage[]) => ms.map((m) => [m.seq, m.from, m.ts, m.cid, Buffer.from(m.frame).toString('hex')]);

test(`memory and sqlite answer every read alike (${SEEDS} seeds x ${STEPS} steps)`, (t) => {
  for (let seed = 1; seed <= SEEDS; seed++) {
    const rnd = mulberry32(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const int = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
    const limits = { historyLimit: int(1, 30), cidWindowMessages: int(1, 20), cidWindowMs: 5_000 };
    const mem = new MemoryStore(limits);
    const sql = new SqliteStore({ dir: tempDir(t), ...limits });
    const both = [mem, sql] as const;
    let now = 1_800_000_000_000;
    const same = <T>(what: string, f: (s: Store) => T): T => {
      const [x, y] = both.map(f) as [T, T];
      assert.deepEqual(y, x, `seed ${seed} ${JSON.stringify(limits)}: ${what}`);
      return x;
    };
    const reads = (): void => {
      const room = pick(ROOMS);
      const seq = same(`seq of ${room}`, (s) => s.room(room).seq);
      const lo = int(-2, seq + 2), hi = int(lo - 1, seq + 3), max = int(1, 400);
      same(`range ${room} ${lo}..${hi} ${max}B`, (s) => view(s.range(room, lo, hi, max)));
      const lim = int(0, 40);
      same(`latest ${room} ${lim} ${max}B`, (s) => view(s.latest(room, lim, max)));
      same(`firstKept ${room}`, (s) => s.firstKept(room));
      const user = pick(USERS);
      same(`cursor ${room} ${user}`, (s) => s.cursor(room, user));
      const cid = `c${int(0, 9)}`, at = now + int(-1000, 6000);
      same(`findCid ${room} ${user} ${cid}`, (s) => s.findCid(room, user, cid, at));
    };
    try {
      same('epochs differ per backend, seq does not', (s) => s.room('a').seq);
      for (let step = 0; step < STEPS; step++) {
        const op = rnd();
        if (op < 0.6) {
          for (const s of both) s.beginBatch();
          for (let k = int(1, 6); k > 0; k--) {
            const room = pick(ROOMS), user = pick(USERS);
            if (rnd() < 0.2) {
              const c = int(0, 50);
              for (const s of both) s.setCursor(room, user, c);
              continue;
            }
            const cid = rnd() < 0.5 ? `c${int(0, 9)}` : null;
            const dup = cid === null ? 0 : same(`findCid in batch ${room} ${user} ${cid}`, (s) => s.findCid(room, user, cid, now));
            if (dup !== 0) continue;
            const seq = same(`next seq ${room}`, (s) => s.room(room).seq + 1);
            const frame = frameOf(room, seq, int(1, 120));
            for (const s of both) s.append(room, { seq, from: user, ts: now, cid, frame });
            if (rnd() < 0.3) reads();
          }
          if (rnd() < 0.15) for (const s of both) s.rollback(); else for (const s of both) s.commit();
        } else if (op < 0.65) {
          for (const s of both) for (let i = 0; i < 100 && s.trim(now, 5).more; i++);
        } else if (op < 0.7) {
          now += int(0, 3000);
        } else {
          reads();
        }
      }
    } finally {
      mem.close();
      sql.close();
    }
  }
});
