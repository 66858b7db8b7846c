/**
 * Integration: every row of PROTOCOL.md's frame tables, against a real engine on 127.0.0.1:0 and
 * real WebSocket clients speaking @msgpack/msgpack. No engine part is mocked.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createEngine, type Engine, type EngineOptions } from '../engine/index.js';
import { startEngine, openClient as open, joinRoom as join, pubTo as pub } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { TestClient, tryUpgrade, httpGet, encode, ExtData, assertMembers, type Frame } from './helpers/client.js';

guardHandles();


/** A real engine on an ephemeral port, closed after the test. Rate limits are lifted unless the test sets them. */
const start = startEngine;

/** Publishes n bodies `{ i }` pipelined (window of 64 outstanding); returns acked seqs in send order. */
async function pubMany(c: TestClient, room: string, n: number): Promise<number[]> {
  const seqs: number[] = new Array<number>(n);
  let i = 0;
  const worker = async (): Promise<void> => {
    while (i < n) {
      const k = i++;
      for (;;) {
        const r = await c.request({ t: 'pub', room, body: { i: k } }, 10_000);
        if (r.t === 'err' && r.code === 'overloaded') {
          await new Promise((res) => setTimeout(res, Math.max(1, Number(r.retryAfterMs) || 5)));
          continue;
        }
        assert.equal(r.t, 'ack', `pub ${k}: ${JSON.stringify(r)}`);
        seqs[k] = r.seq as number;
        break;
      }
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  return seqs;
}

/** The reply to a request the test expects to fail with `code`; checks the err shape and the echoed ref. */
async function expectErr(c: TestClient, frame: Frame, code: string): Promise<Frame> {
  const r = await c.request(frame);
  assert.equal(r.t, 'err', `expected err ${code} for ${JSON.stringify(frame)}, got ${JSON.stringify(r)}`);
  assert.equal(r.code, code, `err code for ${JSON.stringify(frame)}: ${JSON.stringify(r)}`);
  assert.equal(typeof r.msg, 'string', `err.msg is a string: ${JSON.stringify(r)}`);
  assert.ok((r.msg as string).length > 0, 'err.msg is not empty');
  return r;
}

/** A round trip on the same room: every frame the engine emitted for that room before it has arrived after it. */
async function barrier(c: TestClient, room: string): Promise<Frame> {
  const r = await c.request({ t: 'who', room });
  assert.equal(r.t, 'who', `barrier who ${room}: ${JSON.stringify(r)}`);
  return r;
}

const sorted = (xs: unknown): string[] => [...(xs as string[])].sort();
const seqsOf = (fs: Frame[]): number[] => fs.map((f) => f.seq as number);
const range = (a: number, b: number): number[] => Array.from({ length: Math.max(0, b - a + 1) }, (_, k) => a + k);

describe('hello', () => {
  test('hello is the first frame and carries conn, user, v=1 and the configured limits', async (t) => {
    const engine = await start(t, { maxFrameBytes: 5000, maxRoomsPerConn: 7, ratePerSec: 123, rateBurst: 456, maxBufferBytes: 789_000 });
    const a = await open(t, engine, 'alice');
    const h = a.hello;
    assert.equal(a.frames[0], h, 'hello is the first frame');
    assert.equal(h.t, 'hello');
    assert.equal(typeof h.conn, 'string');
    assert.ok((h.conn as string).length > 0, 'conn is not empty');
    assert.equal(h.user, 'alice');
    assert.equal(h.v, 1);
    assert.equal(h.ref, undefined, 'hello carries no ref');
    const limits = h.limits as Frame;
    assert.equal(typeof limits, 'object');
    assert.equal(limits.maxFrame, 5000);
    assert.equal(limits.maxRooms, 7);
    assert.equal(limits.ratePerSec, 123);
    assert.equal(limits.burst, 456);
    assert.equal(limits.maxBuffer, 789_000);
    const a2 = await open(t, engine, 'alice');
    assert.equal(a2.hello.user, 'alice');
    assert.notEqual(a2.hello.conn, h.conn, 'two connections of one user get distinct conn ids');
  });

  test('hello limits are positive numbers with default options', async (t) => {
    const engine = await createEngine({ port: 0, host: '127.0.0.1', shards: 2, logLevel: 'silent' } as EngineOptions);
    t.after(() => engine.close());
    await engine.listen();
    const c = await open(t, engine, 'dflt');
    const limits = c.hello.limits as Frame;
    for (const k of ['maxFrame', 'maxRooms', 'ratePerSec', 'burst', 'maxBuffer']) {
      assert.equal(typeof limits[k], 'number', `limits.${k} is a number: ${JSON.stringify(limits)}`);
      assert.ok((limits[k] as number) > 0, `limits.${k} > 0`);
    }
  });

  test('without ?user= the user is anon-<conn>; conn ids are unique', async (t) => {
    const engine = await start(t);
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const c = await open(t, engine);
      assert.equal(typeof c.hello.conn, 'string');
      assert.equal(c.hello.user, `anon-${c.hello.conn as string}`);
      assert.ok(!seen.has(c.hello.conn as string), `conn ${c.hello.conn as string} reused`);
      seen.add(c.hello.conn as string);
    }
    const r = await open(t, engine, 'x', { path: '/ws?other=1' });
    assert.equal(r.hello.user, `anon-${r.hello.conn as string}`, 'other query parameters do not name the user');
  });

  test('user is percent-decoded; 64 bytes of the allowed set are accepted', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, undefined, { path: '/ws?user=al%40ice.B_9%2Dx' });
    assert.equal(a.hello.user, 'al@ice.B_9-x');
    const long = 'u'.repeat(64);
    const b = await open(t, engine, long);
    assert.equal(b.hello.user, long);
    const c = await open(t, engine, undefined, { path: '/ws?x=1&user=z.@_-Q' });
    assert.equal(c.hello.user, 'z.@_-Q');
  });

  test('an invalid user is refused at upgrade with HTTP 400', async (t) => {
    const engine = await start(t);
    const bad = [
      '/ws?user=',
      '/ws?user=a&user=b',
      '/ws?user=a&user=a',
      '/ws?user=a%20b',
      '/ws?user=a+b',
      '/ws?user=a/b',
      `/ws?user=${'a'.repeat(65)}`,
      '/ws?user=%ZZ',
      '/ws?user=abc%',
      '/ws?user=abc%4',
      '/ws?user=%E9',
      '/ws?user=%C3%A9',
      '/ws?user=a%00b',
      '/ws?user=a%2Fb',
      '/ws?user=a!b',
    ];
    for (const path of bad) {
      const r = await tryUpgrade(engine.port, path);
      assert.equal(r.status, 400, `upgrade ${path} answered ${JSON.stringify(r)}, want HTTP 400`);
    }
    const ok = await open(t, engine, 'still-fine');
    assert.equal(ok.hello.user, 'still-fine', 'the engine keeps serving after refused upgrades');
  });

  test('authenticate hook names the user; null refuses the upgrade with HTTP 401', async (t) => {
    const seen: { query: string; headers: Record<string, string> }[] = [];
    const engine = await start(t, {
      authenticate: async (req: { query: string; headers: Record<string, string>; url: string }) => {
        seen.push({ query: req.query, headers: req.headers });
        await new Promise((r) => setImmediate(r));
        if (req.query.includes('token=good')) return { user: 'tok-user' };
        if (req.headers['x-token'] === 'hdr') return { user: 'hdr-user' };
        return null;
      },
    });
    const a = await open(t, engine, undefined, { path: '/ws?token=good' });
    assert.equal(a.hello.user, 'tok-user');
    const b = await open(t, engine, undefined, { path: '/ws', headers: { 'X-Token': 'hdr' } });
    assert.equal(b.hello.user, 'hdr-user');
    const r = await tryUpgrade(engine.port, '/ws?token=bad');
    assert.equal(r.status, 401, `rejected upgrade answered ${JSON.stringify(r)}`);
    assert.ok(seen.some((s) => s.query.includes('token=good')), `authenticate saw the query: ${JSON.stringify(seen)}`);
  });

  test('createEngine rejects bad options with TypeError/RangeError naming the option', async () => {
    const cases: [Record<string, unknown>, typeof TypeError | typeof RangeError, RegExp][] = [
      [{ shards: -1 }, RangeError, /shards/],
      [{ shards: 0 }, RangeError, /shards/],
      [{ shards: 'two' }, TypeError, /shards/],
      [{ port: -1 }, RangeError, /port/],
      [{ port: 70_000 }, RangeError, /port/],
      [{ port: 'x' }, TypeError, /port/],
      [{ historyLimit: -1 }, RangeError, /historyLimit/],
      [{ maxFrameBytes: -5 }, RangeError, /maxFrameBytes/],
      [{ maxRoomsPerConn: 'x' }, TypeError, /maxRoomsPerConn/],
      [{ ratePerSec: -5 }, RangeError, /ratePerSec/],
      [{ authenticate: 42 }, TypeError, /authenticate/],
    ];
    for (const [opts, Cls, re] of cases) {
      let engine: Engine | undefined;
      await assert.rejects(
        async () => {
          engine = await createEngine({ host: '127.0.0.1', logLevel: 'silent', ...opts } as unknown as EngineOptions);
        },
        (e: unknown) => {
          assert.ok(e instanceof Cls, `createEngine(${JSON.stringify(opts)}) threw ${String(e)}, want ${Cls.name}`);
          assert.match((e as Error).message, re);
          return true;
        },
        `createEngine(${JSON.stringify(opts)}) must throw`,
      );
      if (engine) await engine.close();
    }
  });
});

