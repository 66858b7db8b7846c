/**
 * Reconnect policy: the full-jitter formula's bounds with a seeded random source, and the SDK
 * against tiny `ws` servers that misbehave on purpose: one that accepts, says hello and drops
 * every connection after 50 ms (flapping), one that stays up a while before dropping (the counter
 * resets), one that closes with 1001 or 4008, one that answers a pub with rate_limited.
 *
 * Time is scaled down so the tests run in seconds: base 25 ms and cap 1 s instead of 500 ms and
 * 20 s (1/20), a 3 s window instead of 60 s; the server's 50 ms up-time is not scaled.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket, { WebSocketServer } from 'ws';
import { decode, encode } from '@msgpack/msgpack';
import { ShardchatClient, backoffDelay, seededRandom, type ClientEvents, type ClientOptions } from '../engine/client/index.js';
import { guardHandles } from './helpers/leaks.js';
import { waitFor } from './helpers/client.js';

guardHandles();

test('backoffDelay: every delay within [min(cap, base), min(cap, base + base*2^n)], and the jitter spans that range', () => {
  for (const [base, cap] of [[500, 20_000], [25, 1000], [1000, 1000]] as const) {
    const random = seededRandom(42);
    for (let n = 0; n < 40; n++) {
      const hi = Math.min(cap, base + base * 2 ** n);
      let lo = Infinity, top = 0;
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(n, { baseMs: base, capMs: cap, random });
        assert.ok(d >= Math.min(cap, base) && d <= hi, `n=${n} base=${base} cap=${cap}: ${d}`);
        lo = Math.min(lo, d); top = Math.max(top, d);
      }
      // Full jitter: 200 seeded draws reach both ends of the range (within 5% of its width).
      const width = Math.min(cap, base * 2 ** n);
      if (hi > Math.min(cap, base)) {
        assert.ok(lo - Math.min(cap, base) <= 0.05 * width, `n=${n}: low end reached (${lo})`);
        assert.ok(hi - top <= 0.05 * width || top === cap, `n=${n}: high end reached (${top} of ${hi})`);
      }
    }
  }
  assert.equal(backoffDelay(3, { baseMs: 500, capMs: 20_000, random: () => 0 }), 500);
  assert.equal(backoffDelay(3, { baseMs: 500, capMs: 20_000, random: () => 0.5 }), 500 + 2000);
  assert.equal(backoffDelay(10, { baseMs: 500, capMs: 20_000, random: () => 0.99 }), 20_000);
  const a = seededRandom(9), b = seededRandom(9);
  assert.deepEqual([a(), a(), a()], [b(), b(), b()], 'the same seed gives the same draws');
});

type Behaviour = (ws: WebSocket, frame: Record<string, unknown> | null, n: number) => void;

/** A tiny server: sends hello on every connection, then lets `behaviour` act on it and on each frame. */
async function fakeServer(t: TestContext, behaviour: Behaviour): Promise<{ port: number; opened: number[]; frames: Record<string, unknown>[]; upgrades: { url: string; protocol: string | undefined }[] }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const opened: number[] = [];
  const frames: Record<string, unknown>[] = [];
  const upgrades: { url: string; protocol: string | undefined }[] = [];
  wss.on('connection', (ws, req) => {
    opened.push(Date.now());
    upgrades.push({ url: req.url ?? '', protocol: req.headers['sec-websocket-protocol'] });
    const n = opened.length;
    ws.send(encode({ t: 'hello', conn: `c${n}`, user: 'u', v: 1, limits: { maxFrame: 65536, maxRooms: 100, ratePerSec: 1000, burst: 1000, maxBuffer: 1 << 20 } }));
    ws.on('message', (data) => {
      const f = decode(data as Buffer) as Record<string, unknown>;
      frames.push(f);
      behaviour(ws, f, n);
    });
    behaviour(ws, null, n);
  });
  t.after(async () => {
    for (const c of wss.clients) c.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  });
  return { port: (wss.address() as { port: number }).port, opened, frames, upgrades };
}

