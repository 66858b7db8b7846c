/**
 * Keeps the dependency arrows true by reading the sources' imports: the leaves (ring, protocol,
 * pool, metrics) import nothing else of the project; workers never import the server or uWS;
 * exactly one module loads uWebSockets.js, and only engine/server uses piscina; the client SDK
 * imports only protocol/ and nothing of Node (it runs in browsers); the page imports only the SDK.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(path.join(root, dir))) {
    const rel = path.join(dir, name);
    if (statSync(path.join(root, rel)).isDirectory()) out.push(...sources(rel));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

/** Import specifiers of a file, resolved to project-relative paths for relative ones. */
function imports(file: string): string[] {
  const text = readFileSync(path.join(root, file), 'utf8');
  const specs = [...text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1]!);
  return specs.map((s) => (s.startsWith('.') ? path.join(path.dirname(file), s).replace(/\.js$/, '.ts') : s));
}

const all = [...sources('engine'), ...sources('workers')];

test('the sources were found', () => {
  assert.ok(all.includes(path.join('engine', 'ring', 'ring.ts')));
  assert.ok(all.includes(path.join('workers', 'shard.ts')));
});

test('leaf modules import nothing of the project outside themselves', () => {
  for (const leaf of ['engine/ring', 'engine/protocol', 'engine/pool', 'engine/metrics']) {
    for (const f of all.filter((x) => x.startsWith(leaf))) {
      for (const i of imports(f)) {
        if (i.startsWith('engine') || i.startsWith('workers')) {
          assert.ok(i.startsWith(leaf), `${f} imports ${i}, outside its leaf ${leaf}`);
        }
      }
    }
  }
});

test('engine/auth imports only itself, protocol/, errors.ts, jose and node builtins', () => {
  const auth = all.filter((x) => x.startsWith(path.join('engine', 'auth')));
  assert.ok(auth.length > 0, 'engine/auth was found');
  const allowed = [path.join('engine', 'auth'), path.join('engine', 'protocol'), path.join('engine', 'errors.ts')];
  for (const f of auth) {
    for (const i of imports(f)) {
      if (i.startsWith('engine') || i.startsWith('workers')) assert.ok(allowed.some((a) => i.startsWith(a)), `${f} imports ${i}`);
      else assert.ok(i === 'jose' || i.startsWith('node:'), `${f} imports ${i}: engine/auth uses only jose and node builtins`);
    }
  }
});

test('workers never import the server, uWebSockets.js or piscina', () => {
  for (const f of all.filter((x) => x.startsWith('workers'))) {
    for (const i of imports(f)) {
      assert.ok(!i.startsWith(path.join('engine', 'server')), `${f} imports ${i}`);
      assert.ok(!/uws|uWebSockets|piscina/i.test(i), `${f} imports ${i}`);
    }
  }
});

test('one module loads uWebSockets.js; only engine/server uses piscina', () => {
  const uwsRuntime = all.filter((f) => readFileSync(path.join(root, f), 'utf8').match(/require\(name\)|from '@trufflesuite|from 'uWebSockets/));
  // engine/server/uws.ts loads it; it may re-export its *types* (import type) to the server.
  for (const f of uwsRuntime) assert.equal(f, path.join('engine', 'server', 'uws.ts'), `${f} loads uWS`);
  for (const f of all) {
    if (imports(f).includes('piscina')) assert.ok(f.startsWith(path.join('engine', 'server')), `${f} imports piscina`);
  }
});

test('the hostile-mix harness speaks only the protocol: it imports nothing of the engine or workers', () => {
  const harness = sources(path.join('native-bench', 'hostile'));
  assert.ok(harness.includes(path.join('native-bench', 'hostile', 'mix.ts')), 'native-bench/hostile/mix.ts was found');
  for (const f of harness) {
    for (const i of imports(f)) {
      assert.ok(!i.startsWith('engine') && !i.startsWith('workers'), `${f} imports ${i}`);
      assert.ok(!/uws|uWebSockets|piscina/i.test(i), `${f} imports ${i}`);
    }
  }
});