describe('join / leave', () => {
  test('join -> joined with room, epoch, seq, unread, members; others get presence join', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const ja = await join(a, 'r1');
    assert.equal(ja.room, 'r1');
    assert.equal(typeof ja.epoch, 'string');
    assert.ok((ja.epoch as string).length > 0, 'epoch is not empty');
    assert.equal(ja.seq, 0, 'a new room has seq 0');
    assert.equal(ja.unread, 0);
    assertMembers(ja, ['alice']);
    assert.equal(ja.missed, undefined, 'no missed without since');
    assert.ok(ja.truncated === undefined || ja.truncated === false, 'no truncated without since');

    await pub(a, 'r1', 'one');
    await pub(a, 'r1', 'two');
    const b = await open(t, engine, 'bob');
    const jb = await join(b, 'r1');
    assert.equal(jb.epoch, ja.epoch, 'same room, same epoch');
    assert.equal(jb.seq, 2, 'joined.seq is the latest seq');
    assert.equal(jb.unread, 0, 'the cursor of a user new to the room starts at the latest seq');
    assertMembers(jb, ['alice', 'bob']);
    const p = await a.nextOf('presence', 'r1');
    assert.deepEqual({ room: p.room, user: p.user, state: p.state }, { room: 'r1', user: 'bob', state: 'join' });
    await barrier(b, 'r1');
    assert.deepEqual(b.framesOf('presence'), [], 'the joining connection gets no presence (alice was already there; bob is itself)');
    assert.deepEqual(b.framesOf('msg'), [], 'messages before joined.seq are not delivered');
  });

  test('re-join is not an error, emits no presence and does not duplicate delivery', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    await join(a, 'rj');
    const j1 = await join(b, 'rj');
    await a.nextOf('presence', 'rj');
    await pub(a, 'rj', 1);
    const j2 = await join(b, 'rj');
    assert.equal(j2.room, 'rj');
    assert.equal(j2.epoch, j1.epoch);
    assert.equal(j2.seq, 1, 're-join reports the current seq');
    assertMembers(j2, ['alice', 'bob']);
    const { seq } = await pub(a, 'rj', 2);
    await b.next((f) => f.t === 'msg' && f.seq === seq);
    await barrier(a, 'rj');
    await barrier(b, 'rj');
    assert.equal(a.framesOf('presence', 'rj').length, 1, `alice saw exactly one presence: ${JSON.stringify(a.framesOf('presence'))}`);
    assert.equal(b.framesOf('msg', 'rj').filter((f) => f.seq === seq).length, 1, 'msg after a re-join arrives once');
    assert.equal(b.framesOf('err').length, 0, 'no err for a re-join');
    const w = await barrier(b, 'rj');
    assert.deepEqual(sorted(w.users), ['alice', 'bob']);
  });

  test('leave -> left; a second leave -> not_joined; nothing of the room arrives after left', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    await join(a, 'lv');
    await join(b, 'lv');
    await a.nextOf('presence', 'lv');
    const l = await b.request({ t: 'leave', room: 'lv' });
    assert.equal(l.t, 'left', JSON.stringify(l));
    assert.equal(l.room, 'lv');
    const p = await a.next((f) => f.t === 'presence' && f.state === 'leave');
    assert.deepEqual({ room: p.room, user: p.user }, { room: 'lv', user: 'bob' });
    const e = await expectErr(b, { t: 'leave', room: 'lv' }, 'not_joined');
    assert.equal(typeof e.ref, 'number');
    await expectErr(b, { t: 'leave', room: 'never' }, 'not_joined');
    await pub(a, 'lv', 'while bob is away');
    // Re-joining after the pub is a barrier: anything the engine still routed to bob for seq 1 precedes this joined.
    const j = await join(b, 'lv');
    assert.equal(j.seq, 1);
    assert.deepEqual(b.framesOf('msg'), [], 'no msg reaches a connection that left');
    const who = await barrier(a, 'lv');
    assert.deepEqual(sorted(who.users), ['alice', 'bob']);
  });
});