function client(t: TestContext, port: number, opts: Partial<ClientOptions>): ShardchatClient {
  const c = new ShardchatClient({ url: `ws://127.0.0.1:${port}/ws`, user: 'u', WebSocket, ...opts });
  t.after(() => c.close());
  return c;
}

/**
 * The most attempts the formula allows in `windowMs`, for the given draws: each cycle lasts at
 * least the server's up-time plus the delay, so counting with exactly those gives an upper bound.
 */
function simulatedBound(seed: number, base: number, cap: number, upMs: number, windowMs: number, resetOnOpen = false): number {
  const random = seededRandom(seed);
  let t = 0, count = 1, n = 0;
  for (;;) {
    t += upMs + backoffDelay(resetOnOpen ? 0 : n++, { baseMs: base, capMs: cap, random });
    if (t > windowMs) return count;
    count++;
  }
}

test('flapping server (hello, then closed after 50 ms): attempts in the window stay within the bound the formula gives', async (t) => {
  const BASE = 25, CAP = 1000, UP = 50, WINDOW = 3000, SEED = 7;
  const srv = await fakeServer(t, (ws, f) => { if (f === null) setTimeout(() => ws.close(4000, 'flap'), UP); });
  const retries: ClientEvents['retry'][] = [];
  const c = client(t, srv.port, { backoffBaseMs: BASE, backoffCapMs: CAP, stableMs: 1000, random: seededRandom(SEED) });
  c.on('retry', (e) => retries.push(e));
  await waitFor(() => srv.opened.length > 0, 'the first connection');
  const first = srv.opened[0]!;
  await waitFor(() => Date.now() - first > WINDOW, 'the window to pass', WINDOW + 1000);
  const inWindow = srv.opened.filter((x) => x - first <= WINDOW).length;
  c.close();
  // 2 ms less per cycle than the server's up-time: timers may fire up to a millisecond early.
  const bound = simulatedBound(SEED, BASE, CAP, UP - 2, WINDOW);
  const hard = 1 + Math.floor(WINDOW / (BASE + UP)); // whatever the draws: every delay >= base
  const resetOnOpen = simulatedBound(SEED, BASE, CAP, UP, WINDOW, true);
  t.diagnostic(`flapping: ${inWindow} attempts in ${WINDOW} ms; formula bound ${bound}, hard bound ${hard}, reset-on-open ~${resetOnOpen}`);
  assert.ok(inWindow >= 3, `it does keep trying (${inWindow})`);
  assert.ok(inWindow <= bound, `${inWindow} attempts in ${WINDOW} ms, bound ${bound} (hard bound ${hard}; a reset-on-open client: ~${resetOnOpen})`);
  assert.ok(bound * 2 < resetOnOpen, `the formula's bound ${bound} is well under what resetting on open gives (${resetOnOpen})`);
  assert.deepEqual(retries.map((r) => r.attempt), retries.map((_, i) => i + 1), 'the counter never resets: no connection stayed up stableMs');
});

test('a connection that stayed up stableMs resets the attempt counter', async (t) => {
  const srv = await fakeServer(t, (ws, f) => { if (f === null) setTimeout(() => ws.close(4000, 'bye'), 150); });
  const retries: number[] = [];
  const c = client(t, srv.port, { backoffBaseMs: 10, backoffCapMs: 50, stableMs: 80, random: seededRandom(3) });
  c.on('retry', (e) => retries.push(e.attempt));
  await waitFor(() => retries.length >= 4, 'four drops', 5000);
  c.close();
  assert.deepEqual(retries.slice(0, 4), [1, 1, 1, 1]);
});