test('the client SDK imports only engine/protocol, and no package or Node module', () => {
  const client = all.filter((x) => x.startsWith(path.join('engine', 'client')));
  assert.ok(client.includes(path.join('engine', 'client', 'client.ts')), 'engine/client/client.ts is found');
  for (const f of client) {
    for (const i of imports(f)) {
      const inside = i.startsWith(path.join('engine', 'client')) || i.startsWith(path.join('engine', 'protocol'));
      assert.ok(inside, `${f} imports ${i}: the SDK may import only engine/protocol (and itself)`);
    }
  }
  // No Node globals either (lint also type-checks the SDK without Node's types, via web/tsconfig.json).
  for (const f of client) {
    const text = readFileSync(path.join(root, f), 'utf8');
    assert.ok(!/\b(Buffer|process|require|__dirname|global)\b\s*[.(]/.test(text), `${f} uses a Node global`);
  }
  // What the SDK reaches in protocol/ must itself be free of Node: the codec only.
  for (const f of client) {
    for (const i of imports(f).filter((x) => x.startsWith(path.join('engine', 'protocol')))) {
      assert.ok(imports(i).every((x) => x.startsWith(path.join('engine', 'protocol'))), `${i} (used by ${f}) imports outside protocol/`);
      assert.ok(!/from 'node:|require\(/.test(readFileSync(path.join(root, i), 'utf8')), `${i} (used by ${f}) uses Node`);
    }
  }
});

test('the store: only workers/store opens SQLite; engine/store-dir is pure fs; backends import only leaves', () => {
  for (const f of all) {
    if (imports(f).includes('better-sqlite3') || /require\([^)]*\)\('better-sqlite3'\)/.test(readFileSync(path.join(root, f), 'utf8'))) {
      assert.ok(f.startsWith(path.join('workers', 'store')), `${f} loads better-sqlite3`);
    }
  }
  const storeDir = path.join('engine', 'store-dir.ts');
  assert.ok(all.includes(storeDir));
  for (const i of imports(storeDir)) assert.ok(i.startsWith('node:'), `${storeDir} imports ${i}: it must stay pure fs for the main thread`);
  const leaves = ['engine/ring', 'engine/protocol', 'engine/pool', 'engine/metrics', storeDir];
  for (const f of all.filter((x) => x.startsWith(path.join('workers', 'store')))) {
    for (const i of imports(f)) {
      if (!i.startsWith('engine') && !i.startsWith('workers')) continue;
      assert.ok(i.startsWith(path.join('workers', 'store')) || leaves.some((l) => i.startsWith(l)), `${f} imports ${i}: a store imports only leaves`);
    }
  }
});

test('the chat page (web/) imports only the client SDK', () => {
  const web = sources('web');
  assert.ok(web.includes(path.join('web', 'app.ts')), 'web/app.ts is found');
  for (const f of web) {
    for (const i of imports(f)) {
      assert.ok(i.startsWith(path.join('engine', 'client')), `${f} imports ${i}: the page may import only engine/client`);
    }
  }
});

test('the redis store backend imports only itself, the leaves, node builtins and redis', () => {
  const dir = path.join('workers', 'store', 'redis');
  const files = all.filter((f) => f.startsWith(dir));
  assert.ok(files.length > 0, 'workers/store/redis was found');
  const leaves = ['engine/ring', 'engine/protocol', 'engine/pool', 'engine/metrics'].map((l) => path.join(...l.split('/')));
  for (const f of files) {
    for (const i of imports(f)) {
      const ok = i.startsWith(dir) || leaves.some((l) => i.startsWith(l)) || i.startsWith('node:') || i === 'redis';
      assert.ok(ok, `${f} imports ${i}`);
    }
  }
});