describe('pub', () => {
  test('pub -> ack with seq; msg to every member, the sender included, with room/seq/from/body/ts', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    const c = await open(t, engine, 'carol');
    await join(a, 'p1');
    await join(b, 'p1');
    await join(c, 'p2');
    const body = { hello: 'world', n: [1, 2, 3], nested: { ok: true } };
    const t0 = Date.now();
    const ack = await a.request({ t: 'pub', room: 'p1', body });
    const t1 = Date.now();
    assert.equal(ack.t, 'ack', JSON.stringify(ack));
    assert.equal(ack.room, 'p1');
    assert.equal(ack.seq, 1);
    for (const m of [a, b]) {
      const f = await m.next((x) => x.t === 'msg' && x.room === 'p1' && x.seq === 1);
      assert.equal(f.from, 'alice');
      assert.deepEqual(f.body, body);
      assert.ok(Number.isInteger(f.ts), `ts is an integer: ${String(f.ts)}`);
      assert.ok((f.ts as number) >= t0 - 1000 && (f.ts as number) <= t1 + 1000, `ts ${String(f.ts)} is the engine's clock in ms (${t0}..${t1})`);
      assert.equal(f.ref, undefined, 'msg carries no ref');
    }
    const ack2 = await pub(b, 'p1', 'reply');
    assert.equal(ack2.seq, 2);
    const f2 = await a.next((x) => x.t === 'msg' && x.seq === 2);
    assert.equal(f2.from, 'bob');
    assert.equal(f2.body, 'reply');
    await barrier(c, 'p2');
    await barrier(a, 'p1');
    await barrier(b, 'p1');
    assert.deepEqual(c.framesOf('msg'), [], 'a connection in another room receives nothing of p1');
    assert.deepEqual(seqsOf(a.framesOf('msg', 'p1')), [1, 2]);
    assert.deepEqual(seqsOf(b.framesOf('msg', 'p1')), [1, 2]);
  });

  test('body may be nil or any MessagePack value (32 levels deep included); a missing body or a deeper one is bad_request', async (t) => {
    const engine = await start(t, { maxBodyDepth: 32 });
    const a = await open(t, engine, 'alice');
    await join(a, 'bodies');
    let deep: unknown = 'leaf';
    for (let i = 1; i < 32; i++) deep = i % 2 ? [deep] : { d: deep };
    const bodies: unknown[] = [
      null, 0, -1, 2 ** 40, -(2 ** 40), 1.5, '', 'text', true, false, [], {},
      new Uint8Array([0, 1, 2, 255]), { a: [1, { b: null }], 'ключ': 'значение' }, deep,
    ];
    for (const body of bodies) {
      const ack = await pub(a, 'bodies', body);
      const m = await a.next((f) => f.t === 'msg' && f.seq === ack.seq);
      assert.deepEqual(m.body, body, `body round trip of ${JSON.stringify(body)}`);
      assert.ok('body' in m, 'msg has a body field even when it is nil');
    }
    const e = await expectErr(a, { t: 'pub', room: 'bodies' }, 'bad_request');
    assert.equal(typeof e.ref, 'number');
    // Deeper than the documented limit (maxBodyDepth, 32 here) is bad_request; very deep input must not hurt the engine.
    // `deep` is 31 containers around a scalar; two more containers are too deep however levels are counted.
    for (const order of ['ref first', 'ref last'] as const) {
      const ref = a.takeRef();
      a.send(order === 'ref first' ? { ref, t: 'pub', room: 'bodies', body: [[deep]] } : { t: 'pub', room: 'bodies', body: [[deep]], ref });
      const r = await a.next((f) => f.t === 'err' || f.t === 'ack', 3000, `reply to a too-deep body (${order})`);
      assert.deepEqual([r.t, r.code], ['err', 'bad_request'], `too deep (${order}): ${JSON.stringify(r)}`);
      assert.equal(r.ref, ref, `the err for a too-deep body carries the request's ref (${order} in the map): ${JSON.stringify(r)}`);
    }
    let d5000: unknown = 0;
    for (let i = 0; i < 5000; i++) d5000 = [d5000];
    const bytes = Buffer.from(encode({ t: 'pub', room: 'bodies', ref: 777 }));
    // Append `body` by hand: @msgpack/msgpack refuses to encode 5000 levels. fixmap of 4 entries.
    const deepBytes = Buffer.concat([Buffer.from([0x84]), bytes.subarray(1), Buffer.from(encode('body')), Buffer.alloc(5000, 0x91), Buffer.from([0x00])]);
    a.sendRaw(deepBytes);
    const e2 = await a.next((f) => f.ref === 777 || f.t === 'err', 3000, 'reply to a 5000-level body');
    assert.equal(e2.t, 'err', JSON.stringify(e2));
    assert.equal(e2.code, 'bad_request', `5000 levels (deeper is bad_request): ${JSON.stringify(e2)}`);
    assert.equal(e2.ref, 777, 'the err carries the ref');
    const after = await pub(a, 'bodies', 'after');
    assert.equal(after.seq, bodies.length + 1, 'the rejected pubs got no seq');
  });

  test('one connection\'s pipelined pubs get seqs in the order sent', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    await join(a, 'order');
    const refs: number[] = [];
    for (let i = 0; i < 50; i++) {
      const ref = a.takeRef();
      refs.push(ref);
      a.send({ t: 'pub', room: 'order', body: i, ref });
    }
    const acks: Frame[] = [];
    for (const ref of refs) acks.push(await a.next((f) => f.ref === ref));
    assert.deepEqual(acks.map((f) => f.t), new Array<string>(50).fill('ack'));
    assert.deepEqual(seqsOf(acks), range(1, 50));
    await a.next((f) => f.t === 'msg' && f.seq === 50);
    const msgs = a.framesOf('msg', 'order');
    assert.deepEqual(seqsOf(msgs), range(1, 50));
    assert.deepEqual(msgs.map((f) => f.body), range(0, 49));
  });
});

