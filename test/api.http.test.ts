/**
 * The server HTTP API through a REAL engine (issue 14): the key, the body bound, publish to a
 * joined client, history, presence, rooms, broadcast, disconnect, kick with a ban, redact seen by
 * members and by hist; every 200 body's shape checked against its example in docs/API.md.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { guardHandles } from './helpers/leaks.js';
import { joinRoom, openClient, startEngine } from './helpers/engine.js';
import { createEngine } from '../engine/index.js';
import { tempDir } from './helpers/tmpdir.js';
import { apiPost, type ApiReply } from './helpers/api.js';

guardHandles();

const KEY = 'an-api-key-for-tests-0123456789';

type Reply = ApiReply;

const post = (port: number, method: string, body: unknown, key: string | null = KEY, raw?: string): Promise<Reply> => apiPost(port, method, body, key, raw);

/** The example response of `method` in docs/API.md: the first ```json block after its "Response" line. */
function documented(method: string): unknown {
  const doc = readFileSync(new URL('../../docs/API.md', import.meta.url), 'utf8');
  const at = doc.indexOf(`### \`${method}\``);
  assert.ok(at >= 0, `docs/API.md documents ${method}`);
  const resp = doc.indexOf('Response', at);
  const m = /```json\n([\s\S]*?)```/.exec(doc.slice(resp));
  assert.ok(m, `docs/API.md has a JSON response example for ${method}`);
  return JSON.parse(m[1]!);
}

/** Keys and value types, recursively (arrays by their first element; null matches anything nullable). */
function shape(v: unknown): unknown {
  if (Array.isArray(v)) return v.length === 0 ? [] : [shape(v[0])];
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, shape((v as Record<string, unknown>)[k])]));
  return v === null ? 'null' : typeof v;
}

function matchesDoc(method: string, body: unknown): void {
  assert.deepEqual(shape(body), shape(documented(method)), `${method} response has the documented shape`);
}

test('the API needs the key: 401 without or with a wrong one; 404, 413 and 400 with error bodies', async (t) => {
  const engine = await startEngine(t, { apiKey: KEY, apiMaxBodyBytes: 1024 });
  const none = await post(engine.port, 'publish', { room: 'x', body: 1 }, null);
  assert.equal(none.status, 401);
  assert.equal((none.body.error as { code: string }).code, 'unauthorized');
  assert.equal((await post(engine.port, 'publish', { room: 'x', body: 1 }, `${KEY}x`)).status, 401);
  const unknown = await post(engine.port, 'nosuch', {});
  assert.equal(unknown.status, 404);
  assert.deepEqual(Object.keys(unknown.body.error as object).sort(), ['code', 'msg']);
  const big = await post(engine.port, 'publish', { room: 'x', body: 'y'.repeat(2000) });
  assert.equal(big.status, 413);
  assert.equal((big.body.error as { code: string }).code, 'too_large');
  const bad = await post(engine.port, 'publish', null, KEY, '{not json');
  assert.equal(bad.status, 400);
  assert.equal((bad.body.error as { code: string }).code, 'bad_request');
  assert.equal((await post(engine.port, 'publish', { room: 'bad room!', body: 1 })).status, 400);
});

test('publish reaches a joined client; history, presence, rooms and broadcast answer as documented', async (t) => {
  const engine = await startEngine(t, { apiKey: KEY });
  const alice = await openClient(t, engine, 'alice');
  await joinRoom(alice, 'api-room');
  const got = alice.nextOf('msg', 'api-room');
  const pub = await post(engine.port, 'publish', { room: 'api-room', body: { text: 'hi' }, from: 'backend' });
  assert.equal(pub.status, 200, JSON.stringify(pub.body));
  assert.equal(pub.body.seq, 1);
  assert.ok(typeof pub.body.ts === 'number' && Math.abs(pub.body.ts - Date.now()) < 60_000, `ts ${String(pub.body.ts)}`);
  matchesDoc('publish', pub.body);
  const msg = await got;
  assert.equal(msg.ts, pub.body.ts, 'the ts answered is the stored message\'s');
  assert.equal(msg.from, 'backend');
  assert.deepEqual(msg.body, { text: 'hi' });

  const hist = await post(engine.port, 'history', { room: 'api-room', limit: 10 });
  assert.equal(hist.status, 200);
  assert.deepEqual((hist.body.msgs as { body: unknown }[]).map((m) => m.body), [{ text: 'hi' }]);
  matchesDoc('history', hist.body);
  const who = await post(engine.port, 'presence', { room: 'api-room' });
  assert.deepEqual(who.body.users, ['alice']);
  matchesDoc('presence', who.body);
  // A second room with a member, so the page of one has a next page (the cursor is null only on the last).
  await joinRoom(alice, 'api-room-2');
  const rooms = await post(engine.port, 'rooms', { limit: 1 });
  assert.ok((rooms.body.rooms as { room: string }[]).some((r) => r.room === 'api-room'));
  matchesDoc('rooms', rooms.body);
  const many = await post(engine.port, 'broadcast', { rooms: ['api-room', 'other-room'], body: 'all' });
  assert.equal(many.status, 200);
  assert.deepEqual((many.body.results as { room: string; seq: number }[]).map((r) => [r.room, r.seq]), [['api-room', 2], ['other-room', 1]]);
  matchesDoc('broadcast', many.body);
});

