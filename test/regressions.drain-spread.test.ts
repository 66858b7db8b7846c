/**
 * Regression (issue 10, item 18): a drain closed every connection in one instant, so every
 * client reconnected at once. With drainSpreadMs the 1001 closes are spread over that window
 * (in slices, within the drain deadline); 0 keeps the old all-at-once behaviour.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createEngine } from '../engine/index.js';
import { guardHandles } from './helpers/leaks.js';
import { TestClient } from './helpers/client.js';

guardHandles();

test('drainSpreadMs spreads the 1001 closes over the window; every client still gets 1001', async (t) => {
  const engine = await createEngine({ port: 0, host: '127.0.0.1', shards: 1, logLevel: 'silent', drainSpreadMs: 600, drainTimeoutMs: 5000 });
  t.after(() => engine.close());
  await engine.listen();
  const clients = await Promise.all(Array.from({ length: 60 }, (_, i) => TestClient.connect(engine.port, { user: `d${i}` })));
  t.after(() => Promise.all(clients.map((c) => c.close())));
  const closedAt: number[] = [];
  const t0 = performance.now();
  const waits = clients.map((c) => c.waitClosed(5000).then((cc) => { closedAt.push(performance.now() - t0); return cc.code; }));
  await engine.close();
  const codes = await Promise.all(waits);
  assert.deepEqual([...new Set(codes)], [1001]);
  closedAt.sort((a, b) => a - b);
  const spread = closedAt.at(-1)! - closedAt[0]!;
  assert.ok(spread >= 400, `closes spread over ${spread.toFixed(0)} ms (window 600 ms)`);
  assert.ok(closedAt.at(-1)! < 5000, 'all within the drain deadline');
});
