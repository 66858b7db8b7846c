/**
 * Model check of the ring's wake-up handshakes with SPIN (docs/ring.pml): the protocol exactly as
 * ring.ts runs it must pass an exhaustive search (no deadlock, no sleeper left on a stale value),
 * and each deliberately broken variant must fail it, so the checker demonstrably catches a lost
 * wake-up. Needs `spin` and `cc` on PATH (Debian: apt-get install spin); without them this test
 * FAILS rather than skips, because CI installs them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { guardHandles } from './helpers/leaks.js';

guardHandles();

const run = promisify(execFile);
/** dist/test/ring.model.test.js -> <repo>/docs/ring.pml */
const MODEL = fileURLToPath(new URL('../../docs/ring.pml', import.meta.url));

interface PanResult {
  errors: number;
  /** The first "pan:1: ..." line: what pan found, when it found something. */
  finding: string;
  /** Statements of the model that no run reached. */
  unreached: string[];
  stored: number;
  output: string;
}

async function tool(cmd: string, args: string[], cwd: string): Promise<string> {
  try {
    const { stdout, stderr } = await run(cmd, args, { cwd, timeout: 300_000, maxBuffer: 16 << 20 });
    return stdout + stderr;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (err.code === 'ENOENT') {
      assert.fail(`'${cmd}' is not installed or not on PATH: this test needs SPIN and a C compiler ` +
        `(Debian/Ubuntu: apt-get update && apt-get install -y spin gcc)`);
    }
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
}

/** spin -a with the given -D defines, cc pan.c, run pan: in a fresh temp dir, removed afterwards. */
async function check(defines: string[]): Promise<PanResult> {
  const dir = await mkdtemp(join(tmpdir(), 'shardchat-spin-'));
  try {
    await copyFile(MODEL, join(dir, 'ring.pml'));
    await tool('spin', [...defines.map((d) => `-D${d}`), '-a', 'ring.pml'], dir);
    await tool('cc', ['-DSAFETY', '-o', 'pan', 'pan.c'], dir);
    const output = await tool(join(dir, 'pan'), ['-m100000', '-w20'], dir);
    const m = /errors: (\d+)/.exec(output);
    assert.ok(m, `no "errors:" line in pan's output:\n${output}`);
    assert.doesNotMatch(output, /max search depth too small/, 'the search was cut short');
    const stored = /(\d+) states, stored/.exec(output);
    return {
      errors: Number(m[1]),
      finding: /pan:1: (.*)/.exec(output)?.[1] ?? '',
      unreached: output.split('\n').filter((l) => /ring\.pml:\d+, state \d+/.test(l)).map((l) => l.trim()),
      stored: Number(stored?.[1] ?? 0),
      output,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('spin is available', async () => {
  const out = await tool('spin', ['-V'], tmpdir());
  assert.match(out, /Spin Version/);
});

for (const size of [[], ['N=6', 'CAP=3'], ['N=8', 'CAP=1'], ['N=7', 'CAP=4']]) {
  test(`the ring's handshake passes: no lost wake-up, no deadlock (${size.join(' ') || 'N=4 CAP=2'})`, async (t) => {
    const r = await check(size);
    t.diagnostic(`errors: ${r.errors}, ${r.stored} states`);
    assert.equal(r.errors, 0, `pan found: ${r.finding}\n${r.output}`);
    assert.deepEqual(r.unreached, [], 'every statement of the model is reachable');
  });
}

test('the explicit re-check is an optimisation: waiting on WRITE with the seen value suffices', async (t) => {
  const r = await check(['NO_RECHECK']);
  t.diagnostic(`errors: ${r.errors}, ${r.stored} states`);
  assert.equal(r.errors, 0, `pan found: ${r.finding}`);
});

test('the model is not vacuous: both sides really park in some runs', async (t) => {
  for (const probe of ['PROBE_CONSUMER_PARKS', 'PROBE_PRODUCER_PARKS']) {
    const r = await check([probe]);
    t.diagnostic(`${probe}: errors: ${r.errors} (${r.finding})`);
    assert.equal(r.errors, 1, `${probe}: that side never blocks in the model`);
    assert.match(r.finding, /assertion violated/);
  }
});

const BROKEN = {
  BROKEN_PRODUCER_CLEARS: 'the producer clears SLEEPING after notifying',
  BROKEN_DOORBELL: 'the consumer blocks on a doorbell instead of waitAsync(WRITE, seen)',
  BROKEN_CONSUMER_CLEARS: 'syncRead clears PRODUCER_WAITING after notifying',
};

for (const [variant, what] of Object.entries(BROKEN)) {
  test(`spin catches the lost wake-up when ${what} (${variant})`, async (t) => {
    const r = await check([variant]);
    t.diagnostic(`${variant}: errors: ${r.errors} (${r.finding})`);
    assert.ok(r.errors >= 1, `${variant} must fail, pan said errors: ${r.errors}`);
    assert.match(r.finding, /assertion violated .*(cblocked|pblocked)/, 'a sleeper left on a stale value');
    // and without the stale-sleeper assertion the same bug is a plain deadlock
    const d = await check([variant, 'NO_STALE_ASSERT']);
    t.diagnostic(`${variant} NO_STALE_ASSERT: errors: ${d.errors} (${d.finding})`);
    assert.ok(d.errors >= 1, `${variant} must deadlock, pan said errors: ${d.errors}`);
    assert.match(d.finding, /invalid end state/);
  });
}
