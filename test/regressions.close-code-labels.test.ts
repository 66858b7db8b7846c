/**
 * Regression (issue 10, item 11): `shardchat_connections_closed_total` was labelled by the code
 * the client sent, so 40 distinct client close codes made 41 series (and 41 map entries). Now
 * only known codes get their own label; every other one is counted under `other`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { RawClient } from './helpers/raw-client.js';
import { httpGet, waitFor } from './helpers/client.js';
import { KNOWN_CLOSE_CODES } from '../engine/errors.js';

guardHandles();

test('40 distinct client close codes give bounded series: known codes labelled, the rest "other"', async (t) => {
  const engine = await startEngine(t, { metrics: true });
  // uWS accepts 4000..4999 from a client (3000..3999 it treats as a protocol error: 1006).
  const codes = [1000, ...Array.from({ length: 40 }, (_, i) => 4100 + i)];
  for (const code of codes) {
    const c = await RawClient.connect(engine.port, {});
    t.after(() => c.destroy());
    await c.next((f) => f.t === 'hello', 3000, 'hello');
    await c.close(code);
  }
  await waitFor(() => engine.stats().connections === 0, 'every connection closed');
  const text = (await httpGet(engine.port, '/metrics')).body;
  const series = text.split('\n').filter((l) => l.startsWith('shardchat_connections_closed_total{'));
  assert.deepEqual(series.sort(), ['shardchat_connections_closed_total{code="1000"} 1', 'shardchat_connections_closed_total{code="other"} 40'], series.join('\n'));
  assert.ok(engine.counters.closedByCode.size <= KNOWN_CLOSE_CODES.size + 1, `map entries: ${engine.counters.closedByCode.size}`);
});
