/**
 * Durability across real process restarts: the CLI (dist/engine/cli.js --store sqlite) as a child
 * process, real WebSocket clients, SIGKILL at seeded moments and SIGTERM. Acked means durable:
 * every acked message is there after a kill -9, in order, with its seq, and no seq is reused for
 * another message; a client at seq k resumes with exactly k+1..latest in the same epoch; unread
 * counts from the stored cursor. A bad data dir makes the CLI exit non-zero with the StoreError code.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { guardHandles } from './helpers/leaks.js';
import { tempDir } from './helpers/tmpdir.js';
import { type Frame, TestClient } from './helpers/client.js';
import { mulberry32 } from './helpers/store-frames.js';
import { requireTool } from './helpers/tools.js';

guardHandles();

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../engine/cli.js');

interface Cli {
  child: ChildProcess;
  port: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  err: () => string;
}

/** Starts the CLI on a data dir (port 0, 127.0.0.1) and resolves with its port; killed after the test if still running. */
async function startCli(t: TestContext, dir: string, extra: string[] = []): Promise<Cli> {
  const child = spawn(process.execPath, [CLI, '--port', '0', '--host', '127.0.0.1', '--shards', '2', '--data-dir', dir,
    '--rate-per-sec', '1000000', '--rate-burst', '1000000', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = ''; let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); // only the PID this test started
    await exited;
  });
  const end = Date.now() + 15_000;
  for (;;) {
    const line = out.split('\n').find((l) => l.includes('"listening"'));
    if (line !== undefined) return { child, port: (JSON.parse(line) as { port: number }).port, exited, err: () => err };
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > end) {
      assert.fail(`the cli did not listen (exit ${child.exitCode ?? child.signalCode}); stderr: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stop(cli: Cli, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
  cli.child.kill(signal);
  const exit = await cli.exited;
  if (signal === 'SIGTERM') assert.deepEqual(exit, { code: 0, signal: null }, `exit after SIGTERM; stderr: ${cli.err()}`);
  else assert.equal(exit.signal, 'SIGKILL');
}

/** Every message of `room`, paging hist back from the latest. */
async function allOf(c: TestClient, room: string): Promise<Frame[]> {
  const out: Frame[] = [];
  let before: number | undefined;
  for (let i = 0; i < 1000; i++) {
    const h = await c.request({ t: 'hist', room, limit: 500, ...(before === undefined ? {} : { before }) });
    assert.equal(h.t, 'hist', JSON.stringify(h));
    assert.notEqual(h.truncated, true, `${room}: retention holds every message`);
    const msgs = h.msgs as Frame[];
    if (msgs.length === 0) break;
    out.unshift(...msgs);
    before = msgs[0]!.seq as number;
    if (before === 1) break;
  }
  return out;
}

const ROOMS = ['k9-a', 'k9-b'];

for (const [seed, fsync] of [[101, 'normal'], [202, 'normal'], [303, 'always']] as const) {
  test(`acked means durable: kill -9 the CLI at a seeded moment (seed ${seed}, fsync ${fsync}), restart: every acked message is there, in order, seq not reused`, async (t) => {
    const dir = tempDir(t);
    const rnd = mulberry32(seed);
    const killAt = 40 + Math.floor(rnd() * 400);
    const acked = new Map<string, string>(); // `${room} ${seq}` -> body
    const cli = await startCli(t, dir, ['--fsync', fsync]);
    const clients = await Promise.all([0, 1, 2].map((i) => TestClient.connect(cli.port, { user: `p${i}` })));
    t.after(() => Promise.all(clients.map((c) => c.close())));
    for (const c of clients) for (const room of ROOMS) assert.equal((await c.request({ t: 'join', room })).t, 'joined');
    let total = 0;
    let killed = false;
    const loops = clients.map(async (c, i) => {
      for (let k = 0; !killed && k < 100_000; k++) {
        const room = ROOMS[(i + k) % 2]!;
        const body = `p${i}-${k}`;
        let ack: Frame;
        try { ack = await c.request({ t: 'pub', room, body }, 5000); } catch { return; } // the kill closed the socket
        if (ack.t !== 'ack') continue;
        const key = `${room} ${String(ack.seq)}`;
        assert.ok(!acked.has(key), `${key} acked twice`);
        acked.set(key, body);
        if (++total === killAt && !killed) { killed = true; cli.child.kill('SIGKILL'); }
      }
    });
    await Promise.all(loops);
    await cli.exited;
    assert.ok(acked.size >= killAt, `${acked.size} acked before the kill`);

    const again = await startCli(t, dir);
    const r = await TestClient.connect(again.port, { user: 'reader' });
    t.after(() => r.close());
    for (const room of ROOMS) {
      assert.equal((await r.request({ t: 'join', room })).t, 'joined');
      const msgs = await allOf(r, room);
      const seqs = msgs.map((m) => m.seq as number);
      assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `${room}: seqs 1..n in order, no hole`);
      const bySeq = new Map(msgs.map((m) => [m.seq as number, m.body as string]));
      for (const [key, body] of acked) {
        const [room2, seq] = key.split(' ');
        if (room2 !== room) continue;
        assert.equal(bySeq.get(Number(seq)), body, `acked ${key} is kept with its body (no seq reused)`);
      }
      // A new message continues after everything kept.
      const ack = await r.request({ t: 'pub', room, body: 'after the kill' });
      assert.equal(ack.seq, seqs.length + 1);
    }
    await stop(again, 'SIGTERM');
  });
}

for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
  test(`resume across a CLI restart (${signal}): same epoch, missed exactly k+1..latest, unread from the stored cursor`, async (t) => {
    const dir = tempDir(t);
    const cli = await startCli(t, dir);
    const a = await TestClient.connect(cli.port, { user: 'alice' });
    const b = await TestClient.connect(cli.port, { user: 'bob' });
    t.after(() => Promise.all([a.close(), b.close()]));
    const j = await a.request({ t: 'join', room: 'resume' });
    await b.request({ t: 'join', room: 'resume' });
    for (let i = 1; i <= 4; i++) assert.equal((await b.request({ t: 'pub', room: 'resume', body: i })).seq, i);
    const k = 4;
    assert.equal((await a.request({ t: 'read', room: 'resume', seq: k })).seq, k);
    for (let i = 5; i <= 7; i++) assert.equal((await b.request({ t: 'pub', room: 'resume', body: i })).seq, i);
    await stop(cli, signal);

    const again = await startCli(t, dir);
    const a2 = await TestClient.connect(again.port, { user: 'alice' });
    t.after(() => a2.close());
    const r = await a2.request({ t: 'join', room: 'resume', since: k, epoch: j.epoch });
    assert.equal(r.t, 'joined', JSON.stringify(r));
    assert.equal(r.epoch, j.epoch);
    assert.equal(r.seq, 7);
    assert.equal(r.truncated, undefined);
    assert.deepEqual((r.missed as Frame[]).map((m) => m.seq), [5, 6, 7]);
    assert.deepEqual((r.missed as Frame[]).map((m) => m.body), [5, 6, 7]);
    assert.equal(r.unread, 3);
    await stop(again, 'SIGTERM');
  });
}

test('the CLI refuses a bad data dir with the StoreError code and exits non-zero: corrupt, locked', async (t) => {
  const corrupt = tempDir(t);
  const junk = randomBytes(8192);
  writeFileSync(path.join(corrupt, 'shardchat.db'), junk);
  const child = spawn(process.execPath, [CLI, '--port', '0', '--host', '127.0.0.1', '--data-dir', corrupt], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exit = await new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  assert.equal(exit, 1, `exit code; stderr: ${err}`);
  assert.match(err, /^shardchat: STORE_CORRUPT: /m);
  // Locked: a running CLI holds the dir; a second one is refused.
  const dir = tempDir(t);
  await startCli(t, dir);
  const second = spawn(process.execPath, [CLI, '--port', '0', '--host', '127.0.0.1', '--data-dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err2 = '';
  second.stderr.setEncoding('utf8').on('data', (d: string) => { err2 += d; });
  const exit2 = await new Promise<number | null>((resolve) => second.on('close', (code) => resolve(code)));
  assert.equal(exit2, 1, `exit code; stderr: ${err2}`);
  assert.match(err2, /^shardchat: STORE_LOCKED: .*in use by process/m);
});

test('a commit that fails (file size limit): the batch gets `unavailable` with retryAfterMs, nothing unacked is kept, every acked message is', async (t) => {
  const sh = requireTool(t, 'sh', 'dash', 'run the CLI under a file size limit');
  if (sh === null) return;
  const dir = tempDir(t);
  // SIGXFSZ ignored, so a write past the limit fails with EFBIG (SQLite: an I/O error) instead of killing the process.
  const child = spawn(sh, ['-c', `trap '' XFSZ; ulimit -f 1200; exec "${process.execPath}" "${CLI}" --port 0 --host 127.0.0.1 --shards 1 --data-dir "${dir}" --rate-per-sec 1000000 --rate-burst 1000000`],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  t.after(async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); await exited; });
  const end = Date.now() + 15_000;
  let port = 0;
  while (port === 0) {
    const line = out.split('\n').find((l) => l.includes('"listening"'));
    if (line !== undefined) port = (JSON.parse(line) as { port: number }).port;
    else if (child.exitCode !== null || Date.now() > end) assert.fail('the cli did not listen');
    else await new Promise((r) => setTimeout(r, 20));
  }
  const c = await TestClient.connect(port, { user: 'filler' });
  t.after(() => c.close());
  assert.equal((await c.request({ t: 'join', room: 'big' })).t, 'joined');
  const pad = 'z'.repeat(2000);
  const acked: number[] = [];
  let refused: Frame | null = null;
  for (let i = 0; i < 3000 && refused === null; i++) {
    const r = await c.request({ t: 'pub', room: 'big', body: { i, pad } }, 10_000);
    if (r.t === 'ack') acked.push(i);
    else if (r.t === 'err' && r.code === 'unavailable') refused = { ...r, i };
    else if (r.t === 'joined') continue;
    else assert.fail(`unexpected reply ${JSON.stringify(r).slice(0, 200)}`);
  }
  assert.ok(refused !== null, 'the file size limit was reached');
  assert.ok(typeof refused.retryAfterMs === 'number' && refused.retryAfterMs > 0, JSON.stringify(refused));
  assert.ok(acked.length > 10, `${acked.length} acked before the limit`);
  // Retries: each is acked (committed) or refused again; each refusal is one shard restart, none other.
  let refusals = 1;
  for (let i = 0; i < 3; i++) {
    const n = 100_000 + i;
    const r = await c.request({ t: 'pub', room: 'big', body: { i: n, pad } }, 10_000);
    if (r.t === 'ack') acked.push(n);
    else { assert.deepEqual([r.t, r.code], ['err', 'unavailable'], JSON.stringify(r).slice(0, 200)); refusals++; }
  }
  const restarts = out.split('\n').filter((l) => l.includes('"shard_restarted"')).length;
  assert.equal(restarts, refusals, 'one shard restart per refused batch');
  child.kill('SIGKILL');
  await exited;

  const again = await startCli(t, dir);
  const r = await TestClient.connect(again.port, { user: 'reader' });
  t.after(() => r.close());
  assert.equal((await r.request({ t: 'join', room: 'big' })).t, 'joined');
  const kept = (await allOf(r, 'big')).map((m) => (m.body as { i: number }).i);
  assert.deepEqual(kept, acked, 'exactly the acked messages are kept, in order (the refused one is not)');
  await stop(again, 'SIGTERM');
});
