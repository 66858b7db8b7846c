/**
 * Model check of the ring's wake-up handshakes with SPIN (docs/ring.pml): the protocol exactly as
 * ring.ts runs it must pass an exhaustive search (no deadlock, no sleeper left on a stale value),
 * and each deliberately broken variant must fail it, so the checker demonstrably catches a lost
 * wake-up. Two configurations: the ring's own ends (waitForData / publish / waitForSpace) and, with
 * -DLINK, the shard's inbound ring as the engine drives it (ShardLink's deferred notify, settled
 * once per event-loop turn, against the shard's blocking park waitForDataSync).
 * Needs `spin` and `cc` (Debian packages spin, gcc): without them the whole check is one skipped
 * test ("skipped: install spin (Debian package) to model-check the ring"), and with
 * SHARDCHAT_REQUIRE_TOOLS=1 (CI) a missing program fails it.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { guardHandles } from './helpers/leaks.js';
import { requireTool } from './helpers/tools.js';

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
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
}

interface Tools { spin: string; cc: string }

/** spin -a with the given -D defines, cc pan.c, run pan: in a fresh temp dir, removed afterwards. */
async function check({ spin, cc }: Tools, defines: string[]): Promise<PanResult> {
  const dir = await mkdtemp(join(tmpdir(), 'shardchat-spin-'));
  try {
    await copyFile(MODEL, join(dir, 'ring.pml'));
    await tool(spin, [...defines.map((d) => `-D${d}`), '-a', 'ring.pml'], dir);
    await tool(cc, ['-DSAFETY', '-o', 'pan', 'pan.c'], dir);
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

/** The programs, or null when the test was skipped (or, under SHARDCHAT_REQUIRE_TOOLS=1, failed). */
function tools(t: TestContext): Tools | null {
  const spin = requireTool(t, 'spin', 'spin', 'model-check the ring');
  if (spin === null) return null;
  const cc = requireTool(t, 'cc', 'gcc', "compile SPIN's verifier (pan.c) and model-check the ring");
  return cc === null ? null : { spin, cc };
}

test('SPIN model check of the ring handshakes (docs/ring.pml)', async (t) => {
  const found = tools(t);
  if (found === null) return;
  const sub = async (name: string, fn: (st: TestContext) => Promise<void>): Promise<void> => { await t.test(name, fn); };
  const passes = async (st: TestContext, defines: string[]): Promise<void> => {
    const r = await check(found, defines);
    st.diagnostic(`${defines.join(' ') || 'default'}: errors: ${r.errors}, ${r.stored} states`);
    assert.equal(r.errors, 0, `pan found: ${r.finding}\n${r.output}`);
    assert.deepEqual(r.unreached, [], 'every statement of the model is reachable');
  };
  /** A broken variant: a sleeper left on a stale value, and without that assertion a plain deadlock. */
  const fails = async (st: TestContext, defines: string[], stale: RegExp): Promise<void> => {
    const r = await check(found, defines);
    st.diagnostic(`${defines.join(' ')}: errors: ${r.errors} (${r.finding})`);
    assert.ok(r.errors >= 1, `${defines.join(' ')} must fail, pan said errors: ${r.errors}`);
    assert.match(r.finding, stale, 'a sleeper left on a stale value');
    const d = await check(found, [...defines, 'NO_STALE_ASSERT']);
    st.diagnostic(`${defines.join(' ')} NO_STALE_ASSERT: errors: ${d.errors} (${d.finding})`);
    assert.ok(d.errors >= 1, `${defines.join(' ')} must deadlock, pan said errors: ${d.errors}`);
    assert.match(d.finding, /invalid end state/);
  };
  const probes = async (st: TestContext, defines: string[]): Promise<void> => {
    for (const probe of ['PROBE_CONSUMER_PARKS', 'PROBE_PRODUCER_PARKS']) {
      const r = await check(found, [...defines, probe]);
      st.diagnostic(`${probe}: errors: ${r.errors} (${r.finding})`);
      assert.equal(r.errors, 1, `${probe}: that side never blocks in the model`);
      assert.match(r.finding, /assertion violated/);
    }
  };
  const SIZES = [[], ['N=6', 'CAP=3'], ['N=8', 'CAP=1'], ['N=7', 'CAP=4']];

  await sub('spin is available', async () => {
    const out = await tool(found.spin, ['-V'], tmpdir());
    assert.match(out, /Spin Version/);
  });

  // The ring's own ends: publish / waitForData (waitAsync) / waitForSpace.
  for (const size of SIZES) {
    await sub(`the ring's handshake passes: no lost wake-up, no deadlock (${size.join(' ') || 'N=4 CAP=2'})`,
      (st) => passes(st, size));
  }
  await sub('the explicit re-check is an optimisation: waiting on WRITE with the seen value suffices',
    (st) => passes(st, ['NO_RECHECK']));
  await sub('the model is not vacuous: both sides really park in some runs', (st) => probes(st, []));
  const BROKEN = {
    BROKEN_PRODUCER_CLEARS: 'the producer clears SLEEPING after notifying',
    BROKEN_DOORBELL: 'the consumer blocks on a doorbell instead of waitAsync(WRITE, seen)',
    BROKEN_CONSUMER_CLEARS: 'syncRead clears PRODUCER_WAITING after notifying',
  };
  for (const [variant, what] of Object.entries(BROKEN)) {
    await sub(`spin catches the lost wake-up when ${what} (${variant})`,
      (st) => fails(st, [variant], /assertion violated .*(cblocked|pblocked)/));
  }

  // LINK: ShardLink's deferred notify (publishDeferred, settled once per turn) against the shard's
  // blocking park (waitForDataSync), mixed with publish() and a control record's waitForSpace.
  for (const size of SIZES) {
    await sub(`the deferred notify and the blocking park pass (LINK ${size.join(' ') || 'N=4 CAP=2'})`,
      (st) => passes(st, ['LINK', ...size]));
  }
  await sub('LINK is not vacuous: the shard parks and a control record waits for space in some runs',
    (st) => probes(st, ['LINK']));
  await sub('the blocking park may re-check before announcing: Atomics.wait compares with the value found empty (PARK_LATE_ANNOUNCE)',
    (st) => passes(st, ['LINK', 'PARK_LATE_ANNOUNCE']));
  const BROKEN_LINK = {
    BROKEN_DEFERRED_FIRST_ONLY: 'the link forgets a wake owed by a later frame of the turn',
    BROKEN_DEFERRED_LOAD_FIRST: 'publishDeferred loads SLEEPING before it stores WRITE',
    BROKEN_PARK_RELOAD: 'the blocking park waits on a freshly loaded WRITE',
  };
  for (const [variant, what] of Object.entries(BROKEN_LINK)) {
    await sub(`spin catches the lost wake-up when ${what} (LINK ${variant})`,
      (st) => fails(st, ['LINK', variant], /assertion violated .*cblocked/));
  }
});
