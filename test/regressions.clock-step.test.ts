/**
 * Regression (issue 10, item 12): the rate limiter used Date.now(), so a step of the wall clock
 * backwards rate-limited every connection for the length of the step. The engine runs in this
 * process, so stepping this process's Date.now() back by an hour is a real wall-clock step as
 * the main thread sees it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine, openClient, joinRoom } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';

guardHandles();

test('a wall-clock step backwards does not rate-limit a connection', async (t) => {
  const engine = await startEngine(t, { ratePerSec: 10, rateBurst: 50 });
  const c = await openClient(t, engine, 'clocky');
  await joinRoom(c, 'clk');
  const realNow = Date.now.bind(Date);
  const stepped = realNow() - 3_600_000;
  const start = performance.now();
  Date.now = () => stepped + (performance.now() - start);
  t.after(() => { Date.now = realNow; });
  try {
    for (let i = 0; i < 10; i++) {
      const r = await c.request({ t: 'pub', room: 'clk', body: i });
      assert.equal(r.t, 'ack', `pub ${i} after the clock went back an hour: ${JSON.stringify(r)}`);
    }
  } finally {
    Date.now = realNow;
  }
});
