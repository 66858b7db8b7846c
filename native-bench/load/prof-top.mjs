#!/usr/bin/env node
/**
 * Prints the top self-time functions of V8 .cpuprofile files (as written by node --cpu-prof).
 *   node native-bench/load/prof-top.mjs [--top 25] FILE.cpuprofile...
 * Node names them CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread.
 */
import { readFileSync } from 'node:fs';
import { basename, relative } from 'node:path';

const args = process.argv.slice(2);
let top = 25;
const ti = args.indexOf('--top');
if (ti >= 0) { top = Number(args[ti + 1]); args.splice(ti, 2); }
for (const file of args) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    const n = byId.get(p.samples[i]);
    if (!n) continue;
    const cf = n.callFrame;
    const url = cf.url ? relative(process.cwd(), cf.url.replace(/^file:\/\//, '')) : '';
    const key = `${cf.functionName || '(anonymous)'} ${url ? `${url}:${cf.lineNumber + 1}` : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
  const parts = basename(file).split('.');
  const thread = parts.length >= 6 ? parts[parts.length - 3] : '?';
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  process.stdout.write(`\n${basename(file)} (thread ${thread}${thread === '0' ? ', main' : ''}): ${(total / 1e6).toFixed(2)} s sampled\n`);
  process.stdout.write('| self % | self ms | function |\n|---|---|---|\n');
  for (const [k, v] of rows) process.stdout.write(`| ${((100 * v) / total).toFixed(1)} | ${(v / 1000).toFixed(0)} | \`${k}\` |\n`);
}
