/**
 * Protocol smoke check of the benchmarks' single-threaded peer (native-bench/peers/uws-protocol.mjs):
 * the bar shardchat is measured against must speak the same v1 protocol, so a handful of the
 * project's own protocol assertions run against it: hello, join / pub / ack / msg order, since
 * with missed and truncated, hist, read cursors and unread, who, presence, the error codes and the
 * rate limit. The peer is a real child process on 127.0.0.1 (port 0, the port read back from its
 * stdout); the clients are the project's TestClient (ws + @msgpack/msgpack).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import Database from 'better-sqlite3';
import { decode } from '@msgpack/msgpack';
import { TestClient, tryUpgrade, type Frame } from './helpers/client.js';
import { guardHandles } from './helpers/leaks.js';

guardHandles();

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const peerFile = path.join(root, 'native-bench', 'peers', 'uws-protocol.mjs');
const sqlitePeerFile = path.join(root, 'native-bench', 'peers', 'uws-protocol-sqlite.mjs');

/** Starts the peer (killed after the test by its PID) and returns its port. */
async function startPeer(t: TestContext, args: string[] = [], file = peerFile): Promise<number> {
  const child = spawn(process.execPath, [file, '--port', '0', '--host', '127.0.0.1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const code = await exited;
    assert.equal(code, 0, 'the peer exits 0 on SIGTERM');
  });
  let err = '';
  child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
  return new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`peer did not listen within 10 s: ${err}`)), 10000);
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    void exited.then((code) => { clearTimeout(timer); reject(new Error(`peer exited (${code}) before listening: ${err}`)); });
  });
}

async function open(t: TestContext, port: number, user: string): Promise<TestClient> {
  const c = await TestClient.connect(port, { user });
  t.after(async () => {
    await c.close();
    assert.deepEqual(c.violations, [], `protocol violations seen by ${c.label}`);
  });
  return c;
}

const ofRoom = (c: TestClient, room: string): Frame[] => c.frames.filter((f) => f.room === room && (f.t === 'msg' || f.t === 'ack' || f.t === 'joined'));

