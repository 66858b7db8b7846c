/**
 * The chat page's files as the engine serves them (engine/server/static.ts): GET / and the
 * bundled assets from dist/web, with a CSP that keeps the page to its own origin; unknown asset
 * names are 404 and never reach the file system; `web: false` turns the routes off.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { guardHandles } from './helpers/leaks.js';
import { startEngine } from './helpers/engine.js';

guardHandles();

function get(port: number, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
}

test('GET / serves the page, /assets/* its bundle and style, with a same-origin CSP', async (t) => {
  const engine = await startEngine(t, { shards: 1 });
  const page = await get(engine.port, '/');
  assert.equal(page.status, 200);
  assert.match(page.headers['content-type'] ?? '', /^text\/html/);
  assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
  assert.match(page.body, /<script type="module" src="\/assets\/app.js">/);
  // No keep-alive: an idle browser connection would otherwise hold a draining CLI ~10 s.
  assert.equal(page.headers.connection, 'close');
  assert.doesNotMatch(page.body, /https?:\/\//, 'nothing from another origin');
  const app = await get(engine.port, '/assets/app.js');
  assert.equal(app.status, 200);
  assert.match(app.headers['content-type'] ?? '', /^text\/javascript/);
  assert.ok(app.body.includes('reconnecting in'), 'the bundle is the page');
  assert.equal((await get(engine.port, '/assets/style.css')).status, 200);
  for (const bad of ['/assets/nope.js', '/assets/../../package.json', '/assets/%2e%2e/index.html', '/index.html']) {
    assert.equal((await get(engine.port, bad)).status, 404, bad);
  }
  assert.equal((await get(engine.port, '/healthz')).status, 200, 'the other routes are unchanged');
});

test('web: false leaves GET / to the 404 catch-all', async (t) => {
  const engine = await startEngine(t, { shards: 1, web: false });
  assert.equal((await get(engine.port, '/')).status, 404);
  assert.equal((await get(engine.port, '/assets/app.js')).status, 404);
});
