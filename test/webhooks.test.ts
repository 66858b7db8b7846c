/**
 * The webhook sender against a real HTTP receiver on 127.0.0.1 port 0: retries (500, 500, then
 * 200: delivered once, ids stable, signature verifies, retry timing within bounds), batching,
 * bounded queue, give-up, 4xx, close() within its deadline, and no handle left behind.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { guardHandles } from './helpers/leaks.js';
import { waitFor } from './helpers/client.js';
import { WebhookSender, signBody, verifySignature, type WebhookEvent, type WebhookOptions } from '../engine/server/webhooks.js';

guardHandles();

const SECRET = 'webhook-secret-0123456789';
/** How late a timer may fire on a loaded 2-core machine before a timing bound fails. */
const SLACK_MS = 2000;

interface Received { at: number; signature: string; body: string; status: number }

/** A receiver answering the scripted statuses in turn (the last one repeats; 0 = never answer). */
async function receiver(t: TestContext, statuses: number[]): Promise<{ url: string; got: Received[] }> {
  const got: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const status = statuses[Math.min(got.length, statuses.length - 1)]!;
      got.push({ at: Date.now(), signature: String(req.headers['x-shardchat-signature']), body: Buffer.concat(chunks).toString(), status });
      if (status !== 0) res.writeHead(status).end(status === 200 ? 'ok' : 'no');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`, got };
}

function sender(t: TestContext, opts: Omit<WebhookOptions, 'secret'> & { secret?: string }): WebhookSender {
  const s = new WebhookSender({ secret: SECRET, ...opts });
  t.after(() => s.close(1000));
  return s;
}

const msg = (seq: number, body: unknown = { text: `m${seq}` }): WebhookEvent =>
  ({ type: 'message.published', room: 'team-1:general', epoch: 'ep0000001', seq, ts: 1_700_000_000_000 + seq, from: 'alice', body });

test('500, 500, then 200: delivered once, same ids in every attempt, signed, retries on the back-off schedule', async (t) => {
  const r = await receiver(t, [500, 500, 200]);
  const base = 200;
  const s = sender(t, { url: r.url, batchMs: 10, retryBaseMs: base });
  assert.ok(s.emit(msg(7)));
  assert.ok(s.emit({ type: 'member.joined', room: 'team-1:general', user: 'bob', conn: 'c1', ts: 1 }));
  assert.ok(s.emit({ type: 'room.vacated', room: 'team-1:general', ts: 2 }));
  await waitFor(() => s.stats().delivered === 3, 'delivery', 10_000);
  assert.equal(r.got.length, 3, 'exactly three attempts');
  assert.equal(r.got.filter((g) => g.status === 200).length, 1, 'delivered once');
  assert.equal(r.got[1]!.body, r.got[0]!.body, 'a retry sends the same events with the same ids');
  assert.equal(r.got[2]!.body, r.got[0]!.body);
  const events = (JSON.parse(r.got[2]!.body) as { events: Record<string, unknown>[] }).events;
  assert.deepEqual(events.map((e) => e.type), ['message.published', 'member.joined', 'room.vacated']);
  assert.equal(events[0]!.id, 'team-1:general:ep0000001:7', 'message id is room:epoch:seq');
  assert.deepEqual(events[0]!.body, { text: 'm7' });
  assert.equal(new Set(events.map((e) => e.id)).size, 3, 'ids are distinct');
  for (const g of r.got) {
    assert.match(g.signature, /^t=\d+,v1=[0-9a-f]{64}$/);
    assert.deepEqual(verifySignature(SECRET, g.signature, g.body).ok, true, 'signature verifies');
    assert.deepEqual(verifySignature('another-secret-123456', g.signature, g.body), { ok: false, reason: 'mismatch' });
    assert.deepEqual(verifySignature(SECRET, g.signature, `${g.body} `), { ok: false, reason: 'mismatch' });
  }
  // First retry after 0.5..1 x base, the second after 1..2 x base. Never earlier; later only by
  // the scheduling delay of a loaded machine (SLACK_MS: this 2-core box runs ~7 builds at once).
  const gap1 = r.got[1]!.at - r.got[0]!.at;
  const gap2 = r.got[2]!.at - r.got[1]!.at;
  assert.ok(gap1 >= base / 2 - 5 && gap1 <= base + SLACK_MS, `first retry after ${gap1} ms`);
  assert.ok(gap2 >= base - 5 && gap2 <= 2 * base + SLACK_MS, `second retry after ${gap2} ms`);
  const st = s.stats();
  assert.deepEqual([st.attempts, st.failedAttempts, st.batches, st.queued, st.inFlight], [3, 2, 1, 0, 0]);
  assert.deepEqual(st.dropped, { overflow: 0, expired: 0, rejected: 0, shutdown: 0 });
});

test('the default back-off sends the first retry within a second', async (t) => {
  const r = await receiver(t, [503, 200]);
  const s = sender(t, { url: r.url, batchMs: 0 });
  s.emit(msg(1));
  await waitFor(() => s.stats().delivered === 1, 'delivery', 5000);
  const gap = r.got[1]!.at - r.got[0]!.at;
  assert.ok(gap >= 495 && gap <= 1000 + SLACK_MS, `first retry after ${gap} ms (default retryBaseMs 1000: 500..1000 ms)`);
});

test('batches by count at once, by time otherwise; close() flushes the rest', async (t) => {
  const r = await receiver(t, [200]);
  const s = sender(t, { url: r.url, batchMax: 5, batchMs: 60_000 });
  const t0 = Date.now();
  for (let i = 1; i <= 12; i++) s.emit(msg(i));
  await waitFor(() => s.stats().delivered === 10, 'two full batches', 3000);
  assert.ok(Date.now() - t0 < 5000, 'full batches did not wait for batchMs');
  assert.equal(s.stats().queued, 2);
  await s.close(2000);
  const seqs = r.got.flatMap((g) => (JSON.parse(g.body) as { events: { seq: number }[] }).events.map((e) => e.seq));
  assert.deepEqual(seqs, Array.from({ length: 12 }, (_, i) => i + 1), 'all events, in order');
  assert.deepEqual(r.got.map((g) => (JSON.parse(g.body) as { events: unknown[] }).events.length), [5, 5, 2]);
  assert.equal(s.emit(msg(13)), false, 'emit after close is refused');
  assert.equal(s.stats().dropped.shutdown, 1);

  const r2 = await receiver(t, [200]);
  const timed = sender(t, { url: r2.url, batchMs: 150 });
  const t1 = Date.now();
  timed.emit(msg(1));
  timed.emit(msg(2));
  await waitFor(() => timed.stats().delivered === 2, 'timed batch', 3000);
  assert.equal(r2.got.length, 1, 'one POST for both');
  assert.ok(r2.got[0]!.at - t1 >= 140, `sent after ${r2.got[0]!.at - t1} ms, not before batchMs`);
});

test('the queue is bounded in entries and bytes; overflow is dropped and counted', async (t) => {
  const r = await receiver(t, [200]);
  const s = sender(t, { url: r.url, batchMs: 60_000, queueEntries: 5 });
  const results = Array.from({ length: 8 }, (_, i) => s.emit(msg(i)));
  assert.deepEqual(results, [true, true, true, true, true, false, false, false]);
  assert.equal(s.stats().dropped.overflow, 3);
  assert.equal(s.stats().queued, 5);

  const b = sender(t, { url: r.url, batchMs: 60_000, queueBytes: 4096 });
  let kept = 0;
  for (let i = 0; i < 10; i++) if (b.emit(msg(i, 'x'.repeat(1000)))) kept++;
  assert.ok(kept >= 3 && kept <= 4, `kept ${kept}`);
  assert.ok(b.stats().queuedBytes <= 4096);
  assert.equal(b.stats().dropped.overflow, 10 - kept);
  await Promise.all([s.close(2000), b.close(2000)]);
  assert.equal(s.stats().delivered + b.stats().delivered, 5 + kept, 'what was accepted was delivered on close');
});

test('a receiver that keeps failing: the batch is given up after retryForMs and counted; a 4xx is not retried', async (t) => {
  const r = await receiver(t, [500]);
  const s = sender(t, { url: r.url, batchMs: 0, retryBaseMs: 20, retryMaxMs: 40, retryForMs: 300 });
  s.emit(msg(1));
  s.emit(msg(2));
  await waitFor(() => s.stats().dropped.expired === 2, 'give-up', 5000);
  const attempts = s.stats().attempts;
  assert.ok(attempts >= 3 && attempts <= 40, `${attempts} attempts in 300 ms`);
  assert.equal(s.stats().delivered, 0);

  const r4 = await receiver(t, [400]);
  const s4 = sender(t, { url: r4.url, batchMs: 0 });
  s4.emit(msg(1));
  await waitFor(() => s4.stats().dropped.rejected === 1, 'rejected', 3000);
  assert.equal(r4.got.length, 1, 'a 400 is not retried');
});

test('close() against a receiver that never answers ends at its deadline and leaves no handle', async (t) => {
  const r = await receiver(t, [0]);
  const s = new WebhookSender({ secret: SECRET, url: r.url, batchMs: 0, timeoutMs: 60_000 });
  s.emit(msg(1));
  await waitFor(() => r.got.length === 1, 'the request arrived', 3000);
  s.emit(msg(2));
  const t0 = Date.now();
  await s.close(200);
  const took = Date.now() - t0;
  assert.ok(took >= 190 && took < 200 + SLACK_MS, `close took ${took} ms`);
  assert.equal(s.stats().dropped.shutdown, 2, 'what was not delivered is counted');
  await s.close(); // twice is fine
});

test('bodies with bytes and big integers serialise; a cycle is a TypeError', async (t) => {
  const r = await receiver(t, [200]);
  const s = sender(t, { url: r.url, batchMs: 0 });
  s.emit(msg(1, { bin: new Uint8Array([1, 2, 3]), big: 2n ** 70n, small: 5n, buf: Buffer.from('hi') }));
  await waitFor(() => s.stats().delivered === 1, 'delivery', 3000);
  const e = (JSON.parse(r.got[0]!.body) as { events: { body: unknown }[] }).events[0]!;
  assert.deepEqual(e.body, { bin: { $base64: 'AQID' }, big: (2n ** 70n).toString(), small: 5, buf: { $base64: 'aGk=' } });
  const cyc: Record<string, unknown> = {};
  cyc.self = cyc;
  assert.throws(() => s.emit(msg(2, cyc)), /TypeError|cannot be serialised/);
});

test('verifySignature(): malformed, missing, stale, rotated secrets, bytes or string bodies', () => {
  const body = '{"events":[]}';
  const now = 1_800_000_000;
  const h = signBody(SECRET, body, now);
  assert.deepEqual(verifySignature(SECRET, h, body, 300, now), { ok: true, t: now });
  assert.deepEqual(verifySignature(SECRET, h, Buffer.from(body), 300, now + 300), { ok: true, t: now });
  assert.deepEqual(verifySignature(SECRET, h, body, 300, now + 301), { ok: false, reason: 'stale' });
  assert.deepEqual(verifySignature(SECRET, h, body, 300, now - 301), { ok: false, reason: 'stale' });
  assert.deepEqual(verifySignature(SECRET, undefined, body), { ok: false, reason: 'missing' });
  for (const bad of ['t=1', 'v1=' + 'a'.repeat(64), `t=x,v1=${'a'.repeat(64)}`, `t=${now},v1=abc`, 'garbage', `t=${now},t=${now},v1=${'a'.repeat(64)}`]) {
    assert.deepEqual(verifySignature(SECRET, bad, body, 300, now), { ok: false, reason: 'malformed' }, bad);
  }
  // Rotation: signed with the old and the new secret; a receiver knowing either accepts.
  const old = signBody('old-secret-0123456789', body, now);
  const both = `${h},v1=${old.split('v1=')[1]}`;
  assert.equal(verifySignature('old-secret-0123456789', both, body, 300, now).ok, true);
  assert.equal(verifySignature(SECRET, both, body, 300, now).ok, true);
  assert.equal(verifySignature(SECRET, `${h},v2=future`, body, 300, now).ok, true, 'unknown schemes are ignored');
});

test('webhook options are validated, naming the option', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ secret: SECRET }, /options\.webhookUrl is required/],
    [{ url: 'http://127.0.0.1:1/' }, /options\.webhookSecret is required/],
    [{ url: 'ftp://x/', secret: SECRET }, /options\.webhookUrl must be http or https/],
    [{ url: 'nope', secret: SECRET }, /options\.webhookUrl must be a URL/],
    [{ url: 'http://x/', secret: 'short' }, /options\.webhookSecret must be at least 16 bytes/],
    [{ url: 'http://x/', secret: SECRET, batchMax: 0 }, /options\.webhookBatchMax must be between 1 and 10000/],
    [{ url: 'http://x/', secret: SECRET, queueBytes: 1.5 }, /options\.webhookQueueBytes must be an integer/],
    [{ url: 'http://x/', secret: SECRET, retryBaseMs: 5000, retryMaxMs: 100 }, /options\.webhookRetryMaxMs must be at least/],
  ];
  for (const [o, re] of cases) assert.throws(() => new WebhookSender(o as unknown as WebhookOptions), re, JSON.stringify(o));
});
