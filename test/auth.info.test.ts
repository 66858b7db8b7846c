/**
 * The identity's `info` (issue 14) through a REAL engine with real jose-signed tokens: shown in
 * `presence` joins, in `who` replies and in the HTTP API's `presence`; the latest join's info is
 * the one shown; a token (or hook result) whose info passes maxInfoBytes is a 401 `invalid`
 * whose body says why; a shard restart replays the info with the join. The shard's info budget
 * is checked on the shard's own Handler over a real ring.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { encode } from '@msgpack/msgpack';
import { SignJWT } from 'jose';
import { guardHandles } from './helpers/leaks.js';
import { apiPost, type ApiReply } from './helpers/api.js';
import { joinRoom, openClient, startEngine } from './helpers/engine.js';
import { TestClient, decode, waitFor, type Frame } from './helpers/client.js';
import { inFrame, outBody, ShardBench } from './helpers/handler.js';
import { INFO_ENTRY_OVERHEAD } from '../workers/rooms.js';
import { IN_FRAME_BODY, IN_FRAME_INFO, putU32 } from '../engine/protocol/records.js';
import { resolveOptions } from '../engine/index.js';

guardHandles();

const SECRET = 'a-test-secret-of-at-least-32-bytes!!';
const KEY = 'an-api-key-for-tests-0123456789';
const nowSec = (): number => Math.floor(Date.now() / 1000);
const hs = (claims: Record<string, unknown>): Promise<string> =>
  new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET));

const post = (port: number, method: string, body: unknown): Promise<ApiReply> => apiPost(port, method, body, KEY);

/** The HTTP answer to an upgrade that is refused (status and body text). */
function refusedUpgrade(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({
      host: '127.0.0.1', port, path, agent: false,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { res.socket?.destroy(); resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }); });
    });
    req.on('upgrade', (_res, socket) => { socket.destroy(); reject(new Error(`${path} was upgraded`)); });
    req.on('error', reject);
  });
}

const withToken = async (t: Parameters<typeof openClient>[0], engine: Parameters<typeof openClient>[1], claims: Record<string, unknown>): Promise<TestClient> =>
  openClient(t, engine, undefined, { path: `/ws?token=${encodeURIComponent(await hs({ exp: nowSec() + 300, ...claims }))}` });

test('info from the token: in presence joins, in who and in the API presence; a user without info has none; the latest join wins', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET, apiKey: KEY });
  const bob = await withToken(t, engine, { sub: 'bob', info: { name: 'Bob' } });
  await joinRoom(bob, 'info-room');
  const carol = await withToken(t, engine, { sub: 'carol' });
  const seenCarol = bob.next((f) => f.t === 'presence' && f.user === 'carol');
  await joinRoom(carol, 'info-room');
  const pc = await seenCarol;
  assert.equal(pc.state, 'join');
  assert.equal('info' in pc, false, 'a user without info: no info field (as v1)');

  const aliceInfo = { name: 'Alice', avatar: '/a/alice.png', badges: ['mod', 'early'], n: 7 };
  const alice = await withToken(t, engine, { sub: 'alice', info: aliceInfo });
  const seenAlice = bob.next((f) => f.t === 'presence' && f.user === 'alice');
  await joinRoom(alice, 'info-room');
  const pa = await seenAlice;
  assert.deepEqual([pa.room, pa.state, pa.info], ['info-room', 'join', aliceInfo], 'the presence join carries the joiner\'s info');

  const who = await carol.request({ t: 'who', room: 'info-room' });
  assert.deepEqual([...(who.users as string[])].sort(), ['alice', 'bob', 'carol']);
  assert.deepEqual(who.info, { bob: { name: 'Bob' }, alice: aliceInfo }, 'who: user -> info for the users that have one');

  const api = await post(engine.port, 'presence', { room: 'info-room' });
  assert.equal(api.status, 200, JSON.stringify(api.body));
  assert.deepEqual(api.body.info, { bob: { name: 'Bob' }, alice: aliceInfo });
  assert.equal(api.body.connections, 3);

  // A second tab of alice with other info: the latest join's info is shown (no new presence frame).
  const alice2 = await withToken(t, engine, { sub: 'alice', info: { name: 'Alice B.' } });
  await joinRoom(alice2, 'info-room');
  const who2 = await bob.request({ t: 'who', room: 'info-room' });
  assert.deepEqual((who2.info as Frame).alice, { name: 'Alice B.' });
  // It stays while any of alice's connections is there, and goes with the last one.
  await alice2.close();
  await waitFor(async () => ((await post(engine.port, 'presence', { room: 'info-room' })).body.connections === 3), 'alice2 gone');
  assert.deepEqual(((await bob.request({ t: 'who', room: 'info-room' })).info as Frame).alice, { name: 'Alice B.' });
  await alice.request({ t: 'leave', room: 'info-room' });
  const who3 = await bob.request({ t: 'who', room: 'info-room' });
  assert.deepEqual(who3.info, { bob: { name: 'Bob' } }, 'a user who left takes their info along');
  assert.ok(engine.stats().shards.some((s) => Number(s.infoBytes) > 0), 'the shard counts the info bytes it keeps');

  // The room without anyone with info: who and API presence have no info field.
  const plain = await withToken(t, engine, { sub: 'dave' });
  await joinRoom(plain, 'plain-room');
  assert.equal('info' in (await plain.request({ t: 'who', room: 'plain-room' })), false);
  assert.equal('info' in (await post(engine.port, 'presence', { room: 'plain-room' })).body, false);
});

