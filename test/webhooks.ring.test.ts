/**
 * Webhook events and a full outbound ring (issue 14): an event that finds the shard's outbound
 * ring full waits in the shard's bounded queue and goes out before any new output, so none is
 * lost below the queue's bound; past it, the drop counter counts exactly the events lost.
 * First on the shard's own Handler over a real 64 KiB ring, the reader held back by the test;
 * then through a REAL engine with 64 KiB rings and a real HTTP receiver on 127.0.0.1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { decode, encode } from '@msgpack/msgpack';
import { guardHandles } from './helpers/leaks.js';
import { joinRoom, openClient, startEngine } from './helpers/engine.js';
import { waitFor, type Frame } from './helpers/client.js';
import { HANDLER_OPTS, inClose, inFrame } from './helpers/handler.js';
import { Handler, type HandlerOptions } from '../workers/handler.js';
import { RingReader, RingWriter, createRing } from '../engine/ring/index.js';
import { seededRandom } from '../engine/client/backoff.js';
import { OUT_BODY, OUT_EVENT } from '../engine/protocol/records.js';

guardHandles();

const SECRET = 'webhook-secret-for-tests';

/** A Handler with webhooks on over a 64 KiB outbound ring whose reader the test drives. */
class Bench {
  readonly out: RingWriter;
  readonly reader: RingReader;
  readonly h: Handler;
  /** The OUT_EVENT records read so far, decoded, in ring order. */
  readonly events: Frame[] = [];
  /** Times a record had to wait for the reader (the ring was full). */
  waits = 0;

  constructor(opts: Partial<HandlerOptions> = {}) {
    const sab = createRing(1 << 16);
    this.out = new RingWriter(sab);
    this.reader = new RingReader(sab);
    this.h = new Handler(this.out, { ...HANDLER_OPTS, maxHistBytes: 16 << 10, events: true, ...opts });
  }

  /** Reads everything published, keeping the events. */
  consume(): void {
    this.out.publish();
    const r = this.reader;
    while (r.next() >= 0) {
      if (r.bytes[r.offset] === OUT_EVENT) {
        const rec = r.bytes.slice(r.offset, r.offset + r.length);
        this.events.push(decode(rec.subarray(OUT_BODY, rec.byteLength - rec[1]!)) as Frame);
      }
      r.release();
    }
    r.syncRead();
  }

  /** Handles a record as the shard loop does, except that the reader runs only when the handler must wait. */
  handle(rec: Uint8Array): void {
    for (let tries = 0; this.h.handle(rec, 0, rec.byteLength) > 0; tries++) {
      assert.ok(tries < 2, 'a record fits once the ring was read');
      this.waits++;
      this.consume();
    }
    this.out.publish();
  }

  /** The end of a batch: what is left waiting goes out as the reader frees room. */
  finish(): void {
    while (this.h.flushEvents() > 0) this.consume();
    this.consume();
  }
}

/** A pub of a body of `size` bytes of padding: sizes vary so records end at every ring position. */
const pub = (conn: number, room: string, n: number, size: number): Uint8Array => inFrame(conn, encode({ t: 'pub', room, body: { n, pad: 'x'.repeat(size) } }));
const join = (conn: number, room: string, user: string): Uint8Array => inFrame(conn, encode({ t: 'join', room }), user);

test('shard: events that find the outbound ring full wait and go out in order, none dropped', (t) => {
  const b = new Bench();
  t.after(() => b.h.rooms.dispose());
  const rnd = seededRandom(14);
  b.handle(join(1, 'burst', 'alice'));
  let queuedSeen = 0;
  const N = 3000;
  for (let i = 1; i <= N; i++) {
    b.handle(pub(1, 'burst', i, 1 + Math.floor(rnd() * 6000)));
    if (b.h.eventQueue!.pending > 0) queuedSeen++;
  }
  b.handle(inClose(1));
  b.finish();
  assert.ok(b.waits > 100, `the ring was full again and again (${b.waits} waits)`);
  assert.ok(queuedSeen > 0, `some events found the ring full and waited (${queuedSeen} times)`);
  assert.equal(b.h.eventQueue!.dropped, 0);
  assert.deepEqual(b.events.map((e) => e.type), ['room.occupied', 'member.joined', ...Array<string>(N).fill('message.published'), 'member.left', 'room.vacated']);
  assert.deepEqual(b.events.filter((e) => e.type === 'message.published').map((e) => e.seq), Array.from({ length: N }, (_, i) => i + 1));
});