describe('hist', () => {
  test('latest / before / after, default limit 50, limit above 500 counts as 500', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    await join(a, 'h');
    await join(b, 'h');
    const seqs = await pubMany(a, 'h', 520);
    assert.deepEqual(seqs, range(1, 520));
    await b.next((f) => f.t === 'msg' && f.seq === 520, 10_000);
    const live = new Map<number, Frame>(b.framesOf('msg', 'h').map((f) => [f.seq as number, f]));

    const check = async (q: Frame, want: number[], label: string): Promise<Frame> => {
      const r = await b.request({ t: 'hist', room: 'h', ...q });
      assert.equal(r.t, 'hist', `${label}: ${JSON.stringify(r).slice(0, 300)}`);
      assert.equal(r.room, 'h');
      const msgs = r.msgs as Frame[];
      assert.ok(Array.isArray(msgs), `${label}: msgs is an array`);
      assert.deepEqual(seqsOf(msgs), want, `${label}: seqs`);
      for (const m of msgs) assert.deepEqual(m, live.get(m.seq as number), `${label}: hist entry equals the live msg frame`);
      assert.ok(r.truncated === undefined || r.truncated === false, `${label}: not truncated`);
      return r;
    };
    await check({}, range(471, 520), 'latest, default limit');
    await check({ limit: 1 }, [520], 'latest 1');
    await check({ limit: 500 }, range(21, 520), 'limit 500');
    await check({ limit: 600 }, range(21, 520), 'limit 600 counts as 500');
    await check({ limit: 100_000 }, range(21, 520), 'huge limit counts as 500');
    await check({ before: 60, limit: 10 }, range(50, 59), 'before 60');
    await check({ before: 5 }, range(1, 4), 'before 5');
    await check({ before: 520 }, range(470, 519), 'before latest, default limit');
    await check({ after: 100, limit: 10 }, range(101, 110), 'after 100');
    await check({ after: 515, limit: 10 }, range(516, 520), 'after 515');
    await check({ after: 0, limit: 3 }, [1, 2, 3], 'after 0');
    await check({ after: 520 }, [], 'after latest');
    await check({ after: 10, limit: 600 }, range(11, 510), 'after with limit 600');

    await expectErr(b, { t: 'hist', room: 'h', limit: 0 }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', limit: -3 }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', limit: '5' }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', before: 10, after: 2 }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', before: 'x' }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', after: [1] }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', after: -1 }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', before: -5 }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', limit: 1.5 }, 'bad_request');
    await expectErr(b, { t: 'hist', room: 'h', after: 2.5 }, 'bad_request');
    await check({ limit: 2 }, [519, 520], 'usable after errors');
  });

  test('truncated when the range asked for starts before the oldest message kept (historyLimit)', async (t) => {
    const engine = await start(t, { historyLimit: 10 });
    const a = await open(t, engine, 'alice');
    await join(a, 'ht');
    assert.deepEqual(await pubMany(a, 'ht', 25), range(1, 25)); // kept: 16..25
    const q = async (extra: Frame): Promise<Frame> => {
      const r = await a.request({ t: 'hist', room: 'ht', ...extra });
      assert.equal(r.t, 'hist', JSON.stringify(r));
      return r;
    };
    const cases: [Frame, number[], boolean][] = [
      [{ limit: 10 }, range(16, 25), false],
      [{ limit: 3 }, range(23, 25), false],
      [{ limit: 20 }, range(16, 25), true],
      [{}, range(16, 25), true],
      [{ before: 20, limit: 10 }, range(16, 19), true],
      [{ before: 20, limit: 4 }, range(16, 19), false],
      [{ before: 10, limit: 5 }, [], true],
      [{ after: 0, limit: 5 }, [], true],
      [{ after: 14, limit: 5 }, range(16, 19), true],
      [{ after: 15, limit: 5 }, range(16, 20), false],
      [{ after: 20 }, range(21, 25), false],
    ];
    for (const [extra, want, truncated] of cases) {
      const r = await q(extra);
      assert.deepEqual(seqsOf(r.msgs as Frame[]), want, `hist ${JSON.stringify(extra)}: seqs`);
      if (truncated) assert.equal(r.truncated, true, `hist ${JSON.stringify(extra)} must be truncated`);
      else assert.ok(r.truncated === undefined || r.truncated === false, `hist ${JSON.stringify(extra)} must not be truncated: ${String(r.truncated)}`);
    }
  });
});

