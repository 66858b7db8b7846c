#!/usr/bin/env node
// Runs every compiled `*.test.js` under dist/test with Node's own test runner and exits with its
// exit code. Files are listed explicitly because Node 20's directory search would also run every
// helper and worker fixture that lives below a folder named `test`.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
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
const child = spawn(process.execPath, ['--expose-gc', '--test', `--test-timeout=${timeout}`, ...files], { stdio: 'inherit' });
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