test('the single-threaded peer speaks the v1 protocol: order, resume, history, cursors, presence, errors', async (t) => {
  const port = await startPeer(t, ['--rate-per-sec', '100000', '--rate-burst', '100000', '--history-limit', '5']);
  const a = await open(t, port, 'alice');
  assert.equal(a.hello.v, 1);
  assert.equal(a.hello.user, 'alice');
  assert.equal(typeof a.hello.conn, 'string');
  assert.deepEqual(Object.keys(a.hello.limits as object).sort(), ['burst', 'maxBuffer', 'maxFrame', 'maxRooms', 'ratePerSec']);

  const ja = await a.request({ t: 'join', room: 'r1' });
  assert.equal(ja.t, 'joined');
  assert.equal(ja.seq, 0);
  assert.equal(ja.members, 1);
  const epoch = ja.epoch as string;
  assert.ok(typeof epoch === 'string' && epoch.length >= 8 && epoch.length <= 20, `epoch ${epoch}`);

  const b = await open(t, port, 'bob');
  const jb = await b.request({ t: 'join', room: 'r1' });
  assert.equal(jb.members, 2);
  const pres = await a.nextOf('presence', 'r1');
  assert.deepEqual([pres.user, pres.state], ['bob', 'join']);
  assert.equal(b.framesOf('presence').length, 0, 'the joiner does not see its own presence');

  // pub x3 with refs: the msg reaches the sender before its ack; seqs 1..3; acks in pub order
  const refs = [a.takeRef(), a.takeRef(), a.takeRef()];
  for (const [i, ref] of refs.entries()) a.send({ t: 'pub', ref, room: 'r1', body: { n: i } });
  for (let i = 0; i < 3; i++) await b.nextOf('msg', 'r1');
  await a.next((f) => f.t === 'ack' && f.ref === refs[2], 3000, 'third ack');
  const seen = ofRoom(a, 'r1').slice(1).map((f) => `${f.t}${f.seq}`);
  assert.deepEqual(seen.filter((s) => s.startsWith('ack')), ['ack1', 'ack2', 'ack3']);
  for (let s = 1; s <= 3; s++) assert.ok(seen.indexOf(`msg${s}`) < seen.indexOf(`ack${s}`), `msg ${s} before its ack: ${seen.join(' ')}`);
  const msgs = b.framesOf('msg', 'r1');
  assert.deepEqual(msgs.map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(msgs.map((m) => (m.body as { n: number }).n), [0, 1, 2]);
  assert.equal(msgs[0]!.from, 'alice');
  assert.ok(Math.abs((msgs[0]!.ts as number) - Date.now()) < 60000, 'ts is ms since the epoch');

  // since: missed holds what came after it; another epoch, or a since before history, is truncated
  const c = await open(t, port, 'carol');
  const jc = await c.request({ t: 'join', room: 'r1', since: 1 });
  assert.deepEqual((jc.missed as Frame[]).map((m) => [m.t, m.seq]), [['msg', 2], ['msg', 3]]);
  assert.equal(jc.truncated, undefined);
  const c2 = await open(t, port, 'carol');
  const jc2 = await c2.request({ t: 'join', room: 'r1', since: 1, epoch: 'another-epoch' });
  assert.equal(jc2.truncated, true);
  assert.equal(jc2.missed, undefined);
  assert.equal(jc2.members, 3);

  // hist: latest, before; history keeps 5 messages here, so older ranges are truncated
  for (let i = 3; i < 8; i++) await a.request({ t: 'pub', room: 'r1', body: { n: i } });
  const h = await a.request({ t: 'hist', room: 'r1', limit: 2 });
  assert.deepEqual((h.msgs as Frame[]).map((m) => m.seq), [7, 8]);
  assert.equal(h.truncated, undefined);
  const hb = await a.request({ t: 'hist', room: 'r1', before: 6 });
  assert.deepEqual((hb.msgs as Frame[]).map((m) => m.seq), [4, 5]);
  assert.equal(hb.truncated, true);
  const jt = await (await open(t, port, 'dave')).request({ t: 'join', room: 'r1', since: 1 });
  assert.equal(jt.truncated, true, 'since before what history keeps');

  // read cursors: bob's starts at 0 (the room's seq when he first joined), moves on read, never back
  const rd = await b.request({ t: 'read', room: 'r1', seq: 6 });
  assert.deepEqual([rd.t, rd.seq], ['ack', 6]);
  const back = await b.request({ t: 'read', room: 'r1', seq: 2 });
  assert.equal(back.seq, 6, 'a cursor never moves backwards');
  const b2 = await open(t, port, 'bob');
  assert.equal((await b2.request({ t: 'join', room: 'r1' })).unread, 2);
  assert.equal((await a.request({ t: 'join', room: 'r1' })).unread, 0, 'publishing moves the sender\'s cursor');

  // who, presence leave (bob has two connections: only the last one leaving counts)
  const who = await a.request({ t: 'who', room: 'r1' });
  assert.deepEqual([...(who.users as string[])].sort(), ['alice', 'bob', 'carol', 'dave']);
  assert.equal((await b.request({ t: 'leave', room: 'r1' })).t, 'left');
  assert.equal(a.framesOf('presence', 'r1').filter((f) => f.state === 'leave').length, 0);
  await b2.close();
  const gone = await a.next((f) => f.t === 'presence' && f.state === 'leave', 3000, 'presence leave');
  assert.equal(gone.user, 'bob');

  // errors
  const e1 = await a.request({ t: 'pub', room: 'elsewhere', body: 1 });
  assert.deepEqual([e1.t, e1.code], ['err', 'not_joined']);
  const e2 = await a.request({ t: 'join', room: 'bad room!' });
  assert.equal(e2.code, 'bad_room');
  const e3 = await a.request({ t: 'nope' });
  assert.equal(e3.code, 'unknown_type');
  const e4 = await a.request({ t: 'hist', room: 'r1', limit: 0 });
  assert.equal(e4.code, 'bad_request');
  a.sendRaw('not msgpack');
  assert.equal((await a.nextOf('err')).code, 'bad_frame');
  const e5 = await a.request({ t: 'pub', room: 'r1' });
  assert.equal(e5.code, 'bad_request', 'pub without a body');
  // raw frames: a known key twice; an extension type; a key as str8 is still the key
  const enc = (...parts: (number | string)[]): Uint8Array => Uint8Array.from(parts.flatMap((x) => (typeof x === 'number' ? [x] : [...Buffer.from(x)])));
  a.sendRaw(enc(0x83, 0xa1, 't', 0xa3, 'who', 0xa4, 'room', 0xa2, 'r1', 0xa4, 'room', 0xa2, 'r1'));
  assert.equal((await a.nextOf('err')).code, 'bad_request', 'a key given twice');
  a.sendRaw(enc(0x83, 0xa1, 't', 0xa3, 'pub', 0xa4, 'room', 0xa2, 'r1', 0xa4, 'body', 0xd4, 0x01, 0x00));
  assert.equal((await a.nextOf('err')).code, 'bad_frame', 'an extension type');
  a.sendRaw(enc(0x82, 0xa1, 't', 0xa3, 'who', 0xd9, 0x04, 'room', 0xa2, 'r1'));
  assert.equal((await a.nextOf('who', 'r1')).t, 'who', 'room as str8');
  const bad = await tryUpgrade(port, '/ws?user=no%20spaces');
  assert.equal(bad.status, 400);
});

test('the single-threaded peer rate-limits per connection with retryAfterMs', async (t) => {
  const port = await startPeer(t, ['--rate-per-sec', '1', '--rate-burst', '3']);
  const a = await open(t, port, 'alice');
  assert.deepEqual([(a.hello.limits as Frame).ratePerSec, (a.hello.limits as Frame).burst], [1, 3]);
  for (let i = 0; i < 4; i++) a.send({ t: 'who', room: 'r1' });
  const limited = await a.next((f) => f.t === 'err' && f.code === 'rate_limited', 3000, 'rate_limited');
  assert.ok((limited.retryAfterMs as number) > 0 && (limited.retryAfterMs as number) <= 1000, `retryAfterMs ${limited.retryAfterMs}`);
  assert.equal(a.framesOf('err').filter((f) => f.code === 'not_joined').length, 3, 'the first three frames were acted on');
});

test('the SQLite variant of the peer has every acked message in its database file', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'shardchat-peer-sqlite-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'peer.db');
  const port = await startPeer(t, ['--rate-per-sec', '100000', '--rate-burst', '100000', '--db', file, '--keep-db'], sqlitePeerFile);
  const a = await open(t, port, 'alice');
  await a.request({ t: 'join', room: 'r1' });
  const refs = [a.takeRef(), a.takeRef(), a.takeRef()];
  for (const [i, ref] of refs.entries()) a.send({ t: 'pub', ref, room: 'r1', body: { n: i } });
  await a.next((f) => f.t === 'ack' && f.ref === refs[2], 3000, 'third ack');
  // acked means kept: another connection to the file sees all three, committed
  const db = new Database(file, { readonly: true });
  t.after(() => db.close());
  const rows = db.prepare('SELECT room, seq, from_user, frame FROM messages ORDER BY seq').all() as { room: string; seq: number; from_user: string; frame: Uint8Array }[];
  assert.deepEqual(rows.map((r) => [r.room, r.seq, r.from_user]), [['r1', 1, 'alice'], ['r1', 2, 'alice'], ['r1', 3, 'alice']]);
  const f = decode(rows[2]!.frame) as Frame;
  assert.deepEqual([f.t, f.seq, (f.body as { n: number }).n], ['msg', 3, 2]);
});

test('the peers are independent of the engine: they import nothing of engine/, workers/ or dist/', () => {
  const dir = path.join(root, 'native-bench', 'peers');
  const files = readdirSync(dir).filter((f) => f.endsWith('.mjs'));
  assert.ok(files.includes('uws-protocol.mjs') && files.includes('protocol-server.mjs'));
  const all: string[] = [];
  for (const f of files) {
    const text = readFileSync(path.join(dir, f), 'utf8');
    const specs = [...text.matchAll(/(?:from\s+|require\()\s*'([^']+)'/g)].map((m) => m[1]!);
    all.push(...specs);
    for (const sp of specs) assert.ok(!/(^|\/)(engine|workers|dist)(\/|$)/.test(sp) && !sp.startsWith('../'), `${f} imports ${sp}`);
  }
  assert.ok(all.includes('@trufflesuite/uws-js-unofficial') && all.includes('./mp-wire.mjs'), `imports found: ${all.join(', ')}`);
});