describe('read / who', () => {
  test('read -> ack with the cursor; never backwards; beyond latest counts as latest', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    await join(a, 'rd');
    await join(b, 'rd');
    await pubMany(b, 'rd', 5);
    const read = async (seq: unknown): Promise<number> => {
      const r = await a.request({ t: 'read', room: 'rd', seq });
      assert.equal(r.t, 'ack', `read ${String(seq)}: ${JSON.stringify(r)}`);
      assert.equal(r.room, 'rd');
      return r.seq as number;
    };
    assert.equal(await read(3), 3);
    assert.equal(await read(2), 3, 'the cursor never moves backwards');
    assert.equal(await read(3), 3);
    assert.equal(await read(100), 5, 'a read beyond the latest counts as the latest');
    await pub(b, 'rd', 'six');
    assert.equal(await read(4), 5, 'still not backwards after a new message');
    assert.equal(await read(6), 6);
    await expectErr(a, { t: 'read', room: 'rd' }, 'bad_request');
    await expectErr(a, { t: 'read', room: 'rd', seq: 'x' }, 'bad_request');
    await expectErr(a, { t: 'read', room: 'nope', seq: 1 }, 'not_joined');
  });

  test('who -> users: the distinct users present', async (t) => {
    const engine = await start(t);
    const a1 = await open(t, engine, 'alice');
    const a2 = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    const c = await open(t, engine, 'carol');
    await join(a1, 'w');
    await join(a2, 'w');
    await join(b, 'w');
    await join(c, 'elsewhere');
    const r = await b.request({ t: 'who', room: 'w' });
    assert.equal(r.t, 'who', JSON.stringify(r));
    assert.equal(r.room, 'w');
    assert.deepEqual(sorted(r.users), ['alice', 'bob'], 'users are distinct and only those in the room');
    await expectErr(c, { t: 'who', room: 'w' }, 'not_joined');
  });
});