test('rooms pages through every shard with a cursor; only rooms with a connection are listed, as in cluster mode', async (t) => {
  const engine = await startEngine(t, { apiKey: KEY });
  const ann = await openClient(t, engine, 'ann');
  const bob = await openClient(t, engine, 'bob');
  for (let i = 0; i < 5; i++) await joinRoom(ann, `page-${i}`);
  await joinRoom(bob, 'page-2');
  // Held by their shards but with nobody in them: a room only published to, a room everyone left.
  assert.equal((await post(engine.port, 'publish', { room: 'page-1b', body: 1 })).status, 200);
  await joinRoom(bob, 'page-3b');
  assert.equal((await bob.request({ t: 'leave', room: 'page-3b' })).t, 'left');
  const seen: { room: string; connections: number }[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 10; i++) {
    const r = await post(engine.port, 'rooms', { limit: 2, cursor });
    seen.push(...(r.body.rooms as { room: string; connections: number }[]));
    cursor = r.body.cursor as string | null;
    if (cursor === null) break;
  }
  assert.deepEqual(seen, [0, 1, 2, 3, 4].map((i) => ({ room: `page-${i}`, connections: i === 2 ? 2 : 1 })));
});

test('kick with a ban removes the user and blocks the rejoin with forbidden; disconnect closes with the code', async (t) => {
  const engine = await startEngine(t, { apiKey: KEY });
  const bob = await openClient(t, engine, 'bob');
  await joinRoom(bob, 'mod-room');
  const left = bob.nextOf('left', 'mod-room');
  const kick = await post(engine.port, 'kick', { room: 'mod-room', user: 'bob', banSec: 60 });
  assert.equal(kick.status, 200);
  assert.equal(kick.body.kicked, 1);
  matchesDoc('kick', kick.body);
  await left;
  const again = await bob.request({ t: 'join', room: 'mod-room' });
  assert.equal(again.t, 'err');
  assert.equal(again.code, 'forbidden');
  assert.ok((again.retryAfterMs as number) > 50_000);
  await joinRoom(bob, 'another-room');
  const bob2 = await openClient(t, engine, 'bob');
  assert.equal((await bob2.request({ t: 'join', room: 'mod-room' })).code, 'forbidden', 'a reconnect does not lift the ban');

  const carol = await openClient(t, engine, 'carol');
  const d = await post(engine.port, 'disconnect', { user: 'carol', code: 4000, reason: 'bye' });
  assert.equal(d.body.disconnected, 1);
  matchesDoc('disconnect', d.body);
  assert.equal((await carol.closed).code, 4000);
  const carol2 = await openClient(t, engine, 'carol');
  const byConn = await post(engine.port, 'disconnect', { conn: carol2.hello?.conn });
  assert.equal(byConn.body.disconnected, 1);
  assert.equal((await carol2.closed).code, 1000);
  assert.equal((await post(engine.port, 'disconnect', { user: 'carol', code: 1006 })).status, 400, 'a code the API may not send');
});

