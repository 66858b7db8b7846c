#!/usr/bin/env node
// The hostile-mix benchmark (issue 10): an engine with DEFAULT options as a child process
// (dist/engine/cli.js --port 0 --host 127.0.0.1), the attack of native-bench/hostile/mix.ts from
// this process, and samples of the engine's RSS (/proc/<pid>/status VmRSS) and /metrics (shard
// heap, shard up, restarts, rooms) every 500 ms. Prints a table and writes the JSON to
// native-bench/results/tmp/ (git-ignored).
//
//   npm run bench:hostile -- [--duration-ms 60000] [--push-budget-mib 512] [--partial-mib 12]
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { runMix } from '../../dist/native-bench/hostile/mix.js';

const args = process.argv.slice(2);
const num = (flag, def) => {
  const i = args.indexOf(flag);
  if (i < 0) return def;
  const v = Number(args[i + 1]);
  if (!Number.isFinite(v) || v < 0) { console.error(`${flag} needs a number, got ${args[i + 1]}`); process.exit(2); }
  return v;
};
const durationMs = num('--duration-ms', 60_000);
const pushBudgetBytes = num('--push-budget-mib', 512) * (1 << 20);
const partialSendBytes = num('--partial-mib', 12) * (1 << 20);
const MiB = 1 << 20;

const child = spawn(process.execPath, ['dist/engine/cli.js', '--port', '0', '--host', '127.0.0.1', '--store', 'memory'], { stdio: ['ignore', 'pipe', 'inherit'] });
const events = { shard_restarted: 0, other_warnings: [] };
const port = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('the engine printed no "listening" line within 20 s')), 20_000);
  child.once('exit', (code) => reject(new Error(`the engine exited (${code}) before listening`)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    let rec;
    try { rec = JSON.parse(line); } catch { return; } // not a log record
    if (rec.event === 'listening') { clearTimeout(timer); resolve(rec.port); }
    else if (rec.event === 'shard_restarted') events.shard_restarted++;
    else if (rec.level >= 40 && events.other_warnings.length < 20) events.other_warnings.push(rec.msg);
  });
});

function rssBytes() {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}
async function metrics() {
  const text = await (await globalThis.fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const per = (name) => [...text.matchAll(new RegExp(`^${name}\\{shard="(\\d+)"\\} (\\S+)$`, 'gm'))].map((m) => Number(m[2]));
  return {
    heap: per('shardchat_worker_heap_used_bytes'), up: per('shardchat_shard_up'),
    restarts: per('shardchat_shard_restarts_total'), rooms: per('shardchat_rooms'),
  };
}
async function sample() {
  const m = await metrics();
  return { t: Date.now(), rss: rssBytes(), heap: m.heap, up: m.up, restarts: m.restarts, rooms: m.rooms };
}

const samples = [];
const before = await sample();
samples.push(before);
let sampling = true;
const sampler = (async () => {
  while (sampling) {
    await new Promise((r) => setTimeout(r, 500));
    try { samples.push(await sample()); } catch (e) { samples.push({ t: Date.now(), error: String(e) }); }
  }
})();
console.error(`hostile mix: engine pid ${child.pid} on port ${port}, ${durationMs} ms, push budget ${pushBudgetBytes / MiB} MiB`);
const result = await runMix({ port, durationMs, pushBudgetBytes, partialSendBytes });
sampling = false;
await sampler;
const after = await sample();
samples.push(after);
child.kill('SIGTERM');
await new Promise((r) => child.once('exit', r));

const ok = samples.filter((s) => s.rss !== undefined);
const peak = (f) => Math.max(...ok.map(f));
const sum = (a) => a.reduce((x, y) => x + y, 0);
const out = {
  when: new Date().toISOString(), command: `npm run bench:hostile -- ${args.join(' ')}`.trim(), options: 'engine defaults (port 0, host 127.0.0.1)',
  durationMs, pushBudgetBytes,
  rss: { before: before.rss, peak: peak((s) => s.rss), after: after.rss },
  shardHeap: { before: sum(before.heap), peak: peak((s) => sum(s.heap)), after: sum(after.heap) },
  rooms: { before: sum(before.rooms), peak: peak((s) => sum(s.rooms)), after: sum(after.rooms) },
  restarts: sum(after.restarts) - sum(before.restarts), shardsDownInSamples: ok.filter((s) => s.up.some((u) => u !== 1)).length,
  events, result, samples,
};
mkdirSync('native-bench/results/tmp', { recursive: true });
const file = `native-bench/results/tmp/hostile-${out.when.replace(/[:.]/g, '-')}.json`;
writeFileSync(file, JSON.stringify(out, null, 1));

const mib = (b) => (b / MiB).toFixed(1);
const n = result.normal;
const rows = [
  ['engine RSS MiB (before / peak / after)', `${mib(out.rss.before)} / ${mib(out.rss.peak)} / ${mib(out.rss.after)}`],
  ['shard heap MiB, all shards (before / peak / after)', `${mib(out.shardHeap.before)} / ${mib(out.shardHeap.peak)} / ${mib(out.shardHeap.after)}`],
  ['rooms (before / peak / after)', `${out.rooms.before} / ${out.rooms.peak} / ${out.rooms.after}`],
  ['shard restarts / samples with a shard down', `${out.restarts} / ${out.shardsDownInSamples}`],
  ['normal client: sent / acked / lost (retries)', `${n.sent} / ${n.acked} / ${n.lost} (${n.retries})${Object.keys(n.errors).length ? ` ${JSON.stringify(n.errors)}` : ''}`],
  ['normal client ack ms: p50 / p99 / max', `${n.p50Ms.toFixed(2)} / ${n.p99Ms.toFixed(2)} / ${n.maxMs.toFixed(2)}`],
  ['partial 16 MiB frames: held / closed by server / refused', `${result.partial.opened} / ${result.partial.closedByServer} / ${result.partial.failed}`],
  ['room flood: connections / joins ok / answered', `${result.flood.cycles} / ${result.flood.replies} / ${result.flood.answered}`],
  ['history pushes: connections / MiB acked', `${result.push.cycles} / ${mib(result.push.items)}`],
  ['cursor churn: users', `${result.churn.cycles}`],
  ['hist pulls: replies / msgs', `${result.hist.replies} / ${result.hist.items}`],
  ['who pulls: replies / users listed', `${result.who.replies} / ${result.who.items}`],
];
const w = Math.max(...rows.map((r) => r[0].length));
console.log(`| ${'what'.padEnd(w)} | value |\n|${'-'.repeat(w + 2)}|-------|`);
for (const [k, v] of rows) console.log(`| ${k.padEnd(w)} | ${v} |`);
for (const [k, v] of Object.entries({ flood: result.flood, push: result.push, churn: result.churn, hist: result.hist, who: result.who })) {
  if (Object.keys(v.errors).length) console.log(`${k} refusals/errors: ${JSON.stringify(v.errors)}`);
}
console.log(`JSON: ${file}`);
