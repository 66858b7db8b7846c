/**
 * Token auth wired into a REAL engine (issue 14): the JWT matrix at the upgrade (valid, expired,
 * wrong aud, alg none, HS/RS confusion, a rotated key through a JWKS served by the test on
 * 127.0.0.1, an unreachable JWKS), the one-value subprotocol answer, room permissions
 * (`forbidden`, connection open), `refresh` and the 4401 close, `GET /auth/check`, the hook's
 * permissions, the options and the metrics.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { decode } from '@msgpack/msgpack';
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, type JWK } from 'jose';
import { guardHandles } from './helpers/leaks.js';
import { joinRoom, openClient, startEngine } from './helpers/engine.js';
import { TestClient } from './helpers/client.js';
import { resolveOptions, type Engine } from '../engine/index.js';
import { optionsFromArgs } from '../engine/options.js';

guardHandles();

const SECRET = 'a-test-secret-of-at-least-32-bytes!!';
const nowSec = (): number => Math.floor(Date.now() / 1000);
const hs = (claims: Record<string, unknown>, secret: string | Uint8Array = SECRET): Promise<string> =>
  new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(typeof secret === 'string' ? new TextEncoder().encode(secret) : secret);
const b64url = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

interface Answer { status: number; body: string; protocol?: string; hello?: Record<string, unknown> }

/** One upgrade with `protocols` offered: the HTTP answer (status, body) or, on 101, the answered protocol and the hello. */
function upgrade(port: number, pathQuery: string, protocols: string[] = []): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${pathQuery}`, protocols, { perMessageDeflate: false });
    let protocol: string | undefined;
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`no answer to ${pathQuery}`)); }, 5000);
    ws.on('upgrade', (res: http.IncomingMessage) => { protocol = res.headers['sec-websocket-protocol'] as string | undefined; });
    ws.on('message', (data: Buffer) => {
      clearTimeout(timer);
      ws.close();
      resolve({ status: 101, body: '', protocol, hello: decode(data) as Record<string, unknown> });
    });
    ws.on('unexpected-response', (req: http.ClientRequest, res: http.IncomingMessage) => {
      const chunks: Buffer[] = [];
      const sock = res.socket;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { clearTimeout(timer); sock.destroy(); req.destroy(); resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }); });
    });
    ws.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

function get(port: number, p: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false, headers: { connection: 'close', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => { res.socket?.destroy(); resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }); });
    });
    req.on('error', reject);
  });
}

const reasonOf = (a: Answer): string => (JSON.parse(a.body) as { error: { reason: string } }).error.reason;
const bearer = (token: string): string[] => ['shardchat.v1', `bearer.${token}`];

async function connect(t: TestContext, engine: Engine, token: string): Promise<TestClient> {
  return openClient(t, engine, undefined, { path: `/ws?token=${encodeURIComponent(token)}` });
}

test('HS256 matrix at the upgrade: valid, expired, wrong aud, alg none, missing; ?user= names no one', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET, jwtAudience: 'chat', jwtClockToleranceSec: 0 });
  const valid = await hs({ sub: 'alice', aud: 'chat', exp: nowSec() + 60 });
  const ok = await upgrade(engine.port, '/ws?user=mallory', bearer(valid));
  assert.equal(ok.status, 101);
  assert.equal(ok.protocol, 'shardchat.v1', 'exactly one value answered: shardchat.v1, never the bearer entry');
  assert.equal(ok.hello?.user, 'alice', 'the token names the user; ?user= is ignored');
  const viaQuery = await upgrade(engine.port, `/ws?token=${valid}`);
  assert.equal(viaQuery.status, 101);
  assert.equal(viaQuery.hello?.user, 'alice');

  const expired = await hs({ sub: 'alice', aud: 'chat', exp: nowSec() - 30 });
  const wrongAud = await hs({ sub: 'alice', aud: 'other', exp: nowSec() + 60 });
  const none = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'alice', aud: 'chat', exp: nowSec() + 60 })}.`;
  const forged = await hs({ sub: 'alice', aud: 'chat', exp: nowSec() + 60 }, 'another-secret-of-at-least-32-bytes!!');
  for (const [name, token, reason] of [['expired', expired, 'expired'], ['wrong aud', wrongAud, 'invalid'], ['alg none', none, 'invalid'], ['bad signature', forged, 'invalid']] as const) {
    const a = await upgrade(engine.port, '/ws', bearer(token));
    assert.equal(a.status, 401, name);
    assert.equal(reasonOf(a), reason, `${name}: ${a.body}`);
  }
  const missing = await upgrade(engine.port, '/ws?user=alice');
  assert.equal(missing.status, 401);
  assert.equal(reasonOf(missing), 'missing');
  const noV1 = await upgrade(engine.port, '/ws', [`bearer.${valid}`]);
  assert.equal(noV1.status, 401, 'a bearer entry without shardchat.v1 is refused');
  const metrics = await get(engine.port, '/metrics');
  assert.match(metrics.body, /shardchat_auth_refused_total\{reason="expired"\} 1/);
  assert.match(metrics.body, /shardchat_auth_verified_total 2/);
});

