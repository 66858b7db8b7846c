/**
 * Token auth as a browser meets it (Debian's chromium via playwright-core, against a real engine
 * on 127.0.0.1): `new WebSocket(url, ['shardchat.v1', 'bearer.' + token])` opens (the engine
 * answers exactly one protocol, or Chromium would fail the handshake) and gets its hello; a bad
 * token is only a 1006 close to the page, and `GET /auth/check` then tells it why.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { SignJWT } from 'jose';
import { requireTool } from './helpers/tools.js';
import { startEngine } from './helpers/engine.js';

const SECRET = 'a-test-secret-of-at-least-32-bytes!!';

test('a browser connects with the bearer subprotocol, and learns why a bad token was refused', async (t) => {
  const exe = requireTool(t, '/usr/bin/chromium', 'chromium', 'run token auth in a real browser');
  if (exe === null) return;
  const engine = await startEngine(t, { jwtSecret: SECRET });
  const sign = (exp: number): Promise<string> =>
    new SignJWT({ sub: 'browser-user', exp }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET));
  const good = await sign(Math.floor(Date.now() / 1000) + 60);
  const expired = await sign(Math.floor(Date.now() / 1000) - 60);
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'shardchat-chromium-auth-'));
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: exe, headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.after(async () => { await browser.close(); rmSync(userDataDir, { recursive: true, force: true }); });
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${engine.port}/healthz`);
  const run = (token: string): Promise<{ opened: boolean; protocol: string; firstBytes: number; closeCode: number; check: { status: number; body: unknown } }> =>
    page.evaluate(async ([tok, host]) => {
      const ws = new WebSocket(`ws://${host}/ws`, ['shardchat.v1', `bearer.${tok}`]);
      ws.binaryType = 'arraybuffer';
      const r = await new Promise<{ opened: boolean; protocol: string; firstBytes: number; closeCode: number }>((resolve) => {
        let opened = false;
        ws.onopen = () => { opened = true; };
        ws.onmessage = (e) => { resolve({ opened, protocol: ws.protocol, firstBytes: (e.data as ArrayBuffer).byteLength, closeCode: 0 }); ws.close(); };
        ws.onclose = (e) => resolve({ opened, protocol: ws.protocol, firstBytes: 0, closeCode: e.code });
      });
      const res = await fetch('/auth/check', { headers: { authorization: `Bearer ${tok}` } });
      return { ...r, check: { status: res.status, body: await res.json() as unknown } };
    }, [token, `127.0.0.1:${engine.port}`] as const);
  const ok = await run(good);
  assert.equal(ok.opened, true);
  assert.equal(ok.protocol, 'shardchat.v1');
  assert.ok(ok.firstBytes > 0, 'the hello arrived');
  assert.equal(ok.check.status, 200);
  const bad = await run(expired);
  assert.equal(bad.opened, false);
  assert.equal(bad.closeCode, 1006, 'a refused upgrade is only 1006 to a page');
  assert.equal(bad.check.status, 401);
  assert.equal((bad.check.body as { error: { reason: string } }).error.reason, 'expired');
});