test('shard: past the queue bound, the drop counter counts exactly the events lost', (t) => {
  // A bound of 0: every event that finds the ring full is past it (what the shard did before it had a queue).
  const b = new Bench({ eventQueueEntries: 0 });
  t.after(() => b.h.rooms.dispose());
  const rnd = seededRandom(14);
  b.handle(join(1, 'burst', 'alice'));
  const N = 3000;
  let expected = 2;
  for (let i = 1; i <= N; i++) {
    b.handle(pub(1, 'burst', i, 1 + Math.floor(rnd() * 6000)));
    b.handle(join(100 + i, `room-${i}`, `user${i}`));
    expected += 3;
  }
  b.finish();
  const dropped = b.h.eventQueue!.dropped;
  assert.ok(dropped > 0, 'the bound was passed');
  assert.equal(b.events.length + dropped, expected, `seen ${b.events.length} + dropped ${dropped} = every event made`);
  // The events that did come are in order: message seqs only go up.
  const seqs = b.events.filter((e) => e.type === 'message.published').map((e) => e.seq as number);
  assert.ok(seqs.every((q, i) => i === 0 || q > seqs[i - 1]!));
});

test('engine: a burst that fills 64 KiB outbound rings still delivers every webhook event to a real receiver', async (t) => {
  const got: Frame[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push(...(JSON.parse(Buffer.concat(chunks).toString()) as { events: Frame[] }).events);
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const port = (server.address() as { port: number }).port;
  const engine = await startEngine(t, {
    shards: 1, ringBytes: 1 << 16, maxFrameBytes: 16 << 10, maxHistBytes: 16 << 10,
    webhookUrl: `http://127.0.0.1:${port}/hook`, webhookSecret: SECRET, webhookBatchMs: 20, webhookBatchMax: 500,
  });
  const members = await Promise.all(['m1', 'm2', 'm3'].map((u) => openClient(t, engine, u)));
  for (const m of members) await joinRoom(m, 'burst-room');
  const sender = members[0]!;
  const acked: number[] = [];
  const waits = (): number => engine.stats().shards.reduce((a, s) => a + Number(s.outboundWaits), 0);
  // Bursts until the shard has had to wait for outbound room (bounded: 10 bursts of 300).
  for (let burst = 0; burst < 10 && waits() === 0; burst++) {
    const replies = await Promise.all(Array.from({ length: 300 }, (_, i) => sender.request({ t: 'pub', room: 'burst-room', body: { i, pad: 'y'.repeat(3000) } }, 10_000)));
    for (const r of replies) if (r.t === 'ack') acked.push(r.seq as number);
  }
  assert.ok(waits() > 0, 'the outbound ring filled: the shard waited for room');
  assert.ok(acked.length > 0);
  await waitFor(() => acked.every((s) => got.some((e) => e.type === 'message.published' && e.seq === s)), `all ${acked.length} acked messages delivered as events`, 20_000);
  const ids = got.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, 'each event delivered once');
  const metrics = await new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: engine.port, path: '/metrics', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { res.socket?.destroy(); resolve(Buffer.concat(chunks).toString()); });
    }).on('error', reject);
  });
  assert.match(metrics, /shardchat_webhook_events_total\{outcome="dropped_shard_ring"\} 0\n/);
});

test('shard: a join\'s events never take the room its planned `joined` needs (the old order threw "outbound ring refused")', (t) => {
  // Before: room.occupied and member.joined were written between the join's presence and its
  // `joined`; with short user ids and long room names (events smaller than `joined`, together
  // larger) a nearly full ring let them in and the `joined` reserve then failed: a shard crash.
  // The same records on the old handler (c46f39b) threw within these 20,000 steps.
  const b = new Bench({ eventQueueEntries: 0 });
  t.after(() => b.h.rooms.dispose());
  let seed = 7;
  const rnd = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff; };
  b.handle(join(1, 'f', 'alice'));
  for (let i = 1; i <= 20_000; i++) {
    b.handle(inFrame(1, encode({ t: 'pub', room: 'f', body: 'x'.repeat(1 + Math.floor(rnd() * 3000)) })));
    b.handle(join(100 + i, `room-${i}-${'q'.repeat(20)}`, `u${i}`));
    if (i % 2000 === 0) b.events.length = 0; // keep the test's own memory small
  }
  b.finish();
  assert.equal(b.h.rooms.rooms.size, 20_001);
});
