#!/usr/bin/env node
// Runs every compiled `*.test.js` under dist/test with Node's own test runner and exits with its
// exit code. Files are listed explicitly because Node 20's directory search would also run every
// helper and worker fixture that lives below a folder named `test`.
// A TAP copy of the run goes to a temp file so that, at the end, every skipped test and every
// todo is listed again with its reason (a "skipped: install spin ..." line is easy to miss among
// hundreds of results); the console keeps Node's usual reporter (spec on a terminal, else TAP).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = 'dist/test';
const only = process.argv.slice(2);
function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}
let files = walk(root);
if (only.length > 0) files = files.filter((f) => only.some((o) => f.includes(o)));
if (files.length === 0) {
  console.error(`no test files found under ${root}${only.length ? ` matching ${only.join(', ')}` : ''}`);
  process.exit(1);
}
const timeout = process.env.SHARDCHAT_SOAK ? 3_600_000 : 300_000;
const tapDir = mkdtempSync(join(tmpdir(), 'shardchat-tests-'));
const tapFile = join(tapDir, 'run.tap');
const reporters = [
  `--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`, '--test-reporter-destination=stdout',
  '--test-reporter=tap', `--test-reporter-destination=${tapFile}`,
];
const child = spawn(process.execPath, ['--expose-gc', '--test', `--test-timeout=${timeout}`, ...reporters, ...files], { stdio: 'inherit' });
child.on('exit', (code, signal) => {
  try {
    const notes = readFileSync(tapFile, 'utf8').split('\n').filter((l) => /^\s*(not )?ok \d+ - .* # (SKIP|TODO)\b/.test(l));
    if (notes.length > 0) {
      console.log(`\nskipped and todo (${notes.length}):`);
      for (const l of notes) console.log(`  ${l.trim().replace(/^(not )?ok \d+ - /, '')}`);
    }
  } catch (e) {
    console.error(`run-tests: could not list skipped tests: ${e.message}`);
  } finally {
    rmSync(tapDir, { recursive: true, force: true });
  }
  process.exit(code ?? (signal ? 1 : 0));
});
