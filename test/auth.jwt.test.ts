/**
 * Token verification against real keys and a real JWKS endpoint served by the test on
 * 127.0.0.1 port 0: the JWT matrix of issue 14 (valid, expired, aud/iss, alg none, HS/RS
 * confusion, key rotation, room patterns, a token without `pub`).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHmac } from 'node:crypto';
import { SignJWT, UnsecuredJWT, exportJWK, exportSPKI, generateKeyPair, type JWK } from 'jose';
import { guardHandles } from './helpers/leaks.js';
import {
  AuthError, allows, createVerifier, refusal, resolveAuthOptions, type AuthOptions, type AuthReason, type TokenVerifier,
} from '../engine/auth/index.js';

guardHandles();

const SECRET = 'a-test-secret-of-at-least-32-bytes!!';
const nowSec = (): number => Math.floor(Date.now() / 1000);

function tmp(t: TestContext): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'shardchat-auth-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function verifier(opts: AuthOptions): Promise<TokenVerifier> {
  const r = resolveAuthOptions(opts);
  assert.ok(r !== null);
  return createVerifier(r);
}

function hs(claims: Record<string, unknown>, secret: string | Uint8Array = SECRET): Promise<string> {
  const key = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret;
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(key);
}

async function refusedWith(v: TokenVerifier, token: string | null, reason: AuthReason, detail?: RegExp): Promise<void> {
  await assert.rejects(v.verify(token), (e: unknown) => {
    assert.ok(e instanceof AuthError, `not an AuthError: ${String(e)}`);
    assert.equal(e.reason, reason, e.detail);
    if (detail) assert.match(e.detail, detail);
    return true;
  });
}

test('HS256: a valid token yields its identity; expiry, sub and exp rules; missing', async () => {
  const v = await verifier({ jwtSecret: SECRET, jwtClockToleranceSec: 5 });
  assert.deepEqual(v.algorithms, ['HS256']);
  const exp = nowSec() + 60;
  const id = await v.verify(await hs({ sub: 'alice', exp, info: { name: 'Alice' } }));
  assert.equal(id.user, 'alice');
  assert.equal(id.exp, exp);
  assert.equal(id.rooms, null);
  assert.deepEqual(id.info, { name: 'Alice' });
  assert.ok(allows(id, 'pub', 'any:room'), 'no rooms claim allows everything');

  await refusedWith(v, await hs({ sub: 'alice', exp: nowSec() - 30 }), 'expired');
  // Within the clock tolerance an expired token still passes.
  assert.equal((await v.verify(await hs({ sub: 'alice', exp: nowSec() - 2 }))).user, 'alice');
  await refusedWith(v, await hs({ sub: 'alice' }), 'invalid', /exp/);
  await refusedWith(v, await hs({ exp }), 'invalid', /sub/);
  await refusedWith(v, await hs({ sub: 'anon-c1', exp }), 'invalid', /anon-/);
  await refusedWith(v, await hs({ sub: 'not valid!', exp }), 'invalid', /sub/);
  await refusedWith(v, await hs({ sub: 'x'.repeat(65), exp }), 'invalid', /sub/);
  await refusedWith(v, await hs({ sub: 'alice', exp, nbf: nowSec() + 60 }), 'invalid');
  await refusedWith(v, await hs({ sub: 'alice', exp }, 'another-secret-of-at-least-32-bytes!'), 'invalid', /SIGNATURE/);
  await refusedWith(v, null, 'missing');
  await refusedWith(v, 'not.a.jwt', 'invalid');
  const st = v.stats();
  assert.equal(st.refused.missing, 1);
  assert.equal(st.refused.expired, 1);
  assert.ok(st.refused.invalid >= 7);
});

test('aud and iss are checked when configured', async () => {
  const v = await verifier({ jwtSecret: SECRET, jwtAudience: 'chat', jwtIssuer: 'https://auth.example' });
  const exp = nowSec() + 60;
  assert.equal((await v.verify(await hs({ sub: 'a', exp, aud: 'chat', iss: 'https://auth.example' }))).user, 'a');
  await refusedWith(v, await hs({ sub: 'a', exp, aud: 'other', iss: 'https://auth.example' }), 'invalid', /aud/);
  await refusedWith(v, await hs({ sub: 'a', exp, iss: 'https://auth.example' }), 'invalid', /aud/);
  await refusedWith(v, await hs({ sub: 'a', exp, aud: 'chat', iss: 'https://evil.example' }), 'invalid', /iss/);
});

test('alg none is refused by every key type', async (t) => {
  const exp = nowSec() + 60;
  const unsecured = new UnsecuredJWT({ sub: 'mallory', exp }).encode();
  await refusedWith(await verifier({ jwtSecret: SECRET }), unsecured, 'invalid');
  const { publicKey } = await generateKeyPair('RS256');
  const file = path.join(tmp(t), 'rsa.pem');
  writeFileSync(file, await exportSPKI(publicKey));
  await refusedWith(await verifier({ jwtPublicKeyFile: file }), unsecured, 'invalid');
});

test('HS/RS confusion: an HS256 token signed with the RSA public key bytes is refused, and RS256 is refused by a secret', async (t) => {
  const { publicKey, privateKey } = await generateKeyPair('RS256');
  const pem = await exportSPKI(publicKey);
  const file = path.join(tmp(t), 'rsa.pem');
  writeFileSync(file, pem);
  const rs = await verifier({ jwtPublicKeyFile: file });
  assert.deepEqual(rs.algorithms, ['RS256']);
  const exp = nowSec() + 60;
  const good = await new SignJWT({ sub: 'bob', exp }).setProtectedHeader({ alg: 'RS256' }).sign(privateKey);
  assert.equal((await rs.verify(good)).user, 'bob');
  // The classic attack: HMAC keyed with the public key's PEM text, alg switched to HS256.
  const forged = await hs({ sub: 'bob', exp }, new TextEncoder().encode(pem));
  await refusedWith(rs, forged, 'invalid', /ALG_NOT_ALLOWED/);
  // And by hand, so no library-side check can hide it: header.payload signed with HMAC(pem).
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'bob', exp })}`;
  await refusedWith(rs, `${input}.${createHmac('sha256', pem).update(input).digest('base64url')}`, 'invalid');
  await refusedWith(await verifier({ jwtSecret: SECRET }), good, 'invalid', /ALG_NOT_ALLOWED/);
});

test('ES256 and EdDSA public key files pin their own algorithm', async (t) => {
  const dir = tmp(t);
  const exp = nowSec() + 60;
  for (const [alg, expect] of [['ES256', 'ES256'], ['EdDSA', 'EdDSA']] as const) {
    const { publicKey, privateKey } = await generateKeyPair(alg, alg === 'EdDSA' ? { crv: 'Ed25519' } : {});
    const file = path.join(dir, `${alg}.pem`);
    writeFileSync(file, await exportSPKI(publicKey));
    const v = await verifier({ jwtPublicKeyFile: file });
    assert.deepEqual(v.algorithms, [expect]);
    const token = await new SignJWT({ sub: `u-${alg}`, exp }).setProtectedHeader({ alg }).sign(privateKey);
    assert.equal((await v.verify(token)).user, `u-${alg}`);
    const other = await generateKeyPair(alg, alg === 'EdDSA' ? { crv: 'Ed25519' } : {});
    await refusedWith(v, await new SignJWT({ sub: 'x', exp }).setProtectedHeader({ alg }).sign(other.privateKey), 'invalid');
  }
});

test('the secret file: its bytes, one trailing newline ignored; bad files name the option', async (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'secret');
  writeFileSync(file, `${SECRET}\n`);
  const v = await verifier({ jwtSecretFile: file });
  assert.equal((await v.verify(await hs({ sub: 'a', exp: nowSec() + 60 }))).user, 'a');
  writeFileSync(path.join(dir, 'short'), 'short\n');
  await assert.rejects(verifier({ jwtSecretFile: path.join(dir, 'short') }), /options\.jwtSecretFile must hold at least 32 bytes/);
  await assert.rejects(verifier({ jwtSecretFile: path.join(dir, 'absent') }), /options\.jwtSecretFile cannot be read/);
  writeFileSync(path.join(dir, 'priv.pem'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
  await assert.rejects(verifier({ jwtPublicKeyFile: path.join(dir, 'priv.pem') }), /options\.jwtPublicKeyFile must be a PEM public key/);
});

test('rooms claim: pattern a:* does not reach b:1; a token without pub cannot publish; bad claims are invalid', async () => {
  const v = await verifier({ jwtSecret: SECRET });
  const exp = nowSec() + 60;
  const id = await v.verify(await hs({
    sub: 'carol', exp,
    rooms: [{ match: 'a:*', allow: ['join', 'pub', 'hist'] }, { match: 'lobby', allow: ['join', 'hist', 'who', 'read'] }],
  }));
  assert.ok(allows(id, 'join', 'a:1'));
  assert.ok(allows(id, 'pub', 'a:1'));
  assert.ok(!allows(id, 'join', 'b:1'), 'a:* must not match b:1');
  assert.ok(!allows(id, 'who', 'a:1'));
  assert.ok(allows(id, 'join', 'lobby'));
  assert.ok(!allows(id, 'pub', 'lobby'), 'lobby was given without pub');
  await refusedWith(v, await hs({ sub: 'c', exp, rooms: [{ match: 'a:*', allow: ['fly'] }] }), 'invalid', /allow/);
  await refusedWith(v, await hs({ sub: 'c', exp, rooms: { match: 'a:*' } }), 'invalid', /array/);
  await refusedWith(v, await hs({ sub: 'c', exp, info: { big: 'x'.repeat(2000) } }), 'invalid', /info/);
  await refusedWith(v, await hs({ sub: 'c', exp, info: 'text' }), 'invalid', /info/);
});

/** A JWKS endpoint on 127.0.0.1 port 0 whose key set the test swaps; counts its requests. */
async function jwksServer(t: TestContext, status = 200): Promise<{ url: string; keys: JWK[]; requests: () => number }> {
  const state = { keys: [] as JWK[], n: 0 };
  const server = http.createServer((_req, res) => {
    state.n++;
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}/jwks.json`, keys: state.keys, requests: () => state.n };
}

test('JWKS: a rotated key is fetched on its first token; the removed key stops verifying', async (t) => {
  const jwks = await jwksServer(t);
  const k1 = await generateKeyPair('ES256', { extractable: true });
  const k2 = await generateKeyPair('ES256', { extractable: true });
  jwks.keys.push({ ...(await exportJWK(k1.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' });
  const v = await verifier({ jwksUrl: jwks.url, jwksCooldownMs: 0, tokenCacheEntries: 0 });
  const exp = nowSec() + 60;
  const sign = (k: Parameters<SignJWT['sign']>[0], kid: string, sub: string): Promise<string> =>
    new SignJWT({ sub, exp }).setProtectedHeader({ alg: 'ES256', kid }).sign(k);
  assert.equal((await v.verify(await sign(k1.privateKey, 'k1', 'u1'))).user, 'u1');
  assert.equal(jwks.requests(), 1);
  // Rotate: the endpoint now serves k2 only.
  jwks.keys.splice(0, 1, { ...(await exportJWK(k2.publicKey)), kid: 'k2', alg: 'ES256', use: 'sig' });
  assert.equal((await v.verify(await sign(k2.privateKey, 'k2', 'u2'))).user, 'u2');
  assert.ok(jwks.requests() >= 2, 'the unknown kid made the verifier refetch');
  await refusedWith(v, await sign(k1.privateKey, 'k1', 'u3'), 'invalid', /NO_MATCHING_KEY/);
  // A token signed by a key outside the set, claiming the set's kid.
  const k3 = await generateKeyPair('ES256');
  await refusedWith(v, await sign(k3.privateKey, 'k2', 'u4'), 'invalid', /SIGNATURE/);
  // An HS256 token is not accepted through a JWKS either.
  await refusedWith(v, await hs({ sub: 'u5', exp }), 'invalid', /ALG_NOT_ALLOWED/);
});

test('JWKS: an endpoint that fails is `unavailable` (503), not a bad token', async (t) => {
  const jwks = await jwksServer(t, 500);
  const v = await verifier({ jwksUrl: jwks.url, jwksTimeoutMs: 1000 });
  const k = await generateKeyPair('ES256');
  const token = await new SignJWT({ sub: 'u', exp: nowSec() + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k' }).sign(k.privateKey);
  await assert.rejects(v.verify(token), (e: unknown) => {
    assert.ok(e instanceof AuthError);
    assert.equal(e.reason, 'unavailable');
    assert.equal(refusal(e).status, '503 Service Unavailable');
    return true;
  });
});

test('JWKS: an endpoint that does not answer is `unavailable` after jwksTimeoutMs', async (t) => {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((_req, res) => { held.push(res); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/jwks.json`;
  const v = await verifier({ jwksUrl: url, jwksTimeoutMs: 300 });
  const k = await generateKeyPair('ES256');
  const token = await new SignJWT({ sub: 'u', exp: nowSec() + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k' }).sign(k.privateKey);
  const t0 = Date.now();
  await refusedWith(v, token, 'unavailable', /TIMEOUT/);
  const took = Date.now() - t0;
  assert.ok(took >= 290 && took < 3000, `gave up after ${took} ms`);
  assert.equal(held.length, 1, 'the request reached the endpoint');
});

test('verifyUpgrade(): the token from Sec-WebSocket-Protocol or ?token=, and the protocol to answer', async () => {
  const v = await verifier({ jwtSecret: SECRET });
  const token = await hs({ sub: 'erin', exp: nowSec() + 60 });
  const viaHeader = await v.verifyUpgrade(`shardchat.v1, bearer.${token}`, 'user=mallory');
  assert.deepEqual([viaHeader.identity.user, viaHeader.protocol], ['erin', 'shardchat.v1'], '?user= names no one');
  const viaQuery = await v.verifyUpgrade('', `token=${token}`);
  assert.deepEqual([viaQuery.identity.user, viaQuery.protocol], ['erin', '']);
  await assert.rejects(v.verifyUpgrade('shardchat.v1', 'user=erin'), (e: unknown) => e instanceof AuthError && e.reason === 'missing');
  await assert.rejects(v.verifyUpgrade(`bearer.${token}`, ''), (e: unknown) => e instanceof AuthError && e.reason === 'invalid');
  await assert.rejects(v.verifyUpgrade(`shardchat.v1, bearer.${token}`, `token=${token}`), (e: unknown) => e instanceof AuthError && e.reason === 'invalid');
  const st = v.stats();
  assert.deepEqual([st.verified, st.refused.missing, st.refused.invalid], [2, 1, 2]);
});

test('refusal bodies name the reason', () => {
  for (const reason of ['missing', 'expired', 'invalid'] as const) {
    const r = refusal(new AuthError(reason, 'detail not shown'));
    assert.equal(r.status, '401 Unauthorized');
    const body = JSON.parse(r.body) as { error: { code: string; reason: string; msg: string } };
    assert.equal(body.error.code, 'unauthorized');
    assert.equal(body.error.reason, reason);
    assert.ok(!r.body.includes('detail not shown'), 'log details stay out of the body');
  }
});

test('the token cache serves a verified token until its exp, then verifies again', async () => {
  let clock = Date.now();
  const r = resolveAuthOptions({ jwtSecret: SECRET, jwtClockToleranceSec: 0, tokenCacheEntries: 2 })!;
  const v = await createVerifier(r, () => clock);
  const exp = Math.floor(clock / 1000) + 10;
  const token = await hs({ sub: 'dana', exp });
  await v.verify(token);
  await v.verify(token);
  assert.equal(v.stats().cache.hits, 1);
  clock = exp * 1000 + 1000;
  await refusedWith(v, token, 'expired');
  assert.equal(v.stats().cache.entries, 0, 'the expired entry was dropped');
});

test('option validation names the option', () => {
  const cases: [AuthOptions, RegExp][] = [
    [{ jwtSecret: 'short' }, /options\.jwtSecret must be at least 32 bytes/],
    [{ jwtSecret: SECRET, jwksUrl: 'https://x/jwks' }, /options\.jwksUrl cannot be combined with jwtSecret/],
    [{ jwksUrl: 'http://example.com/jwks' }, /options\.jwksUrl must be https/],
    [{ jwksUrl: 'not a url' }, /options\.jwksUrl must be a URL/],
    [{ jwtAudience: 'chat' }, /options\.jwtAudience needs a key/],
    [{ jwtSecret: SECRET, jwtClockToleranceSec: 3600 }, /options\.jwtClockToleranceSec must be between 0 and 300/],
    [{ jwtSecret: SECRET, tokenCacheEntries: 1.5 }, /options\.tokenCacheEntries must be an integer/],
    [{ jwtPublicKeyFile: '' }, /options\.jwtPublicKeyFile must be a non-empty string/],
  ];
  for (const [o, re] of cases) assert.throws(() => resolveAuthOptions(o), re, JSON.stringify(o));
  assert.equal(resolveAuthOptions({}), null, 'no key: auth off');
  assert.equal(resolveAuthOptions({ jwksUrl: 'http://127.0.0.1:1/jwks' })!.key.kind, 'jwks');
});