test('after a 1001 the first retry waits base..2*base plus a random 0..shutdownJitterMs; 4008 reconnects and resumes', async (t) => {
  let code = 1001;
  const srv = await fakeServer(t, (ws, f, n) => {
    if (f?.t === 'join') {
      ws.send(encode({ t: 'joined', ref: f.ref, room: f.room, epoch: 'epoch-one', seq: 3, unread: 0, members: 1, ...(f.since === 3 ? { missed: [] } : {}) }));
      if (n <= 2) setTimeout(() => ws.close(code, 'test'), 20);
      code = 4008;
    } else if (f?.t === 'who') ws.send(encode({ t: 'who', ref: f.ref, room: f.room, users: ['u'] }));
  });
  const retries: ClientEvents['retry'][] = [];
  const rooms: ClientEvents['room'][] = [];
  const c = client(t, srv.port, { backoffBaseMs: 20, backoffCapMs: 1000, shutdownJitterMs: 300, random: seededRandom(5) });
  c.on('retry', (e) => retries.push(e));
  c.on('room', (e) => rooms.push(e));
  await c.join('r');
  await waitFor(() => srv.opened.length >= 3 && c.roomState('r') === 'joined' && rooms.filter((r) => r.cause.reason === 'resumed').length >= 2, 'two resumes', 5000);
  const d1001 = retries[0]!.delayMs;
  assert.ok(d1001 >= 20 && d1001 <= 40 + 300, `1001 delay ${d1001}`);
  assert.ok(retries[1]!.delayMs <= 20 + 40, `a 4008 gets no shutdown jitter (${retries[1]!.delayMs})`);
  const joins = srv.frames.filter((f) => f.t === 'join');
  assert.deepEqual(joins.map((j) => [j.since, j.epoch]), [[undefined, undefined], [3, 'epoch-one'], [3, 'epoch-one']], 'rejoins carry since and epoch');
});

test('a pub answered with rate_limited is sent again after retryAfterMs, with the same cid', async (t) => {
  const pubs: { at: number; cid: unknown }[] = [];
  const srv = await fakeServer(t, (ws, f) => {
    if (f?.t === 'join') ws.send(encode({ t: 'joined', ref: f.ref, room: f.room, epoch: 'epoch-one', seq: 0, unread: 0, members: 1 }));
    else if (f?.t === 'who') ws.send(encode({ t: 'who', ref: f.ref, room: f.room, users: ['u'] }));
    else if (f?.t === 'pub') {
      pubs.push({ at: Date.now(), cid: f.cid });
      if (pubs.length === 1) ws.send(encode({ t: 'err', ref: f.ref, code: 'rate_limited', msg: 'slow down', retryAfterMs: 150 }));
      else ws.send(encode({ t: 'ack', ref: f.ref, room: f.room, seq: 1 }));
    }
  });
  const c = client(t, srv.port, {});
  await c.join('r');
  assert.deepEqual(await c.publish('r', 'x'), { seq: 1 });
  assert.equal(pubs.length, 2);
  assert.ok(pubs[1]!.at - pubs[0]!.at >= 140, `resent after ${pubs[1]!.at - pubs[0]!.at} ms`);
  assert.equal(pubs[0]!.cid, pubs[1]!.cid);
  assert.equal(typeof pubs[0]!.cid, 'string');
});

test('a seq at or below the last delivered is never delivered twice, even when the server repeats itself', async (t) => {
  const msg = (room: unknown, seq: number): Record<string, unknown> => ({ t: 'msg', room, seq, from: 'x', body: seq, ts: 1 });
  const srv = await fakeServer(t, (ws, f, n) => {
    if (f?.t === 'who') ws.send(encode({ t: 'who', ref: f.ref, room: f.room, users: ['u'] }));
    if (f?.t !== 'join') return;
    if (n === 1) {
      ws.send(encode({ t: 'joined', ref: f.ref, room: f.room, epoch: 'epoch-one', seq: 3, unread: 0, members: 1 }));
      for (const s of [4, 5, 4]) ws.send(encode(msg(f.room, s)));
      setTimeout(() => ws.close(4000, 'drop'), 30);
    } else {
      // An overlapping `missed` and a repeated live message.
      ws.send(encode({ t: 'joined', ref: f.ref, room: f.room, epoch: 'epoch-one', seq: 6, unread: 0, members: 1, missed: [3, 4, 5, 6].map((s) => msg(f.room, s)) }));
      for (const s of [6, 5, 7]) ws.send(encode(msg(f.room, s)));
    }
  });
  const seqs: number[] = [];
  const c = client(t, srv.port, { backoffBaseMs: 10, backoffCapMs: 50 });
  c.on('message', (m) => seqs.push(m.seq));
  await c.join('r');
  await waitFor(() => seqs.includes(7), 'seq 7', 5000);
  assert.deepEqual(seqs, [4, 5, 6, 7]);
  assert.deepEqual(srv.frames.filter((f) => f.t === 'join').map((j) => j.since), [undefined, 5]);
});