test('info larger than maxInfoBytes: 401 invalid at the upgrade and at /auth/check, the body says why', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET, maxInfoBytes: 64 });
  const big = await hs({ sub: 'eve', exp: nowSec() + 60, info: { bio: 'x'.repeat(80) } });
  const r = await refusedUpgrade(engine.port, `/ws?token=${big}`);
  assert.equal(r.status, 401);
  const body = JSON.parse(r.body) as { error: { code: string; reason: string; detail?: string } };
  assert.equal(body.error.code, 'unauthorized');
  assert.equal(body.error.reason, 'invalid');
  assert.match(body.error.detail ?? '', /info claim is 90 bytes of JSON, more than 64/);
  const check = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: engine.port, path: `/auth/check?token=${big}`, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { res.socket?.destroy(); resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }); });
    }).on('error', reject);
  });
  assert.equal(check.status, 401);
  assert.match(check.body, /"reason":"invalid".*info claim is 90 bytes/);
  // At the limit it passes: {"bio":"…"} is 8 + 54 + 2 = 64 bytes.
  const fits = await withToken(t, engine, { sub: 'eve', info: { bio: 'y'.repeat(54) } });
  assert.equal(fits.hello?.user, 'eve');
  // Floats take 9 bytes in MessagePack: an info within the JSON bound but past it as MessagePack is refused too.
  const floats = await hs({ sub: 'eve', exp: nowSec() + 60, info: { f: [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5] } });
  const rf = await refusedUpgrade(engine.port, `/ws?token=${floats}`);
  assert.equal(rf.status, 401);
  assert.match(rf.body, /bytes of MessagePack, more than 64/);
  // A bad signature says nothing more than `invalid`.
  const forged = `${big.slice(0, big.lastIndexOf('.'))}.AAAA`;
  const rb = await refusedUpgrade(engine.port, `/ws?token=${forged}`);
  assert.equal(rb.status, 401);
  assert.equal('detail' in (JSON.parse(rb.body) as { error: object }).error, false);
});

test('the authenticate hook may return info: shown like a token\'s; a too-large one is 401', async (t) => {
  const engine = await startEngine(t, {
    apiKey: KEY,
    authenticate: ({ query }) => {
      const user = new URLSearchParams(query).get('user') ?? '';
      return user === 'big' ? { user, info: { x: 'z'.repeat(2000) } } : { user, info: { role: user === 'kim' ? 'mod' : 'member', since: new Date(0) } };
    },
  });
  const lee = await openClient(t, engine, 'lee');
  await joinRoom(lee, 'hook-room');
  const seen = lee.next((f) => f.t === 'presence' && f.user === 'kim');
  const kim = await openClient(t, engine, 'kim');
  await joinRoom(kim, 'hook-room');
  // A hook's info is JSON data: a Date arrives as its JSON string.
  assert.deepEqual((await seen).info, { role: 'mod', since: '1970-01-01T00:00:00.000Z' });
  const who = await kim.request({ t: 'who', room: 'hook-room' });
  assert.deepEqual(who.info, { lee: { role: 'member', since: '1970-01-01T00:00:00.000Z' }, kim: { role: 'mod', since: '1970-01-01T00:00:00.000Z' } });
  assert.deepEqual((await post(engine.port, 'presence', { room: 'hook-room' })).body.info, who.info);
  assert.equal((await refusedUpgrade(engine.port, '/ws?user=big')).status, 401);
});

test('a restarted shard gets the info back with the replayed joins', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET, shards: 1 });
  const ann = await withToken(t, engine, { sub: 'ann', info: { name: 'Ann' } });
  await joinRoom(ann, 'replay-room');
  engine._crashShard(0, 'throw');
  await ann.next((f) => f.t === 'joined' && f.room === 'replay-room' && f.ref === undefined, 10_000, 'the unsolicited joined after the restart');
  const who = await ann.request({ t: 'who', room: 'replay-room' });
  assert.deepEqual(who.info, { ann: { name: 'Ann' } });
});

