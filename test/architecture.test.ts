/**
 * Keeps the dependency arrows true by reading the sources' imports: the leaves (ring, protocol,
 * pool, metrics) import nothing else of the project; workers never import the server or uWS;
 * exactly one module loads uWebSockets.js, and only engine/server uses piscina.
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
