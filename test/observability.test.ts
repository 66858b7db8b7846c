/**
 * Observability: after a known workload against a real engine, /metrics (scraped with a real
 * HTTP client) shows exactly what was sent; /metrics can move to its own port; the CLI's logs are
 * JSON lines with the lifecycle events and never a message body.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { createEngine, type Engine, type EngineOptions } from '../engine/index.js';
import { guardHandles } from './helpers/leaks.js';
import { TestClient, httpGet, waitFor } from './helpers/client.js';
import { prettyLine } from '../engine/server/log.js';

guardHandles();

async function start(t: TestContext, opts: EngineOptions = {}): Promise<Engine> {
  const e = await createEngine({ port: 0, host: '127.0.0.1', shards: 2, logLevel: 'silent', ratePerSec: 1e6, rateBurst: 1e6,
    roomCreateRate: 1e6, roomCreateBurst: 1e6, ...opts });
  t.after(() => e.close());
  await e.listen();
  return e;
}

async function client(t: TestContext, port: number, user: string): Promise<TestClient> {
  const c = await TestClient.connect(port, { user });
  t.after(() => c.close());
  return c;
}

/** The value of one sample line `name{labels} value` (labels matched exactly), or undefined. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

test('/metrics counters equal a known workload', async (t) => {
  const e = await start(t);
  const a = await client(t, e.port, 'alice');
  const b = await client(t, e.port, 'bob');
  const room = 'metrics-room';
  const shard = e.shardOf(room);
  await a.request({ t: 'join', room });
  await b.request({ t: 'join', room });
  const N = 25;
  for (let i = 0; i < N; i++) await a.request({ t: 'pub', room, body: { i } });
  await a.request({ t: 'pub', room: 'not-joined', body: 1 }); // not_joined
  await a.request({ t: 'nope', room }); // unknown_type
  await waitFor(() => b.framesOf('msg', room).length === N, `bob received ${N} msgs`);
  // Shard counters are published once per batch: wait for them to reach the workload.
  await waitFor(() => Number(e.stats().shards[shard]!.published) === N, 'shard published count');
  // A shard publishes its err counters just after the batch's replies: the reply can be here first.
  await waitFor(() => e.metricsSnapshot().errors.get('not_joined') === 1, 'the not_joined err counted');
  const res = await httpGet(e.port, '/metrics');
  assert.equal(res.status, 200);
  const m = res.body;
  // Frames: 2 joins + N pubs + 1 not_joined pub + 1 unknown type.
  assert.equal(sample(m, 'shardchat_messages_received_total'), 2 + N + 2);
  assert.equal(sample(m, `shardchat_messages_published_total{shard="${shard}"}`), N);
  assert.equal(sample(m, `shardchat_messages_delivered_total{shard="${shard}"}`), 2 * N, 'two members at each publish');
  assert.equal(sample(m, 'shardchat_errors_total{code="not_joined"}'), 1);
  assert.equal(sample(m, 'shardchat_errors_total{code="unknown_type"}'), 1);
  assert.equal(sample(m, 'shardchat_connections'), 2);
  assert.equal(sample(m, 'shardchat_connections_opened_total'), 2);
  assert.equal(sample(m, `shardchat_members{shard="${shard}"}`), 2);
  assert.equal(sample(m, `shardchat_rooms{shard="${shard}"}`), 1);
  assert.equal(sample(m, `shardchat_shard_up{shard="${shard}"}`), 1);
  assert.equal(sample(m, `shardchat_shard_restarts_total{shard="${shard}"}`), 0);
  const fanouts = sample(m, 'shardchat_publish_fanout_seconds_count');
  assert.ok(fanouts !== undefined && fanouts >= 1 && fanouts <= N, `sampled fan-out latencies: ${fanouts}`);
  assert.ok((sample(m, 'process_cpu_user_seconds_total') ?? -1) >= 0, 'default process metrics are there');
  const hw = sample(m, `shardchat_ring_high_water_bytes{shard="${shard}",direction="inbound"}`);
  assert.ok(hw !== undefined && hw > 0, `inbound high-water ${hw}`);
  // stats() and /metrics read the same numbers.
  assert.equal(e.stats().connections, 2);
  await b.close();
  await waitFor(() => e.stats().connections === 1, 'bob gone');
  const after = (await httpGet(e.port, '/metrics')).body;
  assert.equal(sample(after, 'shardchat_connections'), 1);
  const closed = after.split('\n').filter((l) => l.startsWith('shardchat_connections_closed_total{'));
  assert.equal(closed.reduce((n, l) => n + Number(l.split(' ')[1]), 0), 1, closed.join('\n'));
});

test('/metrics on its own port and host when asked', async (t) => {
  const e = await start(t, { metricsPort: 0, metricsHost: '127.0.0.1' });
  assert.ok(e.metricsPort > 0 && e.metricsPort !== e.port);
  const own = await httpGet(e.metricsPort, '/metrics');
  assert.equal(own.status, 200);
  assert.ok(own.body.includes('shardchat_connections 0'));
  const main = await httpGet(e.port, '/metrics');
  assert.equal(main.status, 404, 'not on the main port any more');
  assert.equal((await httpGet(e.port, '/healthz')).status, 200);
  assert.equal((await httpGet(e.port, '/readyz')).status, 200);
});

test('CLI logs: JSON lines with lifecycle events and fields, never a body', async () => {
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../engine/cli.js');
  const child = spawn(process.execPath, [cli, '--port', '0', '--host', '127.0.0.1', '--store', 'memory', '--shards', '2', '--rate-per-sec', '1', '--rate-burst', '2'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'info' } });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  try {
    await waitFor(() => out.includes('"listening"'), 'listening line', 10_000);
    const port = (JSON.parse(out.split('\n').find((l) => l.includes('"listening"'))!) as { port: number }).port;
    const c = await TestClient.connect(port, { user: 'logger' });
    await c.request({ t: 'join', room: 'logs' });
    await c.request({ t: 'pub', room: 'logs', body: 'SECRET-BODY-7f3a' });
    // Burst 2 is spent: the next frames are rate limited; the limit is logged once per interval.
    for (let i = 0; i < 5; i++) c.send({ t: 'pub', room: 'logs', body: 'SECRET-BODY-7f3a' });
    await c.next((f) => f.code === 'rate_limited');
    child.kill('SIGTERM');
    await c.waitClosed(10_000);
    assert.equal(await exited, 0);
  } finally {
    if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
  }
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  const logs = lines.map((l) => JSON.parse(l) as Record<string, unknown>); // every line is JSON
  const events = logs.map((l) => l.event);
  for (const ev of ['shard_started', 'listening', 'signal', 'drain_started', 'drain_finished']) {
    assert.ok(events.includes(ev), `log has ${ev}: ${events.join(', ')}`);
  }
  assert.ok(!events.includes('drain_forced'), 'a drain well inside its deadline is not reported as forced');
  const limits = logs.filter((l) => l.event === 'limit_hit');
  assert.equal(limits.length, 1, 'a connection hitting the limit is logged once per interval');
  assert.equal(limits[0]!.user, 'logger');
  assert.ok(typeof limits[0]!.conn === 'string');
  for (const l of logs) assert.equal(typeof l.level, 'number');
  assert.ok(!out.includes('SECRET-BODY-7f3a'), 'no message body in the logs');
});

test('pretty log lines: time, level, message, then the fields', () => {
  const line = prettyLine(JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 2, 3, 4, 5, 678), name: 'shardchat', event: 'limit_hit', conn: 'c1', msg: 'connection hit a limit' }));
  assert.equal(line, '03:04:05.678 WARN  connection hit a limit event=limit_hit conn=c1\n');
  assert.equal(prettyLine('not json'), 'not json');
});