/** An IN_FRAME join with `info` (MessagePack) as link.writeFrame writes it. */
function joinWithInfo(conn: number, room: string, user: string, info: unknown): Uint8Array {
  const frame = encode({ t: 'join', room });
  const inf = encode(info);
  const plain = inFrame(conn, frame, user);
  const b = new Uint8Array(plain.byteLength + inf.byteLength + 4);
  b.set(plain.subarray(0, IN_FRAME_BODY + frame.byteLength));
  b[2]! |= IN_FRAME_INFO;
  const p = IN_FRAME_BODY + frame.byteLength;
  b.set(inf, p);
  putU32(b, p + inf.byteLength, inf.byteLength);
  for (let i = 0; i < user.length; i++) b[p + inf.byteLength + 4 + i] = user.charCodeAt(i);
  return b;
}

test('the shard\'s info budget: a join past it is kept without info and counted; a leave gives the bytes back', (t) => {
  const sb = new ShardBench();
  t.after(() => sb.h.rooms.dispose());
  const rooms = sb.h.rooms;
  const info = { name: 'n'.repeat(40) };
  const cost = encode(info).byteLength + INFO_ENTRY_OVERHEAD;
  rooms.infoBudgetBytes = cost * 2;
  for (let i = 1; i <= 3; i++) sb.run(joinWithInfo(i, 'budget-room', `u${i}`, info));
  assert.equal(rooms.infoBytes, cost * 2);
  assert.equal(rooms.infoSkipped, 1, 'the third join found the budget spent');
  const who = (): Frame => {
    const out = sb.run(inFrame(2, encode({ t: 'who', room: 'budget-room', ref: 9 }), ''), true);
    return decode(outBody(out[0]!)) as Frame;
  };
  const w = who();
  assert.deepEqual(w.users, ['u1', 'u2', 'u3']);
  assert.deepEqual(Object.keys(w.info as Frame), ['u1', 'u2'], 'u3 is present, shown without info');
  sb.run(inFrame(1, encode({ t: 'leave', room: 'budget-room' }), ''));
  assert.equal(rooms.infoBytes, cost, 'u1 left: its info is no longer charged');
  sb.run(joinWithInfo(3, 'budget-room', 'u3', { name: 'again' }));
  assert.deepEqual(Object.keys(who().info as Frame).sort(), ['u2', 'u3'], 'a later join within the budget keeps its info');
});

test('maxInfoBytes must fit the rings (a join carries the info, a presence frame shows it)', () => {
  assert.throws(() => resolveOptions({ ringBytes: 1 << 16, maxHistBytes: 4096, maxFrameBytes: 4096, maxInfoBytes: 65_536 }), /maxInfoBytes must be at most ringBytes \/ 4 \(16384\), got 65536/);
  assert.equal(resolveOptions({ ringBytes: 1 << 16, maxHistBytes: 4096, maxFrameBytes: 4096, maxInfoBytes: 16_384 }).maxInfoBytes, 16_384);
  assert.equal(resolveOptions({}).maxInfoBytes, 1024);
});

test('a refresh with other info: later joins show the new info, rooms joined before keep their join\'s', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET });
  const c = await withToken(t, engine, { sub: 'rita', info: { name: 'Rita' } });
  await joinRoom(c, 'before-refresh');
  const r = await c.request({ t: 'refresh', token: await hs({ sub: 'rita', exp: nowSec() + 300, info: { name: 'Rita R.' } }) });
  assert.equal(r.t, 'refreshed', JSON.stringify(r));
  await joinRoom(c, 'after-refresh');
  assert.deepEqual((await c.request({ t: 'who', room: 'before-refresh' })).info, { rita: { name: 'Rita' } });
  assert.deepEqual((await c.request({ t: 'who', room: 'after-refresh' })).info, { rita: { name: 'Rita R.' } });
});

test('member.joined webhooks carry the joining identity\'s info', async (t) => {
  const got: Frame[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => { got.push(...(JSON.parse(Buffer.concat(chunks).toString()) as { events: Frame[] }).events); res.writeHead(200).end(); });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const port = (server.address() as { port: number }).port;
  const engine = await startEngine(t, { jwtSecret: SECRET, webhookUrl: `http://127.0.0.1:${port}/hook`, webhookSecret: 'webhook-secret-for-tests', webhookBatchMs: 10 });
  const sam = await withToken(t, engine, { sub: 'sam', info: { name: 'Sam' } });
  await joinRoom(sam, 'hook-info');
  const tom = await withToken(t, engine, { sub: 'tom' });
  await joinRoom(tom, 'hook-info');
  await waitFor(() => got.filter((e) => e.type === 'member.joined').length === 2, 'both member.joined delivered', 10_000);
  const joined = got.filter((e) => e.type === 'member.joined');
  assert.deepEqual(joined.map((e) => [e.user, e.info]), [['sam', { name: 'Sam' }], ['tom', undefined]]);
});