describe('errors', () => {
  test('every err carries the ref, a code and a msg, and the connection stays usable', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    await join(a, 'e');
    const cases: [Frame, string][] = [
      [{ t: 'nope' }, 'unknown_type'],
      [{}, 'unknown_type'],
      [{ t: 5 }, 'unknown_type'],
      [{ t: null }, 'unknown_type'],
      [{ t: 'JOIN', room: 'e' }, 'unknown_type'],
      [{ t: 'join', room: '' }, 'bad_room'],
      [{ t: 'pub', room: 'e' }, 'bad_request'],
      [{ t: 'pub', room: 'other', body: 1 }, 'not_joined'],
      [{ t: 'hist', room: 'e', limit: 0 }, 'bad_request'],
      [{ t: 'read', room: 'e', seq: 'x' }, 'bad_request'],
      [{ t: 'who', room: 'other' }, 'not_joined'],
      [{ t: 'leave', room: 'other' }, 'not_joined'],
    ];
    for (const [frame, code] of cases) {
      const r = await expectErr(a, frame, code);
      assert.equal(typeof r.ref, 'number', `err for ${JSON.stringify(frame)} carries the ref`);
      assert.ok(a.isOpen, `connection open after ${code}`);
      const w = await barrier(a, 'e');
      assert.deepEqual(w.users, ['alice'], `usable after ${code}`);
    }
    const ack = await pub(a, 'e', 'still here');
    assert.equal(ack.seq, 1);
  });

  test('ref: 0..2^32-1 is echoed, nil counts as absent, anything else is bad_request', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    await join(a, 'refs');
    for (const ref of [0, 1, 255, 65_536, 2 ** 32 - 1]) {
      a.send({ t: 'who', room: 'refs', ref });
      const r = await a.next((f) => f.t === 'who' || f.t === 'err', 3000, `reply to ref ${ref}`);
      assert.equal(r.t, 'who', `ref ${ref}: ${JSON.stringify(r)}`);
      assert.equal(r.ref, ref, `ref ${ref} echoed`);
    }
    a.send({ t: 'who', room: 'refs', ref: null });
    const rn = await a.next((f) => f.t === 'who' || f.t === 'err', 3000, 'reply to nil ref');
    assert.equal(rn.t, 'who', `nil ref is absent, the request is served: ${JSON.stringify(rn)}`);
    assert.ok(rn.ref === undefined || rn.ref === null, `no ref echoed for a nil ref: ${JSON.stringify(rn)}`);
    for (const ref of ['1', -1, 2 ** 32, 2 ** 40, 1.5, true, [1], { a: 1 }]) {
      a.send({ t: 'who', room: 'refs', ref });
      const r = await a.next((f) => f.t === 'who' || f.t === 'err', 3000, `reply to ref ${JSON.stringify(ref)}`);
      assert.equal(r.t, 'err', `ref ${JSON.stringify(ref)} must be rejected: ${JSON.stringify(r)}`);
      assert.equal(r.code, 'bad_request', `ref ${JSON.stringify(ref)}: ${JSON.stringify(r)}`);
    }
    // A bad ref on a pub must not publish.
    a.send({ t: 'pub', room: 'refs', body: 'x', ref: -5 });
    const e = await a.next((f) => f.t === 'err' || f.t === 'ack', 3000, 'reply to pub with bad ref');
    assert.equal(e.code, 'bad_request', JSON.stringify(e));
    const ack = await pub(a, 'refs', 'y');
    assert.equal(ack.seq, 1, 'the pub with a bad ref got no seq');
  });

  test('not exactly one MessagePack map -> bad_frame (text, garbage, truncated, array, scalar, trailing bytes, ext types)', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    await join(a, 'bf');
    const who = (ref: number): Frame => ({ t: 'who', room: 'bf', ref });
    const concat = (...xs: Uint8Array[]): Uint8Array => Buffer.concat(xs);
    const cases: [string, Uint8Array | string, number | null][] = [
      ['text frame', 'hello', null],
      ['text frame holding JSON', JSON.stringify(who(901)), 901],
      ['text frame holding msgpack bytes', Buffer.from(encode(who(902))).toString('latin1'), 902],
      ['empty binary message', new Uint8Array(0), null],
      ['never-used byte 0xc1', new Uint8Array([0xc1]), null],
      ['garbage', new Uint8Array([0xde, 0xad, 0xbe, 0xef]), null],
      ['truncated map', encode(who(903)).slice(0, -2), 903],
      ['array', encode(['who', 'bf']), null],
      ['array of a map', encode([who(904)]), 904],
      ['scalar', encode(5), null],
      ['string', encode('who'), null],
      ['nil', encode(null), null],
      ['trailing byte', concat(encode(who(905)), new Uint8Array([0])), 905],
      ['two maps', concat(encode(who(906)), encode(who(907))), 906],
      ['ext type in a field', encode({ ...who(908), x: new ExtData(1, new Uint8Array([1, 2])) }), 908],
      ['timestamp ext in a field', encode({ ...who(909), x: new Date(0) }), 909],
      ['ext inside the body of a pub', encode({ t: 'pub', room: 'bf', body: [new ExtData(5, new Uint8Array([9]))], ref: 910 }), 910],
      ['top-level ext', encode(new ExtData(114, new Uint8Array([1, 2, 3]))), null],
    ];
    for (const [label, bytes, ref] of cases) {
      a.sendRaw(bytes);
      const e = await a.next((f) => f.t === 'err' || f.t === 'who' || f.t === 'ack', 3000, `err for ${label}`);
      assert.equal(e.t, 'err', `${label}: ${JSON.stringify(e)}`);
      assert.equal(e.code, 'bad_frame', `${label}: ${JSON.stringify(e)}`);
      assert.ok(a.isOpen, `open after ${label}`);
      await barrier(a, 'bf');
      if (ref !== null) {
        assert.equal(a.frames.filter((f) => f.ref === ref && f.t !== 'err').length, 0, `${label}: the request inside must not be served`);
      }
    }
    const ack = await pub(a, 'bf', 'fine');
    assert.equal(ack.seq, 1, 'no pub inside a bad frame got a seq');
  });

  test('bad room names -> bad_room for every request type', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const bad = ['', 'a'.repeat(129), 'a b', 'héllo', '日本', 'room/1', 'room#1', 'tab\t', 'x\u0000', 'a,b', 'q?'];
    for (const room of bad) {
      for (const frame of [
        { t: 'join', room },
        { t: 'leave', room },
        { t: 'pub', room, body: 1 },
        { t: 'hist', room },
        { t: 'read', room, seq: 1 },
        { t: 'who', room },
      ]) {
        const e = await expectErr(a, frame, 'bad_room');
        assert.equal(typeof e.ref, 'number');
      }
    }
    const edge = ['a'.repeat(128), 'A-z_0.9:@-', 'x'];
    for (const room of edge) {
      const j = await join(a, room);
      assert.equal(j.room, room);
    }
  });

  test('must have joined: pub / hist / read / who -> not_joined', async (t) => {
    const engine = await start(t);
    const a = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    await join(b, 'nj');
    await pub(b, 'nj', 'exists');
    await join(a, 'mine');
    for (const frame of [
      { t: 'pub', room: 'nj', body: 1 },
      { t: 'hist', room: 'nj' },
      { t: 'read', room: 'nj', seq: 1 },
      { t: 'who', room: 'nj' },
    ]) {
      await expectErr(a, frame, 'not_joined');
    }
    await join(a, 'nj');
    await a.request({ t: 'leave', room: 'nj' });
    await expectErr(a, { t: 'pub', room: 'nj', body: 2 }, 'not_joined');
    await expectErr(a, { t: 'hist', room: 'nj' }, 'not_joined');
    const w = await barrier(b, 'nj');
    assert.deepEqual(w.users, ['bob']);
    const h = await b.request({ t: 'hist', room: 'nj' });
    assert.deepEqual(seqsOf(h.msgs as Frame[]), [1], 'rejected pubs were not stored');
  });

  test('too_many_rooms beyond maxRoomsPerConn (per connection)', async (t) => {
    const engine = await start(t, { maxRoomsPerConn: 2 });
    const a = await open(t, engine, 'alice');
    assert.equal((a.hello.limits as Frame).maxRooms, 2);
    await join(a, 'm1');
    await join(a, 'm2');
    await expectErr(a, { t: 'join', room: 'm3' }, 'too_many_rooms');
    await join(a, 'm1'); // re-join is not a new room
    await a.request({ t: 'leave', room: 'm1' });
    await join(a, 'm3');
    await expectErr(a, { t: 'join', room: 'm1' }, 'too_many_rooms');
    const a2 = await open(t, engine, 'alice');
    await join(a2, 'm4');
    await join(a2, 'm5');
    const w = await barrier(a, 'm3');
    assert.deepEqual(w.users, ['alice']);
    await expectErr(a, { t: 'who', room: 'm1' }, 'not_joined');
  });

  test('rate_limited with retryAfterMs beyond the token bucket; every request answered once; usable after', async (t) => {
    const engine = await start(t, { ratePerSec: 20, rateBurst: 4 });
    const a = await open(t, engine, 'alice');
    assert.equal((a.hello.limits as Frame).ratePerSec, 20);
    assert.equal((a.hello.limits as Frame).burst, 4);
    const refs: number[] = [];
    for (let i = 0; i < 12; i++) {
      const ref = a.takeRef();
      refs.push(ref);
      a.send({ t: 'join', room: 'rl', ref });
    }
    const replies: Frame[] = [];
    for (const ref of refs) replies.push(await a.next((f) => f.ref === ref, 3000, `reply to ref ${ref}`));
    const ok = replies.filter((r) => r.t === 'joined');
    const limited = replies.filter((r) => r.t === 'err' && r.code === 'rate_limited');
    assert.equal(ok.length + limited.length, 12, `only joined or rate_limited: ${JSON.stringify(replies)}`);
    assert.ok(ok.length >= 1 && ok.length <= 6, `about burst (4) requests pass (a token or two may refill), got ${ok.length}`);
    assert.ok(limited.length >= 6, `the rest are rate_limited, got ${limited.length}`);
    for (const r of limited) {
      assert.equal(typeof r.retryAfterMs, 'number', `rate_limited carries retryAfterMs: ${JSON.stringify(r)}`);
      assert.ok((r.retryAfterMs as number) > 0);
    }
    assert.ok(a.isOpen);
    // Wait as the engine says, then a request is served.
    let served: Frame | undefined;
    for (let i = 0; i < 20 && !served; i++) {
      const r = await a.request({ t: 'who', room: 'rl' });
      if (r.t === 'who') served = r;
      else {
        assert.equal(r.code, 'rate_limited', JSON.stringify(r));
        await new Promise((res) => setTimeout(res, r.retryAfterMs as number));
      }
    }
    assert.ok(served, 'served again after retryAfterMs');
  });
});

