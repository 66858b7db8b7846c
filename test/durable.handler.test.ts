/**
 * The shard's Handler over a real SQLite store (in a temp dir), driven record by record as the
 * shard loop drives it (handle, commit, publish): what the store keeps in memory stays bounded
 * by what the shard holds, whatever names clients try.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { ShardBench } from './helpers/handler.js';
import { SqliteStore } from '../workers/store/index.js';

guardHandles();

const cacheSize = (s: SqliteStore): number => (s as unknown as { cache: Map<string, unknown> }).cache.size;

test('joins refused with room_limit leave nothing in the store\'s room cache', (t) => {
  const store = new SqliteStore({ dir: tempDir(t) });
  t.after(() => store.close());
  const sb = new ShardBench({ roomCreateRate: 1, roomCreateBurst: 2, roomTtlMs: 300_000 }, 1 << 20, store);
  t.after(() => sb.h.rooms.dispose());
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    const out = sb.frame(1, { t: 'join', room: `probe-${i}`, ref: i }, 'mallory', false, 0, true);
    if (out.some((r) => Buffer.from(r).includes('room_limit'))) refused++;
  }
  assert.equal(refused, 298, 'all but the burst refused');
  assert.equal(sb.h.rooms.rooms.size, 2);
  assert.ok(cacheSize(store) <= 2, `the store caches the rooms the shard holds, not the refused names (${cacheSize(store)})`);
});
