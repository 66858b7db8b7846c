/**
 * Committed means kept, across kill -9: a child process appends and commits in seeded batches and
 * prints each message only after its commit returned; the test kills it with SIGKILL at a seeded
 * moment, starts a second life on the same directory, kills that too, and reopens. Every printed
 * seq is there with the bytes of the life that printed it (so no seq was reused for another
 * message), every room's seqs run 1..seq without a hole, and unprinted messages (committed just
 * before the kill) carry valid bytes of some life.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { appenderFrame, mulberry32, sameBytes } from './helpers/store-frames.js';
import { SqliteStore } from '../workers/store/index.js';

guardHandles();

const APPENDER = fileURLToPath(new URL('./fixtures/store-appender.js', import.meta.url));

/** Runs one life until it printed `lines` lines (or ended by itself), then kill -9. Returns the printed lines. */
async function life(dir: string, seed: number, n: number, fsync: string, lines: number): Promise<string[]> {
  const child = spawn(process.execPath, [APPENDER, dir, String(seed), String(n), fsync], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit');
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  await new Promise<void>((resolve) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.split('\n').length > lines && child.exitCode === null) { child.kill('SIGKILL'); resolve(); }
    });
    child.on('exit', () => resolve());
  });
  const [code, signal] = await exited as [number | null, string | null];
  assert.ok(signal === 'SIGKILL' || code === 0, `appender life ${n} ended with ${code}/${signal}: ${err}`);
  // Only whole lines count: a line cut by the kill was printed after its commit anyway.
  return out.split('\n').filter((l) => /^\d+ room-\d+ \d+$/.test(l));
}

for (const [seed, fsync] of [[1, 'normal'], [2, 'normal'], [3, 'always'], [4, 'normal'], [5, 'normal']] as const) {
  test(`kill -9 at a seeded moment (seed ${seed}, fsync ${fsync}): every printed seq is kept with its bytes, none reused`, async (t) => {
    const dir = tempDir(t);
    const rnd = mulberry32(seed);
    const printed: string[] = [];
    for (let n = 1; n <= 2; n++) printed.push(...await life(dir, seed, n, fsync, 50 + Math.floor(rnd() * 3000)));
    assert.ok(printed.length > 50, `only ${printed.length} messages were committed`);

    const store = new SqliteStore({ dir, historyLimit: 1_000_000 });
    t.after(() => store.close());
    const lifeOf = new Map<string, number>();
    for (const line of printed) {
      const [l, room, seq] = line.split(' ');
      assert.ok(!lifeOf.has(`${room} ${seq}`), `${room} seq ${seq} printed twice (by lives ${lifeOf.get(`${room} ${seq}`)} and ${l})`);
      lifeOf.set(`${room} ${seq}`, Number(l));
    }
    for (let r = 0; r < 6; r++) {
      const room = `room-${r}`;
      const seq = store.room(room).seq;
      const msgs = store.range(room, 1, seq, 1 << 30);
      assert.deepEqual(msgs.map((m) => m.seq), Array.from({ length: seq }, (_, i) => i + 1), `${room}: seqs 1..${seq}`);
      for (const m of msgs) {
        const l = lifeOf.get(`${room} ${m.seq}`);
        if (l !== undefined) assert.ok(sameBytes(m.frame, appenderFrame(l, room, m.seq)), `${room} seq ${m.seq}: bytes of life ${l}`);
        else assert.ok(sameBytes(m.frame, appenderFrame(1, room, m.seq)) || sameBytes(m.frame, appenderFrame(2, room, m.seq)), `${room} seq ${m.seq}: unprinted but valid`);
      }
    }
    for (const key of lifeOf.keys()) {
      const [room, seq] = key.split(' ');
      assert.ok(Number(seq) <= store.room(room!).seq, `${key} printed but missing after the kill`);
    }
  });
}
