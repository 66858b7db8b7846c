/** Regression: an authenticate hook that resolves to undefined (or a non-object) refuses with 401 and crashes nothing. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { startEngine } from './helpers/engine.js';
import { TestClient, tryUpgrade } from './helpers/client.js';

guardHandles();

test('authenticate resolving to undefined, a string or a bad id gets 401; a good token still connects', async (t) => {
  const engine = await startEngine(t, {
    authenticate: async (req) => {
      await new Promise((r) => setImmediate(r));
      if (req.query.includes('token=good')) return { user: 'carol' };
      if (req.query.includes('token=str')) return 'carol' as never;
      if (req.query.includes('token=badid')) return { user: 'not valid!' };
      return undefined as never; // the common `if (ok) return {...}` with no else
    },
  });
  for (const q of ['token=nope', 'token=str', 'token=badid']) {
    const r = await tryUpgrade(engine.port, `/ws?${q}`);
    assert.equal(r.status, 401, `${q}: ${JSON.stringify(r)}`);
  }
  const c = await TestClient.connect(engine.port, { path: '/ws?token=good' });
  t.after(() => c.close());
  assert.equal(c.hello.user, 'carol');
});