test('RS256 public key file: a valid token passes, the HS/RS confusion token is refused', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'shardchat-auth-engine-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const pem = await exportSPKI(publicKey);
  const file = path.join(dir, 'pub.pem');
  writeFileSync(file, pem);
  const engine = await startEngine(t, { jwtPublicKeyFile: file });
  const rs = await new SignJWT({ sub: 'bob', exp: nowSec() + 60 }).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
  assert.equal((await upgrade(engine.port, '/ws', bearer(rs))).hello?.user, 'bob');
  // The attack: HS256 "signed" with the public key's PEM bytes as the HMAC secret.
  const confused = await hs({ sub: 'bob', exp: nowSec() + 60 }, new TextEncoder().encode(pem));
  const a = await upgrade(engine.port, '/ws', bearer(confused));
  assert.equal(a.status, 401);
  assert.equal(reasonOf(a), 'invalid');
});

test('JWKS: a rotated key is fetched, the retired key refused; an unreachable JWKS is 503 unavailable', async (t) => {
  const k1 = await generateKeyPair('ES256');
  const k2 = await generateKeyPair('ES256');
  const jwk = async (k: Parameters<typeof exportJWK>[0], kid: string): Promise<JWK> => ({ ...(await exportJWK(k)), kid, alg: 'ES256', use: 'sig' });
  let keys: JWK[] = [await jwk(k1.publicKey, 'k1')];
  const server = http.createServer((_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys })); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const port = (server.address() as { port: number }).port;
  const engine = await startEngine(t, { jwksUrl: `http://127.0.0.1:${port}/jwks`, jwksCooldownMs: 0 });
  const sign = (k: Parameters<typeof exportJWK>[0], kid: string, sub: string): Promise<string> =>
    new SignJWT({ sub, exp: nowSec() + 60 }).setProtectedHeader({ alg: 'ES256', kid }).sign(k);
  assert.equal((await upgrade(engine.port, '/ws', bearer(await sign(k1.privateKey, 'k1', 'carol')))).hello?.user, 'carol');
  keys = [await jwk(k2.publicKey, 'k2')];
  assert.equal((await upgrade(engine.port, '/ws', bearer(await sign(k2.privateKey, 'k2', 'dave')))).hello?.user, 'dave', 'the new kid makes the engine refetch');
  const retired = await upgrade(engine.port, '/ws', bearer(await sign(k1.privateKey, 'k1', 'erin')));
  assert.equal(retired.status, 401);
  assert.equal(reasonOf(retired), 'invalid');

  // A JWKS that refuses connections: a port that was just closed.
  const dead = http.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const deadPort = (dead.address() as { port: number }).port;
  await new Promise<void>((r) => dead.close(() => r()));
  const down = await startEngine(t, { jwksUrl: `http://127.0.0.1:${deadPort}/jwks`, jwksTimeoutMs: 1000 });
  const a = await upgrade(down.port, '/ws', bearer(await sign(k2.privateKey, 'k2', 'dave')));
  assert.equal(a.status, 503);
  assert.equal(reasonOf(a), 'unavailable');
});

test('room permissions: a:* token on b:1 is forbidden and the connection stays open; a token without pub cannot publish', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET });
  const token = await hs({ sub: 'frank', exp: nowSec() + 60, rooms: [{ match: 'a:*', allow: ['join', 'hist', 'who', 'read'] }] });
  const c = await connect(t, engine, token);
  await joinRoom(c, 'a:1');
  const denied = await c.request({ t: 'join', room: 'b:1' });
  assert.equal(denied.t, 'err');
  assert.equal(denied.code, 'forbidden');
  const pub = await c.request({ t: 'pub', room: 'a:1', body: 'hi' });
  assert.equal(pub.code, 'forbidden', 'no pub in the token');
  assert.equal((await c.request({ t: 'hist', room: 'a:1' })).t, 'hist', 'still open, and hist is allowed');
  await joinRoom(c, 'a:2');
  assert.equal((await c.request({ t: 'leave', room: 'a:2' })).t, 'left', 'leave needs no permission');
  assert.equal(c.closeInfo, null);
});

test('refresh keeps the connection past the first token\'s exp; a refresh for another user is refused; no refresh closes with 4401', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET, jwtClockToleranceSec: 0 });
  // 2..3 s: room for the refresh below on a loaded machine.
  const exp = nowSec() + 3;
  const kept = await connect(t, engine, await hs({ sub: 'gina', exp }));
  const dropped = await connect(t, engine, await hs({ sub: 'hank', exp }));
  const other = await kept.request({ t: 'refresh', token: await hs({ sub: 'ivan', exp: nowSec() + 60 }) });
  assert.equal(other.t, 'err');
  assert.equal(other.code, 'unauthorized');
  const r = await kept.request({ t: 'refresh', token: await hs({ sub: 'gina', exp: nowSec() + 60 }) });
  assert.equal(r.t, 'refreshed', JSON.stringify(r));
  assert.ok((r.exp as number) > exp);
  const closed = await dropped.closed;
  assert.equal(closed.code, 4401, `closed with ${closed.code}`);
  assert.ok(Date.now() >= exp * 1000, 'not closed before exp');
  await joinRoom(kept, 'after-exp');
  assert.equal(kept.closeInfo, null, 'the refreshed connection is still open');
  const bad = await kept.request({ t: 'refresh', token: 'not-a-jwt' });
  assert.equal(bad.code, 'unauthorized');
});

