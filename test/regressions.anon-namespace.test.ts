/**
 * Regression (issue 10, item 14): open mode accepted `?user=anon-c1`, so any client could take
 * over an anonymous connection's presence and read cursors. Now the anonymous namespace is the
 * engine's: such an upgrade gets HTTP 400 with a body saying why.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine, openClient, joinRoom } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { rawUpgrade } from './helpers/raw-client.js';

guardHandles();

/** The HTTP answer to an upgrade of `path`: status and body (read until the server ends it or 2 s). */
async function upgradeAnswer(port: number, path: string): Promise<{ status: number; body: string }> {
  const up = await rawUpgrade(port, path);
  let body = up.rest.toString('utf8');
  const len = Number(/content-length: (\d+)/i.exec(up.head)?.[1] ?? -1);
  if (up.status !== 101 && body.length < len) {
    up.socket.resume();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2000);
      up.socket.on('data', (c: Buffer) => { body += c.toString('utf8'); if (body.length >= len) { clearTimeout(timer); resolve(); } });
      up.socket.on('close', () => { clearTimeout(timer); resolve(); });
    });
  }
  up.socket.destroy();
  return { status: up.status, body };
}

test('open mode refuses ?user=anon-... with HTTP 400 and a reason; the anonymous user keeps its identity', async (t) => {
  const engine = await startEngine(t);
  const anon = await openClient(t, engine);
  const id = anon.hello.user as string;
  assert.match(id, /^anon-/);
  await joinRoom(anon, 'lobby');
  for (const path of [`/ws?user=${id}`, `/ws?user=${encodeURIComponent(id).replace('-', '%2D')}`, '/ws?user=anon-zzz']) {
    const r = await upgradeAnswer(engine.port, path);
    assert.equal(r.status, 400, `upgrade ${path} answered ${r.status}`);
    assert.match(r.body, /reserved for anonymous connections/, `the 400 body says why: ${JSON.stringify(r.body)}`);
  }
  const bad = await upgradeAnswer(engine.port, '/ws?user=a%20b');
  assert.equal(bad.status, 400);
  assert.match(bad.body, /invalid user: must be 1\.\.64 bytes/, `other refusals say why too: ${JSON.stringify(bad.body)}`);
  assert.equal(engine.stats().connections, 1);
  const who = await anon.request({ t: 'who', room: 'lobby' });
  assert.deepEqual(who.users, [id]);
});
