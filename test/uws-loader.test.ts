/**
 * The uWebSockets.js loader: it finds the native build here, tells a native module from the
 * pure-JavaScript fallback that some republications load silently, and the CLI refuses to start
 * (non-zero exit, a message that says why and what to do) when only the fallback would load.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isNativeUws, loadUws } from '../engine/server/uws.js';

const require = createRequire(import.meta.url);
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../engine/cli.js');

test('the native uWebSockets.js loads on this machine', () => {
  const { mod, from } = loadUws();
  assert.ok(isNativeUws(mod), `loaded from ${from}`);
  assert.equal(typeof mod.App, 'function');
});

test('the pure-JavaScript fallback is recognised as not native', () => {
  // The republication's fallback lives in its dist/ folder; its App is a plain JS function.
  const fallback: unknown = require('@trufflesuite/uws-js-unofficial/dist/index.js');
  assert.equal(typeof (fallback as { App: unknown }).App, 'function');
  assert.equal(isNativeUws(fallback), false);
  assert.equal(isNativeUws(null), false);
  assert.equal(isNativeUws({ App: () => null }), false);
});

test('the CLI refuses to start on the fallback, saying why', async () => {
  // UWS_USE_FALLBACK=1 makes the republication hand out its JavaScript fallback.
  const child = spawn(process.execPath, [CLI, '--port', '0', '--host', '127.0.0.1', '--shards', '1', '--store', 'memory'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, UWS_USE_FALLBACK: '1' } });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const timer = setTimeout(() => { if (child.pid !== undefined) child.kill('SIGKILL'); }, 20_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  assert.notEqual(code, 0, `exit code ${code}`);
  assert.match(err, /refuses to run on a JavaScript fallback/);
  assert.match(err, /@trufflesuite\/uws-js-unofficial: only a pure-JavaScript fallback loaded/);
  assert.ok(!out.includes('"listening"'), 'it never listened');
});
