/**
 * Where the load runner's results go (native-bench/load/results.mjs): a user's run writes only
 * under results/local/ (git-ignored); --reference adds a small summary (no raw generator output,
 * per-run figures as columns) with the machine note and the sweep's plot.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const results = (await import(pathToFileURL(path.join(root, 'native-bench', 'load', 'results.mjs')).href)) as typeof import('../native-bench/load/results.mjs');

function runOut() {
  const raw = { window_delivered: 1000, server: { threads: [{ tid: 1, cpu_s: 0.5 }] } };
  const derived = [0, 1].map((runId) => ({ runId, deliveredPerSec: 1e5 + runId, p99ms: 2.5, shardAmbiguous: runId, historyFilled: 1, threadComms: 'node', waitedForIdleMs: 3 }));
  return {
    schema: 'shardchat-load-bench/3', mode: 'suite', table: '| t |',
    scenarios: { s: { kind: 'closed', arms: { shardchat: { label: 'x', peer: 'shardchat', summary: { deliveredPerSec: 1e5, runs: 2, shardAmbiguousRuns: 1 }, derived, runs: [raw, raw] } } } },
  };
}

test("a user's run writes only under results/local; --reference adds summary.json, summary.md and the sweep plot", (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-results-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const p = results.resultPaths(dir, '2026-01-01T00-00-00Z', 'suite');
  const plain = results.writeResults(p, runOut(), '| t |', { reference: false });
  assert.ok(plain.every((f) => f.startsWith(path.join(dir, 'results', 'local') + path.sep)), plain.join(', '));
  assert.ok(!existsSync(path.join(dir, 'results', 'reference')));

  const svg = path.join(dir, 'results', 'local', 'sweep.svg');
  writeFileSync(svg, '<svg/>\n');
  const ref = results.writeResults(p, runOut(), '| t |', { reference: true, machineNote: 'Machine: test', sweepSvg: svg });
  assert.deepEqual(readdirSync(p.referenceDir).sort(), ['summary.json', 'summary.md', 'sweep.svg']);
  assert.equal(ref.filter((f) => f.startsWith(p.referenceDir)).length, 3);
  assert.ok(readFileSync(path.join(p.referenceDir, 'summary.md'), 'utf8').startsWith('Machine: test\n\n| t |'));
  const s = JSON.parse(readFileSync(path.join(p.referenceDir, 'summary.json'), 'utf8')) as { table?: string; scenarios: { s: { arms: { shardchat: { runs?: unknown; derived: Record<string, unknown[]>; summary: Record<string, unknown> } } } } };
  const arm = s.scenarios.s.arms.shardchat;
  assert.equal(s.table, undefined);
  assert.equal(arm.runs, undefined, 'raw generator output is left out');
  assert.deepEqual(arm.derived.runId, [0, 1]);
  assert.deepEqual(arm.derived.shardAmbiguous, [0, 1]);
  assert.deepEqual(arm.derived.historyFilled, [1, 1]);
  assert.equal(arm.derived.threadComms, undefined, 'fields the verdicts do not use are dropped');
  assert.equal(arm.summary.shardAmbiguousRuns, 1);
});