describe('http endpoints', () => {
  test('GET /metrics on the same port: Prometheus text', async (t) => {
    const engine = await start(t);
    const m = await httpGet(engine.port, '/metrics');
    assert.equal(m.status, 200, `GET /metrics: ${m.status} ${m.body.slice(0, 200)}`);
    assert.match(m.body, /^# (HELP|TYPE) \w+/m, 'Prometheus text exposition');
    assert.match(m.body, /^\w+(\{[^}]*\})? -?[\d.e+]+$/m, 'at least one sample line');
  });

  test('/healthz 200, /readyz 200; during close /readyz is never 200 and /healthz stays 200', async (t) => {
    const engine = await start(t);
    const h = await httpGet(engine.port, '/healthz');
    assert.equal(h.status, 200);
    const r = await httpGet(engine.port, '/readyz');
    assert.equal(r.status, 200);
    const c = await open(t, engine, 'alice');
    await join(c, 'hz');

    const closing = engine.close();
    const settle = <T>(p: Promise<T>): Promise<T | { error: string }> => p.catch((e: NodeJS.ErrnoException) => ({ error: e.code ?? e.message }));
    const [ready, health] = await Promise.all([settle(httpGet(engine.port, '/readyz')), settle(httpGet(engine.port, '/healthz'))]);
    await closing;
    if ('status' in ready) assert.equal(ready.status, 503, `/readyz while draining: ${ready.status}`);
    else assert.match(ready.error, /ECONNREFUSED|ECONNRESET|socket hang up/, `/readyz while draining: ${ready.error}`);
    if ('status' in health) assert.equal(health.status, 200, `/healthz while draining: ${health.status}`);
    else assert.match(health.error, /ECONNREFUSED|ECONNRESET|socket hang up/, `/healthz while draining: ${health.error}`);
    const closed = await c.waitClosed();
    assert.equal(closed.code, 1001);
    await assert.rejects(httpGet(engine.port, '/healthz'), (e: NodeJS.ErrnoException) => e.code === 'ECONNREFUSED', 'the port is released once close() resolves');
    await engine.close(); // safe twice
  });

  test('stats() reports connections and every shard', async (t) => {
    const engine = await start(t, { shards: 3 });
    const a = await open(t, engine, 'alice');
    const b = await open(t, engine, 'bob');
    await join(a, 's1');
    await join(b, 's1');
    const s = engine.stats();
    assert.equal(s.connections, 2);
    assert.equal(s.shards.length, 3);
    s.shards.forEach((sh: { index: number; up: boolean; restarts: number }, i: number) => {
      assert.equal(sh.index, i);
      assert.equal(sh.up, true);
      assert.equal(sh.restarts, 0);
    });
    const k = engine.shardOf('s1');
    assert.ok(Number.isInteger(k) && k >= 0 && k < 3, `shardOf in range: ${k}`);
    assert.equal(engine.shardOf('s1'), k, 'shardOf is stable');
    await b.close();
    const deadline = Date.now() + 3000;
    while (engine.stats().connections !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(engine.stats().connections, 1, 'a closed connection is no longer counted');
  });
});
