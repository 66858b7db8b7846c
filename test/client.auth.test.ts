/**
 * The SDK and token auth (issue 14) against a REAL engine with jose-signed tokens: with
 * `getToken` the SDK refreshes the token on the open connection before its `exp` (with jitter),
 * so the connection outlives its first token instead of being closed with 4401; a token the
 * engine refuses (`invalid`, or `expired` again and again) closes the client for good after it
 * asked `GET /auth/check`, instead of a reconnect loop; an engine that is down is retried.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import WebSocket from 'ws';
import { SignJWT } from 'jose';
import { ShardchatClient, seededRandom, type ClientEvents, type ClientOptions } from '../engine/client/index.js';
import { refreshDelay, tokenExp, authCheckUrl } from '../engine/client/token.js';
import { guardHandles } from './helpers/leaks.js';
import { startEngine } from './helpers/engine.js';
import { waitFor } from './helpers/client.js';
import { record } from './helpers/sdk-events.js';

guardHandles();

const SECRET = 'a-test-secret-of-at-least-32-bytes!!';
const nowSec = (): number => Math.floor(Date.now() / 1000);
const sign = (claims: Record<string, unknown>, secret = SECRET): Promise<string> =>
  new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(secret));

const FAST = { backoffBaseMs: 20, backoffCapMs: 200, stableMs: 2000, random: seededRandom(3) };

function sdk(t: TestContext, port: number, opts: Partial<ClientOptions>): ShardchatClient {
  const c = new ShardchatClient({ url: `ws://127.0.0.1:${port}/ws`, WebSocket, ...FAST, ...opts });
  t.after(() => c.close());
  return c;
}


test('token helpers: exp read from the payload, refresh at 70..90% of the life left, the check URL', async () => {
  const exp = nowSec() + 100;
  assert.equal(tokenExp(await sign({ sub: 'a', exp })), exp);
  assert.equal(tokenExp('not-a-token'), null);
  assert.equal(tokenExp('a.!!!.c'), null);
  assert.equal(refreshDelay(100, 0, () => 0), 70_000);
  assert.equal(refreshDelay(100, 0, () => 1), 90_000);
  assert.equal(refreshDelay(1, 5000, () => 0.5), 1000, 'never sooner than a second, even past exp');
  assert.equal(authCheckUrl('wss://chat.example/ws?x=1'), 'https://chat.example/auth/check');
  assert.equal(authCheckUrl('ws://127.0.0.1:9001/ws'), 'http://127.0.0.1:9001/auth/check');
});

test('getToken: the SDK refreshes before exp, so one connection outlives several 3-second tokens', async (t) => {
  // A second of tolerance: exp is in whole seconds and the refresh lands at 70-90% of what is
  // left, so without it a loop-lag spike on a loaded machine could outrun a 3-second token.
  const engine = await startEngine(t, { jwtSecret: SECRET, jwtClockToleranceSec: 1 });
  let issued = 0;
  const c = sdk(t, engine.port, { getToken: () => { issued++; return sign({ sub: 'nora', exp: nowSec() + 3 }); } });
  const log = record(c, 'state', 'error');
  await waitFor(() => c.state === 'connected', 'connected', 5000);
  const conn = c.conn;
  await c.join('long-room');
  const firstExp = nowSec() + 3;
  await waitFor(() => nowSec() >= firstExp + 3, 'two token lifetimes passed', 10_000);
  assert.equal(c.state, 'connected');
  assert.equal(c.conn, conn, 'the same connection throughout: no 4401, no reconnect');
  assert.ok(issued >= 3, `getToken asked for the first token and at least two refreshes (${issued})`);
  assert.deepEqual(log.filter((x) => x.kind === 'state').map((x) => (x.e as ClientEvents['state']).state), ['connected'], 'never disconnected');
  assert.deepEqual(log.filter((x) => x.kind === 'error'), []);
  assert.equal((await c.publish('long-room', 'still here')).seq, 1);
});

test('a refused token is final: invalid closes the client after one attempt, expired after two', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET, jwtClockToleranceSec: 0 });
  // Signed with another secret: invalid, whatever getToken is asked.
  let asked = 0;
  const bad = sdk(t, engine.port, { getToken: () => { asked++; return sign({ sub: 'olga', exp: nowSec() + 60 }, 'another-secret-of-at-least-32-bytes!!'); } });
  const badLog = record(bad, 'state', 'retry');
  await waitFor(() => bad.state === 'closed', 'the client closed for good', 5000);
  const last = badLog.filter((x) => x.kind === 'state').at(-1)!.e as ClientEvents['state'];
  assert.equal(last.cause.reason, 'unauthorized');
  assert.match(String(last.cause.error?.message), /refused the token \(invalid\)/);
  assert.equal(asked, 1, 'no second attempt');
  assert.equal(badLog.filter((x) => x.kind === 'retry').length, 0, 'no retry scheduled');
  await assert.rejects(bad.join('x'), /closed/);

  // A token getter that keeps giving expired tokens: one retry with a fresh one, then final.
  let expiredAsked = 0;
  const stale = sdk(t, engine.port, { getToken: () => { expiredAsked++; return sign({ sub: 'olga', exp: nowSec() - 60 }); } });
  await waitFor(() => stale.state === 'closed', 'closed after the second expired token', 5000);
  assert.equal(expiredAsked, 2);

  // A static token without getToken: expired is final at once.
  const fixed = sdk(t, engine.port, { token: await sign({ sub: 'olga', exp: nowSec() - 60 }) });
  await waitFor(() => fixed.state === 'closed', 'closed', 5000);
});

test('an engine that is down is retried, not taken for a refused token', async (t) => {
  const dead = http.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const port = (dead.address() as { port: number }).port;
  await new Promise<void>((r) => dead.close(() => r()));
  const c = sdk(t, port, { token: await sign({ sub: 'pia', exp: nowSec() + 60 }) });
  const log = record(c, 'retry');
  await waitFor(() => log.length >= 3, 'three retries scheduled', 5000);
  assert.notEqual(c.state, 'closed');
});
