/**
 * Regression (issue 10, item 18): a reconnect storm. Upgrades are admitted at a bounded rate
 * (upgradeRatePerSec, a token bucket for the engine); beyond it the upgrade gets HTTP 503 with
 * Retry-After, so the engine keeps serving the connections it has. Before, every upgrade was
 * accepted up to maxConnections.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine, openClient, joinRoom } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { waitFor } from './helpers/client.js';
import { rawUpgrade, type UpgradeAnswer } from './helpers/raw-client.js';

guardHandles();

const STORM = 5000;
const RATE = 200;

test('5,000 upgrades at once against a low admission rate: the excess gets 503 + Retry-After, a connected client keeps its answers, nothing leaks', async (t) => {
  const engine = await startEngine(t, { shards: 2, upgradeRatePerSec: RATE });
  const steady = await openClient(t, engine, 'steady');
  await joinRoom(steady, 'steady');
  await waitFor(() => engine.stats().members === 1, 'the shard counted the membership');
  const base = engine.stats();
  const answers: UpgradeAnswer[] = [];
  t.after(() => { for (const a of answers) a.socket.destroy(); });
  let stormDone = false;
  const latencies: number[] = [];
  const chat = (async () => {
    for (let i = 0; !stormDone && i < 100_000; i++) {
      const t0 = performance.now();
      const r = await steady.request({ t: 'pub', room: 'steady', body: i }, 10_000);
      latencies.push(performance.now() - t0);
      assert.equal(r.t, 'ack', JSON.stringify(r));
    }
  })();
  const t0 = performance.now();
  const results = await Promise.allSettled(Array.from({ length: STORM }, () => rawUpgrade(engine.port, '/ws', 30_000)));
  const elapsedS = (performance.now() - t0) / 1000;
  stormDone = true;
  await chat;
  let accepted = 0;
  let refused = 0;
  const failures: string[] = [];
  for (const r of results) {
    if (r.status === 'rejected') { failures.push(String(r.reason)); continue; }
    answers.push(r.value);
    if (r.value.status === 101) { accepted++; continue; }
    assert.equal(r.value.status, 503, r.value.head);
    const ra = /\r\nretry-after: *(\d+)/i.exec(r.value.head);
    assert.ok(ra && Number(ra[1]) >= 1, `a refused upgrade carries Retry-After: ${r.value.head}`);
    refused++;
  }
  assert.deepEqual(failures.slice(0, 3), [], `${failures.length} upgrades got no HTTP answer`);
  assert.equal(accepted + refused, STORM);
  assert.ok(accepted <= RATE + Math.ceil(RATE * elapsedS) + 1, `${accepted} admitted in ${elapsedS.toFixed(2)} s at ${RATE}/s (burst ${RATE})`);
  assert.ok(refused > 0 && engine.counters.upgradesThrottled === refused, `refused ${refused}, counted ${engine.counters.upgradesThrottled}`);
  latencies.sort((a, b) => a - b);
  const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? NaN;
  t.diagnostic(`storm: ${accepted} admitted, ${refused} refused with 503 + Retry-After in ${elapsedS.toFixed(2)} s; steady client ${latencies.length} pubs, p50 ${latencies[latencies.length >> 1]?.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms`);
  assert.ok(latencies.length > 0 && p99 < 2000, `the connected client kept getting answers (p99 ${p99.toFixed(1)} ms over ${latencies.length} pubs)`);
  for (const a of answers) a.socket.destroy();
  await waitFor(() => engine.stats().connections === base.connections, 'the admitted storm connections closed', 10_000);
  const after = engine.stats();
  assert.deepEqual([after.connections, after.connRooms, after.members, after.pendingPublishes], [base.connections, base.connRooms, base.members, base.pendingPublishes]);
});
