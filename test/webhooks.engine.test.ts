/**
 * Webhooks wired into a REAL engine (issue 14): a client joins, publishes and leaves; a real
 * HTTP receiver on 127.0.0.1 answers 500, 500, then 200. Every event is delivered once (among
 * the 2xx-answered requests), the retried body carries the same ids, every signature verifies,
 * the message id is room:epoch:seq, and /metrics counts the deliveries.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac } from 'node:crypto';
import { guardHandles } from './helpers/leaks.js';
import { joinRoom, openClient, pubTo, startEngine } from './helpers/engine.js';
import { httpGet, waitFor } from './helpers/client.js';
import { verifySignature } from '../engine/server/webhook-signature.js';
import { resolveOptions } from '../engine/index.js';

guardHandles();

const SECRET = 'webhook-secret-for-tests';

interface Got { status: number; raw: Buffer; signature: string; events: Record<string, unknown>[] }

test('events reach a receiver that answers 500, 500, 200: delivered once, same ids on retry, signed, counted', async (t) => {
  const got: Got[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const status = got.length < 2 ? 500 : 200;
      got.push({ status, raw, signature: String(req.headers['x-shardchat-signature']), events: (JSON.parse(raw.toString()) as { events: Record<string, unknown>[] }).events });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const port = (server.address() as { port: number }).port;
  const engine = await startEngine(t, {
    webhookUrl: `http://127.0.0.1:${port}/hook`, webhookSecret: SECRET, webhookBatchMs: 20, webhookRetryBaseMs: 50, webhookRetryMaxMs: 200,
  });
  const alice = await openClient(t, engine, 'alice');
  const joined = await joinRoom(alice, 'hook-room');
  const ack = await pubTo(alice, 'hook-room', { text: 'hi' });
  assert.equal((await alice.request({ t: 'leave', room: 'hook-room' })).t, 'left');

  const delivered = (): Record<string, unknown>[] => got.filter((g) => g.status === 200).flatMap((g) => g.events);
  const want = ['room.occupied', 'member.joined', 'message.published', 'member.left', 'room.vacated'];
  await waitFor(() => want.every((w) => delivered().some((e) => e.type === w)), `all of ${want.join(', ')} delivered`, 10_000);

  assert.deepEqual(got.slice(0, 3).map((g) => g.status), [500, 500, 200]);
  const ids = (g: Got): unknown[] => g.events.map((e) => e.id);
  assert.deepEqual(ids(got[1]!), ids(got[0]!), 'a retry carries the same events and ids');
  assert.deepEqual(ids(got[2]!), ids(got[0]!));
  const all = delivered();
  assert.deepEqual(all.map((e) => e.type), want, 'each event delivered once, in order');
  assert.equal(new Set(all.map((e) => e.id)).size, all.length, 'ids are unique');
  const msg = all.find((e) => e.type === 'message.published')!;
  assert.equal(msg.id, `hook-room:${String(joined.epoch)}:${String(ack.seq)}`);
  assert.deepEqual([msg.room, msg.from, msg.seq, msg.epoch], ['hook-room', 'alice', ack.seq, joined.epoch]);
  assert.deepEqual(msg.body, { text: 'hi' });
  assert.equal(typeof msg.ts, 'number');
  const member = all.find((e) => e.type === 'member.joined')!;
  assert.deepEqual([member.room, member.user, member.conn], ['hook-room', 'alice', alice.hello?.conn]);
  for (const g of got) assert.equal(verifySignature(SECRET, g.signature, g.raw, 300).ok, true, 'every attempt is signed');
  // The documented format, computed here by hand: t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, t + "." + body)>.
  for (const g of got) {
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(g.signature);
    assert.ok(m, `header as documented: ${g.signature}`);
    assert.ok(Math.abs(Number(m[1]) - Date.now() / 1000) < 60, 't is now, in seconds');
    assert.equal(m[2], createHmac('sha256', SECRET).update(`${m[1]}.`).update(g.raw).digest('hex'));
  }

  const metrics = await httpGet(engine.port, '/metrics');
  assert.match(metrics.body, /shardchat_webhook_events_total\{outcome="delivered"\} 5/);
  assert.match(metrics.body, /shardchat_webhook_requests_total\{result="failed"\} 2/);
});

test('webhook options: the URL turns them on, the secret is required, other options need the URL', () => {
  assert.equal(resolveOptions({}).webhooks, null);
  assert.throws(() => resolveOptions({ webhookUrl: 'http://127.0.0.1:1/x' }), /webhookSecret is required/);
  assert.throws(() => resolveOptions({ webhookBatchMax: 5 }), /webhookBatchMax needs webhookUrl/);
  assert.equal(resolveOptions({ webhookUrl: 'http://127.0.0.1:1/x', webhookSecret: SECRET, webhookBatchMax: 5 }).webhooks?.batchMax, 5);
});