test('GET /auth/check answers 200 {user, exp} or the refusal, with the token given as Bearer, ?token= or subprotocol', async (t) => {
  const engine = await startEngine(t, { jwtSecret: SECRET });
  const exp = nowSec() + 60;
  const token = await hs({ sub: 'judy', exp });
  const viaBearer = await get(engine.port, '/auth/check', { authorization: `Bearer ${token}` });
  assert.equal(viaBearer.status, 200);
  assert.deepEqual(JSON.parse(viaBearer.body), { user: 'judy', exp });
  assert.equal((await get(engine.port, `/auth/check?token=${token}`)).status, 200);
  assert.equal((await get(engine.port, '/auth/check', { 'sec-websocket-protocol': `shardchat.v1, bearer.${token}` })).status, 200);
  const expired = await get(engine.port, '/auth/check', { authorization: `Bearer ${await hs({ sub: 'judy', exp: nowSec() - 60 })}` });
  assert.equal(expired.status, 401);
  assert.deepEqual(JSON.parse(expired.body), { error: { code: 'unauthorized', reason: 'expired', msg: 'the token has expired: get a new one' } });
  const missing = await get(engine.port, '/auth/check');
  assert.equal(missing.status, 401);
  assert.equal((JSON.parse(missing.body) as { error: { reason: string } }).error.reason, 'missing');
  const twice = await get(engine.port, `/auth/check?token=${token}`, { authorization: `Bearer ${token}` });
  assert.equal(twice.status, 401, 'a token given two ways is refused');
});

test('the authenticate hook may return rooms: the same forbidden check', async (t) => {
  const engine = await startEngine(t, { authenticate: () => ({ user: 'kim', rooms: [{ match: 'x', allow: ['join'] }] }) });
  const c = await openClient(t, engine);
  assert.equal(c.hello?.user, 'kim');
  await joinRoom(c, 'x');
  assert.equal((await c.request({ t: 'join', room: 'y' })).code, 'forbidden');
  assert.equal((await c.request({ t: 'pub', room: 'x', body: 1 })).code, 'forbidden');
  // exp from the hook closes with 4401 too (no clock tolerance).
  const soon = await startEngine(t, { authenticate: () => ({ user: 'lee', exp: nowSec() + 1 }) });
  const lee = await openClient(t, soon);
  assert.equal((await lee.closed).code, 4401);
  // A bad rooms list is a 401, not silently everything.
  const bad = await startEngine(t, { authenticate: () => ({ user: 'kim', rooms: [{ match: 'x', allow: ['fly'] }] }) });
  assert.equal((await upgrade(bad.port, '/ws')).status, 401);
});

test('open mode answers an offered protocol list with one value too', async (t) => {
  const engine = await startEngine(t);
  const a = await upgrade(engine.port, '/ws?user=olga', ['other.v2', 'shardchat.v1']);
  assert.equal(a.status, 101);
  assert.equal(a.protocol, 'shardchat.v1');
  assert.equal((await upgrade(engine.port, '/ws', ['x.v1', 'y.v1'])).protocol, 'x.v1', 'the first one offered');
  assert.equal((await upgrade(engine.port, '/ws')).protocol, undefined, 'none offered, none answered');
});

test('token auth options: one identity source, CLI flags and environment', () => {
  assert.throws(() => resolveOptions({ jwtSecret: SECRET, authenticate: () => null }), /authenticate cannot be combined with token auth/);
  assert.throws(() => resolveOptions({ jwtSecret: 'short' }), /jwtSecret must be at least 32 bytes/);
  assert.equal(resolveOptions({}).auth, null);
  const { options } = optionsFromArgs(['--jwt-audience', 'chat', '--token-cache-entries=5'], { SHARDCHAT_JWT_SECRET: SECRET });
  assert.deepEqual(options, { jwtSecret: SECRET, jwtAudience: 'chat', tokenCacheEntries: 5, store: 'sqlite' });
  const more = optionsFromArgs(['--api-key', 'k'.repeat(16), '--webhook-url', 'http://127.0.0.1:1/h', '--max-bans=7'], { SHARDCHAT_WEBHOOK_SECRET: 's'.repeat(16) }).options;
  const ro = resolveOptions(more);
  assert.equal(ro.apiKey, 'k'.repeat(16));
  assert.equal(ro.webhooks?.url, 'http://127.0.0.1:1/h');
  assert.equal(ro.maxBans, 7);
  assert.throws(() => resolveOptions({ apiKey: 'short' }), /apiKey must be a string of at least 16 bytes/);
  const r = resolveOptions(options).auth;
  assert.equal(r?.audience, 'chat');
  assert.equal(r?.tokenCacheEntries, 5);
});