test('redact replaces a message by a tombstone: members get redacted, hist and history show it', async (t) => {
  const engine = await startEngine(t, { apiKey: KEY });
  const dan = await openClient(t, engine, 'dan');
  await joinRoom(dan, 'red-room');
  await post(engine.port, 'publish', { room: 'red-room', body: 'keep' });
  await post(engine.port, 'publish', { room: 'red-room', body: 'secret', from: 'eve' });
  const told = dan.nextOf('redacted', 'red-room');
  const r = await post(engine.port, 'redact', { room: 'red-room', seq: 2 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  matchesDoc('redact', r.body);
  assert.equal((await told).seq, 2);
  const hist = await dan.request({ t: 'hist', room: 'red-room' });
  assert.equal(hist.t, 'hist', JSON.stringify(hist));
  const msgs = hist.msgs as Record<string, unknown>[];
  assert.deepEqual(msgs.map((m) => [m.seq, m.body, m.redacted, m.from]), [[1, 'keep', undefined, 'server'], [2, null, true, 'eve']]);
  const viaApi = await post(engine.port, 'history', { room: 'red-room' });
  assert.equal((viaApi.body.msgs as Record<string, unknown>[] | undefined)?.[1]?.redacted, true, JSON.stringify(viaApi.body));
  const missing = await post(engine.port, 'redact', { room: 'red-room', seq: 99 });
  assert.equal(missing.status, 404);
});

test('with the durable store, history reads the store and a redaction outlives a restart', async (t) => {
  const dataDir = tempDir(t);
  const opts = { port: 0, host: '127.0.0.1', shards: 1, logLevel: 'silent' as const, apiKey: KEY, store: 'sqlite' as const, dataDir, historyBudgetBytes: 1 << 20 };
  const first = await createEngine(opts);
  await first.listen();
  for (let i = 1; i <= 5; i++) assert.equal((await post(first.port, 'publish', { room: 'durable-red', body: `m${i}` })).status, 200);
  // Redact one message while it is in the shard's memory too.
  assert.equal((await post(first.port, 'redact', { room: 'durable-red', seq: 2 })).status, 200);
  await first.close();

  const second = await createEngine(opts);
  t.after(() => second.close());
  await second.listen();
  // Nobody joined since the restart: the shard holds no state for the room, the store does.
  const h = await post(second.port, 'history', { room: 'durable-red' });
  assert.equal(h.status, 200, JSON.stringify(h.body));
  const msgs = h.body.msgs as Record<string, unknown>[];
  assert.deepEqual(msgs.map((m) => [m.seq, m.body, m.redacted]), [[1, 'm1', undefined], [2, null, true], [3, 'm3', undefined], [4, 'm4', undefined], [5, 'm5', undefined]]);
  // A redaction of a message only the store holds now, then seen by a client's hist.
  assert.equal((await post(second.port, 'redact', { room: 'durable-red', seq: 4 })).status, 200);
  const c = await openClient(t, second, 'reader');
  await joinRoom(c, 'durable-red');
  const hist = await c.request({ t: 'hist', room: 'durable-red' });
  assert.deepEqual((hist.msgs as Record<string, unknown>[]).map((m) => [m.seq, m.redacted ?? false]), [[1, false], [2, true], [3, false], [4, true], [5, false]]);
  assert.equal((await post(second.port, 'redact', { room: 'durable-red', seq: 99 })).status, 404);
  assert.equal((await post(second.port, 'history', { room: 'never-used' })).body.seq, 0);
});

test('publish with a repeated cid returns the same seq with dup, and stores one message', async (t) => {
  const engine = await startEngine(t, { apiKey: KEY });
  const a = await post(engine.port, 'publish', { room: 'cid-room', body: 'once', from: 'ci-bot', cid: 'deploy.42' });
  const b = await post(engine.port, 'publish', { room: 'cid-room', body: 'once', from: 'ci-bot', cid: 'deploy.42' });
  assert.deepEqual([a.status, a.body.seq, a.body.dup], [200, 1, false]);
  assert.deepEqual([b.status, b.body.seq, b.body.dup, b.body.epoch], [200, 1, true, a.body.epoch]);
  const other = await post(engine.port, 'publish', { room: 'cid-room', body: 'twice', from: 'other-bot', cid: 'deploy.42' });
  assert.deepEqual([other.body.seq, other.body.dup], [2, false], 'the same cid from another user is a message of its own');
  const h = await post(engine.port, 'history', { room: 'cid-room' });
  assert.equal((h.body.msgs as unknown[]).length, 2);
  assert.equal((await post(engine.port, 'publish', { room: 'cid-room', body: 1, cid: 'bad cid!' })).status, 400);
});

test('presence pages through a room\'s users with a cursor, each page within maxHistBytes, info with its own page', async (t) => {
  // info from the hook: 3000 B each, so a 16 KiB page holds at most five users with theirs. The
  // rings are 64 KiB: a reply listing all twelve (36 KB) would not fit one (at most 32 KiB).
  const engine = await startEngine(t, {
    apiKey: KEY, maxHistBytes: 16 << 10, maxInfoBytes: 4096, ringBytes: 1 << 16, maxFrameBytes: 16 << 10,
    authenticate: ({ query }) => {
      const user = new URLSearchParams(query).get('user') ?? '';
      return user.startsWith('big') ? { user, info: { pad: 'p'.repeat(3000) } } : { user };
    },
  });
  const names = ['u3', 'u1', 'u5', 'u2', 'u4'];
  for (const u of names) await joinRoom(await openClient(t, engine, u), 'page-room');
  const pages: string[][] = [];
  let cursor: unknown = null;
  do {
    const p = await post(engine.port, 'presence', { room: 'page-room', limit: 2, cursor });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    assert.equal(p.body.connections, 5, 'connections counts the whole room');
    pages.push(p.body.users as string[]);
    cursor = p.body.cursor;
  } while (cursor !== null && pages.length < 10);
  assert.deepEqual(pages, [['u1', 'u2'], ['u3', 'u4'], ['u5']], 'sorted by name, limit per page, cursor null at the end');
  const all = await post(engine.port, 'presence', { room: 'page-room' });
  assert.deepEqual(all.body.users, ['u1', 'u2', 'u3', 'u4', 'u5']);
  assert.equal(all.body.cursor, null);
  matchesDoc('presence', all.body);
  assert.equal((await post(engine.port, 'presence', { room: 'page-room', limit: 0 })).status, 400);
  assert.equal((await post(engine.port, 'presence', { room: 'page-room', cursor: 5 })).status, 400);

  // Twelve users with 3000 B of info each: pages are cut by bytes, not by the default limit.
  for (let i = 10; i < 22; i++) await joinRoom(await openClient(t, engine, `big${i}`), 'big-room');
  const seen: string[] = [];
  cursor = null;
  let n = 0;
  do {
    const p = await post(engine.port, 'presence', { room: 'big-room', cursor });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    const users = p.body.users as string[];
    assert.ok(users.length >= 1 && users.length <= 5, `a page within 16 KiB holds 1..5 of them (${users.length})`);
    assert.deepEqual(Object.keys(p.body.info as object).sort(), [...users].sort(), 'each page carries the info of its own users');
    seen.push(...users);
    cursor = p.body.cursor;
    n++;
  } while (cursor !== null && n < 20);
  assert.ok(n >= 3, `several pages (${n})`);
  assert.deepEqual(seen, Array.from({ length: 12 }, (_, i) => `big${i + 10}`));
});

test('rooms pages stay within maxHistBytes per shard, so a page of long names fits a 64 KiB ring; the cursor still finds every room once', async (t) => {
  const engine = await startEngine(t, { apiKey: KEY, ringBytes: 1 << 16, maxHistBytes: 4096, maxFrameBytes: 4096, maxRoomsPerConn: 600 });
  // 600 rooms of 100-byte names: all of a shard's in one reply would be ~35 KB, more than a ring record (32 KiB).
  const names = Array.from({ length: 600 }, (_, i) => `r${String(i).padStart(4, '0')}-${'n'.repeat(94)}`);
  const member = await openClient(t, engine, 'member');
  for (const n of names) await joinRoom(member, n);
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const r = await post(engine.port, 'rooms', { limit: 1000, cursor });
    assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
    const page = (r.body.rooms as { room: string }[]).map((x) => x.room);
    assert.ok(page.length >= 1);
    seen.push(...page);
    cursor = r.body.cursor as string | null;
    pages++;
  } while (cursor !== null && pages < 100);
  assert.ok(pages > 1, `several pages (${pages})`);
  assert.deepEqual(seen, names, 'every room once, in name order');
  assert.equal(engine.stats().shards.reduce((a, s) => a + Number(s.restarts), 0), 0, 'no shard restarted');
});