test('getToken is asked before every attempt; the token goes in ?token= (Node) or beside shardchat.v1 as bearer.<token>', async (t) => {
  const srv = await fakeServer(t, (ws, f) => { if (f === null) setTimeout(() => ws.close(4000, 'again'), 20); });
  let n = 0;
  const q = client(t, srv.port, { backoffBaseMs: 10, backoffCapMs: 20, getToken: async () => `tok${++n}` });
  await waitFor(() => srv.upgrades.length >= 3, 'three attempts', 5000);
  q.close();
  assert.deepEqual(srv.upgrades.slice(0, 3).map((u) => [new URL(u.url, 'ws://x').searchParams.get('token'), u.protocol]),
    [['tok1', undefined], ['tok2', undefined], ['tok3', undefined]]);
  const before = srv.upgrades.length;
  const p = client(t, srv.port, { token: 'abc', tokenIn: 'protocol' });
  await waitFor(() => srv.upgrades.length > before, 'the protocol attempt', 5000);
  p.close();
  assert.deepEqual(srv.upgrades[before]!.protocol?.split(',').map((x) => x.trim()), ['shardchat.v1', 'bearer.abc']);
  assert.equal(new URL(srv.upgrades[before]!.url, 'ws://x').searchParams.get('token'), null);
  const failing = client(t, srv.port, { backoffBaseMs: 10, backoffCapMs: 20, getToken: () => { throw new Error('no token'); } });
  const causes: string[] = [];
  failing.on('state', (e) => causes.push(`${e.state}:${e.cause.reason}`));
  await waitFor(() => causes.filter((c) => c === 'disconnected:token').length >= 2, 'token failures retried with back-off', 5000);
  failing.close();
});

test('an unsolicited joined (shard restart, new epoch) raises gap and reloads the latest page, like a resume', async (t) => {
  const msg = (room: unknown, seq: number, body: string): Record<string, unknown> => ({ t: 'msg', room, seq, from: 'x', body, ts: 1 });
  const srv = await fakeServer(t, (ws, f) => {
    if (f?.t === 'who') ws.send(encode({ t: 'who', ref: f.ref, room: f.room, users: ['u'] }));
    if (f?.t === 'join') {
      ws.send(encode({ t: 'joined', ref: f.ref, room: f.room, epoch: 'epoch-one', seq: 2, unread: 0, members: 1 }));
      ws.send(encode(msg(f.room, 3, 'old-3')));
      // The shard restarts: its rooms start again under a new epoch, announced without a ref.
      setTimeout(() => ws.send(encode({ t: 'joined', room: f.room, epoch: 'epoch-two', seq: 0, unread: 0, members: 1 })), 20);
    }
    if (f?.t === 'hist') {
      ws.send(encode(msg('r', 1, 'live-1'))); // arrives before the page: held until the page is in
      ws.send(encode({ t: 'hist', ref: f.ref, room: f.room, msgs: [] }));
    }
  });
  const log: string[] = [];
  const c = client(t, srv.port, {});
  c.on('message', (m) => log.push(`${m.seq}:${String(m.body)}`));
  c.on('gap', (g) => log.push(`gap:${g.reason}:${g.epoch}`));
  await c.join('r');
  await waitFor(() => log.includes('1:live-1'), 'the new epoch live message', 5000);
  assert.deepEqual(log, ['3:old-3', 'gap:epoch:epoch-two', '1:live-1']);
  const hist = srv.frames.find((f) => f.t === 'hist');
  assert.equal(hist?.before, 1, 'the page asked for is the latest of the new epoch');
  assert.equal(c.roomState('r'), 'joined');
});
