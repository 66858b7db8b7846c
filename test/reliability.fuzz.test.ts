/**
 * Reliability: protocol fuzzing. Eight concurrent connections send at least 100,000 frames
 * generated from a seeded PRNG (SHARDCHAT_FUZZ_SEED, SHARDCHAT_FUZZ_FRAMES override): valid
 * frames of every type in every encoding variant, and mutations of them (bit flips, truncation,
 * appended bytes, wrong field types, unknown `t`, huge strings within maxFrame, nesting beyond 32
 * levels, negative / fractional / huge numbers, extension types, arrays, text frames, non-string
 * and duplicate keys, random bytes).
 *
 * Every reply is checked against an oracle written from PROTOCOL.md (test/helpers/fuzz-msgpack.ts):
 * a frame with a valid `ref` gets exactly one reply carrying it; a frame the contract calls
 * invalid gets an `err` (never acted on); a valid one never gets a validation error; every frame
 * gets exactly one reply; `msg`s of a room arrive in seq order without gaps between `joined` and
 * `left`. The engine must not crash, restart a shard or close a connection (except 1009 for an
 * oversize message). Afterwards normal traffic works and, once every client is gone, the
 * engine's state is empty again (roomTtlMs 0).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { decode } from '@msgpack/msgpack';
import { createEngine } from '../engine/index.js';
import { guardHandles } from './helpers/leaks.js';
import { roomsPerShard } from './helpers/engine.js';
import { TestClient, waitFor, type Frame } from './helpers/client.js';
import { A, Bin, F, I, M, Raw, Rng, S, X, encodeV, expect, type Expectation, type V } from './helpers/fuzz-msgpack.js';
import { OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, RawClient, closePayload, wsFrame } from './helpers/raw-client.js';

guardHandles();

type Engine = Awaited<ReturnType<typeof createEngine>>;
type EngineOptions = NonNullable<Parameters<typeof createEngine>[0]>;

const SEED = Number(process.env.SHARDCHAT_FUZZ_SEED ?? 0x5eed2024) >>> 0;
/** At least 100,000 by default; the variable exists to run a longer soak (or a quick local try). */
const TOTAL_FRAMES = Number(process.env.SHARDCHAT_FUZZ_FRAMES ?? 100_000);
const CONNS = 8;
const WINDOW = 64;
const MAX_FRAME = 65536;
const SHARDS = 2;

async function start(t: TestContext, opts: Partial<EngineOptions> = {}): Promise<Engine> {
  const engine = await createEngine({
    port: 0, host: '127.0.0.1', shards: SHARDS, logLevel: 'silent', ratePerSec: 1e6, rateBurst: 1e6, roomTtlMs: 0,
    roomCreateRate: 1e6, roomCreateBurst: 1e6, ...opts,
  } as EngineOptions);
  t.after(() => engine.close());
  await engine.listen();
  return engine;
}

/** Every table of the engine is back to empty (shard numbers are published every 500 ms). */
async function assertEmpty(engine: Engine, what: string): Promise<void> {
  const empty = (): boolean => {
    const s = engine.stats();
    return s.connections === 0 && s.connRooms === 0 && s.pendingPublishes === 0 && s.shards.every((sh) =>
      sh.up && sh.rooms === 0 && sh.members === 0 && sh.conns === 0 && sh.presentUsers === 0 && sh.poolInUse === 0 &&
      sh.cursors === 0 && sh.historyMessages === 0 && sh.inboundDepth === 0 && sh.outboundDepth === 0 && sh.backlog === 0);
  };
  try {
    await waitFor(empty, what, 5000);
  } catch {
    const s = engine.stats();
    assert.fail(`${what}: engine state not empty after 5 s: ${JSON.stringify({
      connections: s.connections, connRooms: s.connRooms, pendingPublishes: s.pendingPublishes,
      shards: s.shards.map((sh) => ({ up: sh.up, rooms: sh.rooms, members: sh.members, conns: sh.conns, presentUsers: sh.presentUsers,
        cursors: sh.cursors, poolInUse: sh.poolInUse, historyMessages: sh.historyMessages, inboundDepth: sh.inboundDepth, outboundDepth: sh.outboundDepth, backlog: sh.backlog })),
    })}`);
  }
}

// ---- frame generation ----------------------------------------------------------------------

const ASCII = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@-';
const UNICODE = ['é', 'ß', '日本', '🙂', '\u0000', '\uffff', 'Ω', ' ', '"', '\\', '\n'];

interface Ctx {
  rng: Rng;
  privateRooms: string[];
  sharedRooms: string[];
  hugeRoom: string;
  nextRef: () => number;
}

function randText(rng: Rng, n: number, unicode: boolean): string {
  let s = '';
  for (let i = 0; i < n; i++) s += unicode && rng.chance(0.2) ? rng.pick(UNICODE) : ASCII[rng.int(ASCII.length)]!;
  return s;
}

/** A random body: any MessagePack value (no ext), nested at most `depth` more levels. */
function randValue(rng: Rng, depth: number): V {
  const k = rng.int(depth > 0 ? 12 : 9);
  switch (k) {
    case 0: return null;
    case 1: return rng.chance(0.5);
    case 2: return rng.range(-1000, 1000);
    case 3: return new I(BigInt(rng.u32()) * BigInt(rng.u32()), rng.pick(['u64', 'i64', 'auto'] as const));
    case 4: return rng.chance(0.5) ? rng.next() * 1e6 - 5e5 : new F(rng.next(), 32);
    case 5: return randText(rng, rng.int(40), true);
    case 6: return new Bin(rng.bytes(rng.int(32)));
    case 7: return new S(randText(rng, rng.int(20), false), rng.pick(['auto', 's8', 's16', 's32'] as const));
    case 8: return rng.int(128);
    case 9: case 10: return Array.from({ length: rng.int(5) }, () => randValue(rng, depth - 1));
    default: {
      const o: [V, V][] = [];
      for (let i = rng.int(5); i > 0; i--) o.push([randText(rng, rng.range(1, 8), true), randValue(rng, depth - 1)]);
      return new M(o);
    }
  }
}

/**
 * Nested containers, `levels` deep in all (the outer one is level 1), written as bytes so that
 * thousands of levels need no recursion: array-of-1, map {k: ...} and array16 [0, ...] wrappers.
 */
function nested(rng: Rng, levels: number): V {
  const parts: number[] = [];
  for (let i = 0; i < levels; i++) {
    const r = rng.int(3);
    if (r === 0) parts.push(0x91);
    else if (r === 1) parts.push(0x81, 0xa1, 0x6b);
    else parts.push(0xdc, 0x00, 0x02, 0x00);
  }
  if (rng.chance(0.5)) parts.push(0x01); else parts.push(0xa4, 0x6c, 0x65, 0x61, 0x66);
  return new Raw(Uint8Array.from(parts));
}

/** An integer value in one of the encodings the contract allows (any int encoding, or an integral float). */
function intVariant(rng: Rng, n: number): V {
  const r = rng.int(20);
  if (r < 12) return n;
  if (r === 12 && n < 2 ** 24) return new F(n, 32);
  if (r <= 13) return new F(n, 64);
  if (r === 14) return new I(n, 'u64');
  if (r === 15) return new I(n, 'i64');
  if (r === 16 && n < 2 ** 31) return new I(n, 'i32');
  if (r === 17 && n < 2 ** 32) return new I(n, 'u32');
  if (r === 18 && n < 65536) return new I(n, 'u16');
  if (r === 19 && n < 256) return new I(n, 'u8');
  return n;
}

const WEIRD_NUMBERS: V[] = [
  -1, -0.5, 0.5, 1.5, -(2 ** 31), 2 ** 32, 2 ** 32 - 1, 2 ** 32 + 1, 2 ** 53, 2 ** 53 - 1, 2 ** 53 + 2, 1e300, -1e300,
  new F(NaN), new F(Infinity), new F(-Infinity), new F(-0), new F(0.1, 32), new F(3, 32), new F(7),
  new I(2n ** 64n - 1n, 'u64'), new I(-(2n ** 63n), 'i64'), new I(-1, 'i8'), new I(-1, 'i64'), new I(2n ** 63n, 'u64'),
  new I(5, 'i64'), new I(0, 'u64'), null, '5', true, [5], new Bin(Uint8Array.of(5)),
];

function otherValue(rng: Rng): V {
  return rng.pick<() => V>([
    () => null, () => true, () => false, () => -1, () => 0.25, () => 'x', () => '', () => new Bin(rng.bytes(3)),
    () => [], () => [1, 2], () => new M([]), () => new M([['a', 1]]), () => new F(NaN), () => new I(2n ** 64n - 1n, 'u64'),
    () => 42, () => randValue(rng, 2), () => new S(Uint8Array.of(0xff, 0xfe), 'auto'),
  ])();
}

function randomExt(rng: Rng): X {
  const size = rng.pick([1, 2, 4, 8, 16, 0, 3, 20, 300]);
  return new X(rng.pick([0, 1, 5, 127, -1, -128]), rng.bytes(size), rng.chance(0.2));
}

/** A valid frame as map entries. */
function validFrame(ctx: Ctx): { entries: [V, V][]; t: string; room: string } {
  const rng = ctx.rng;
  const t = rng.weighted({ join: 20, pub: 28, leave: 8, hist: 16, read: 16, who: 12 });
  const rr = rng.next();
  const room = rr < 0.68 ? rng.pick(ctx.privateRooms) : rr < 0.93 ? rng.pick(ctx.sharedRooms) : `fz-x${rng.int(40)}`;
  const entries: [V, V][] = [['t', t], ['room', room]];
  const refRoll = rng.next();
  if (refRoll < 0.9) entries.push(['ref', intVariant(rng, ctx.nextRef())]);
  else if (refRoll < 0.94) entries.push(['ref', null]);
  switch (t) {
    case 'join':
      if (rng.chance(0.3)) entries.push(['since', rng.chance(0.1) ? null : intVariant(rng, rng.int(300))]);
      if (rng.chance(0.1)) entries.push(['epoch', rng.chance(0.2) ? null : randText(rng, rng.range(8, 20), false)]);
      break;
    case 'pub':
      entries.push(['body', rng.chance(0.02) ? nested(rng, 32) : rng.chance(0.1) ? null : randValue(rng, 4)]);
      break;
    case 'hist': {
      const w = rng.int(10);
      if (w < 4) entries.push(['before', intVariant(rng, rng.int(400))]);
      else if (w < 7) entries.push(['after', intVariant(rng, rng.int(400))]);
      else if (w === 7) entries.push(['before', null], ['after', intVariant(rng, rng.int(100))]);
      if (rng.chance(0.6)) entries.push(['limit', intVariant(rng, rng.range(1, 20))]);
      else if (rng.chance(0.1)) entries.push(['limit', null]);
      break;
    }
    case 'read':
      entries.push(['seq', intVariant(rng, rng.int(500))]);
      break;
  }
  if (rng.chance(0.08)) entries.push([randText(rng, rng.range(1, 12), true), randValue(rng, 3)]);
  if (rng.chance(0.04)) entries.push([rng.pick<V>([1, -5, null, true, new Bin(Uint8Array.of(1, 2)), [1], new F(2.5)]), randValue(rng, 2)]);
  shuffle(rng, entries);
  return { entries, t, room };
}

function shuffle<T>(rng: Rng, xs: T[]): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
}

const KEYS_OF_INTEREST = ['t', 'ref', 'room', 'body', 'since', 'epoch', 'before', 'after', 'limit', 'seq'];

function entryIndex(entries: [V, V][], key: string): number {
  return entries.findIndex(([k]) => k === key);
}

function setField(entries: [V, V][], key: string, v: V): void {
  const i = entryIndex(entries, key);
  if (i >= 0) entries[i]![1] = v; else entries.push([key, v]);
}

/** A mutation applied to a valid frame's entries, returning the frame to encode (may be a non-map). */
function astMutation(ctx: Ctx, kind: string, entries: [V, V][]): V {
  const rng = ctx.rng;
  switch (kind) {
    case 'wrongType': {
      const keys = entries.map(([k]) => k).filter((k): k is string => typeof k === 'string' && KEYS_OF_INTEREST.includes(k));
      const key = keys.length > 0 && rng.chance(0.8) ? rng.pick(keys) : rng.pick(KEYS_OF_INTEREST);
      setField(entries, key, otherValue(rng));
      return new M(entries);
    }
    case 'unknownT':
      if (rng.chance(0.15)) { const i = entryIndex(entries, 't'); if (i >= 0) entries.splice(i, 1); return new M(entries); }
      setField(entries, 't', rng.pick<V>(['PUB', 'joinx', '', 'j', 'msg', 'hello', 'err', 'joined', 'ack', 'presence', 'pub ', ' pub', 'le ave',
        randText(rng, rng.range(1, 30), true), new S(rng.bytes(rng.range(1, 6))), 1, null, true, ['pub'], new Bin(new TextEncoder().encode('pub'))]));
      return new M(entries);
    case 'huge': {
      const n = rng.range(1024, 60_000);
      const big = rng.chance(0.8) ? 'x'.repeat(n) : randText(rng, Math.floor(n / 4), true);
      const target = rng.weighted({ body: 50, room: 10, t: 10, epoch: 10, unknown: 15, key: 5 });
      if (target === 'body') {
        // A huge pub goes to the connection's own huge room: history replies elsewhere stay small.
        setField(entries, 't', 'pub'); setField(entries, 'room', ctx.hugeRoom); setField(entries, 'body', rng.chance(0.5) ? big : [big]);
      } else if (target === 'unknown') entries.push(['pad', big]);
      else if (target === 'key') entries.push([big, 1]);
      else setField(entries, target, big);
      return new M(entries);
    }
    case 'deep': {
      const levels = rng.chance(0.1) ? 32 : rng.chance(0.7) ? rng.range(33, 64) : rng.range(65, 5000);
      const where = rng.weighted({ body: 60, unknown: 15, key: 5, ref: 10, room: 10 });
      const v = nested(rng, levels);
      if (where === 'body') { setField(entries, 't', 'pub'); setField(entries, 'body', v); }
      else if (where === 'unknown') entries.push(['deep', v]);
      else if (where === 'key') entries.push([v, 1]);
      else setField(entries, where, v);
      return new M(entries);
    }
    case 'numbers': {
      const key = rng.pick(['ref', 'ref', 'seq', 'since', 'before', 'after', 'limit']);
      if (key === 'seq') setField(entries, 't', 'read');
      if (key === 'since') setField(entries, 't', 'join');
      if (key === 'before' || key === 'after' || key === 'limit') setField(entries, 't', 'hist');
      setField(entries, key, rng.pick(WEIRD_NUMBERS));
      return new M(entries);
    }
    case 'ext': {
      const ext = randomExt(rng);
      const where = rng.weighted({ body: 40, nested: 15, t: 5, room: 5, ref: 5, key: 10, unknown: 10, top: 10 });
      if (where === 'top') return ext;
      if (where === 'body') { setField(entries, 't', 'pub'); setField(entries, 'body', ext); }
      else if (where === 'nested') { setField(entries, 't', 'pub'); setField(entries, 'body', [1, new M([['a', [ext]]])]); }
      else if (where === 'key') entries.push([ext, 1]);
      else if (where === 'unknown') entries.push(['x', ext]);
      else setField(entries, where, ext);
      return new M(entries);
    }
    case 'array': {
      const r = rng.int(5);
      if (r === 0) return entries.flat();
      if (r === 1) return new A(entries.map(([k, v]) => [k, v]));
      if (r === 2) return rng.pick<V>([null, 1, 'join', true, new F(1.5), new Bin(Uint8Array.of(0x81))]);
      if (r === 3) return [new M(entries)];
      return new M([]);
    }
    case 'nonStringKeys': {
      for (let i = rng.range(1, 3); i > 0; i--) {
        entries.push([rng.pick<V>([new Bin(new TextEncoder().encode('ref')), new Bin(new TextEncoder().encode('t')), 1, -1, 0, null, true,
          [1], new M([['a', 1]]), new F(1.5), new I(2n ** 64n - 1n, 'u64')]), rng.chance(0.5) ? intVariant(rng, ctx.nextRef()) : otherValue(rng)]);
      }
      const j = rng.int(entries.length);
      const last = entries.pop()!;
      entries.splice(j, 0, last);
      return new M(entries);
    }
    case 'dup': {
      const r = rng.int(10);
      if (r < 2) { entries.push(['zz', 1], ['zz', 2]); return new M(entries); } // unknown keys twice: fine
      const keys = entries.map(([k]) => k).filter((k): k is string => typeof k === 'string' && KEYS_OF_INTEREST.includes(k));
      const key = rng.pick(keys.length > 0 ? keys : ['t']);
      const i = entryIndex(entries, key);
      const v = r < 6 && i >= 0 ? entries[i]![1] : key === 'ref' ? intVariant(rng, ctx.nextRef()) : otherValue(rng);
      entries.splice(rng.int(entries.length + 1), 0, [new S(key, rng.pick(['auto', 's8'] as const)), v]);
      return new M(entries);
    }
    case 'missing': {
      const key = rng.pick(['room', 'body', 'seq', 't', 'room']);
      if (key === 'body') setField(entries, 't', 'pub');
      if (key === 'seq') setField(entries, 't', 'read');
      const i = entryIndex(entries, key);
      if (i >= 0) entries.splice(i, 1);
      return new M(entries);
    }
    case 'room':
      setField(entries, 'room', rng.pick<V>(['', 'a b', 'a/b', 'ä', 'x'.repeat(129), 'y'.repeat(128), 'room\u0000', 'r#1', 'r\n',
        new Bin(new TextEncoder().encode('lobby')), 7, null, ['lobby'], new S(Uint8Array.of(0xc3, 0x28)), new S('fz-ok', 's32')]));
      return new M(entries);
    default:
      throw new Error(`unknown mutation ${kind}`);
  }
}

function byteMutation(rng: Rng, kind: string, b: Uint8Array): Uint8Array {
  switch (kind) {
    case 'bitflip': {
      const out = b.slice();
      if (out.length === 0) return out;
      for (let i = rng.range(1, 4); i > 0; i--) { const p = rng.int(out.length); out[p] = out[p]! ^ (1 << rng.int(8)); }
      return out;
    }
    case 'truncate': return b.slice(0, b.length === 0 ? 0 : rng.int(b.length));
    case 'append': {
      const extra = rng.chance(0.3) ? encodeV(new M([['t', 'who'], ['room', 'lobby']])) : rng.bytes(rng.range(1, 32));
      const out = new Uint8Array(b.length + extra.length);
      out.set(b); out.set(extra, b.length);
      return out;
    }
    case 'splice': {
      const out = Array.from(b);
      for (let i = rng.range(1, 3); i > 0; i--) {
        const p = rng.int(out.length + 1);
        const op = rng.int(3);
        if (op === 0) out.splice(p, 0, rng.u32() & 0xff);
        else if (op === 1 && out.length > 0) out.splice(Math.min(p, out.length - 1), 1);
        else if (out.length > 0) out[Math.min(p, out.length - 1)] = rng.pick([0xc1, 0xc0, 0xd4, 0xdf, 0xdb, 0xff, 0x00, 0x80, 0x9f, rng.u32() & 0xff]);
      }
      return Uint8Array.from(out);
    }
    default: throw new Error(`unknown byte mutation ${kind}`);
  }
}

interface Gen {
  /** Bytes of a binary message, or a string sent as a text message. */
  data: Uint8Array | string;
  kind: string;
}

function generate(ctx: Ctx): Gen {
  const rng = ctx.rng;
  const cls = rng.weighted({ valid: 34, ast: 36, bytes: 24, both: 2, text: 2, random: 2 });
  if (cls === 'text') {
    const s = rng.pick([() => JSON.stringify({ t: 'join', room: 'lobby', ref: ctx.nextRef() }), () => randText(rng, rng.int(100), true), () => '']);
    return { data: s(), kind: 'text' };
  }
  if (cls === 'random') return { data: rng.chance(0.1) ? new Uint8Array(0) : rng.bytes(rng.range(1, 64)), kind: 'random' };
  const f = validFrame(ctx);
  const fmt = rng.weighted({ auto: 90, m16: 5, m32: 5 });
  if (cls === 'valid') return { data: encodeV(new M(f.entries, fmt)), kind: 'valid' };
  let kind = '';
  let bytes: Uint8Array;
  if (cls === 'ast' || cls === 'both') {
    kind = rng.weighted({ wrongType: 14, unknownT: 10, huge: 3, deep: 8, numbers: 14, ext: 10, array: 6, nonStringKeys: 8, dup: 10, missing: 9, room: 8 });
    const v = astMutation(ctx, kind, f.entries);
    // Mutations append or replace entries; half the time move them anywhere, so that a broken
    // field also comes before `ref` (the reply must carry a ref read after the error too).
    if (v instanceof M && rng.chance(0.5)) shuffle(rng, v.entries);
    bytes = encodeV(v instanceof M ? new M(v.entries, fmt) : v);
  } else bytes = encodeV(new M(f.entries, fmt));
  if (cls === 'bytes' || cls === 'both') {
    const bk = rng.weighted({ bitflip: 40, truncate: 25, append: 20, splice: 15 });
    bytes = byteMutation(rng, bk, bytes);
    kind = kind === '' ? bk : `${kind}+${bk}`;
  }
  if (bytes.length > MAX_FRAME) bytes = bytes.subarray(0, MAX_FRAME);
  return { data: bytes, kind };
}

// ---- the fuzzing connection ----------------------------------------------------------------

const SUCCESS: Record<string, string> = { join: 'joined', leave: 'left', pub: 'ack', hist: 'hist', read: 'ack', who: 'who' };
const REPLY_TYPES = new Set(['joined', 'left', 'ack', 'hist', 'who', 'err']);
const ERR_CODES = new Set(['bad_frame', 'unknown_type', 'bad_request', 'bad_room', 'not_joined', 'too_many_rooms', 'rate_limited', 'overloaded', 'shutting_down', 'internal']);

interface Desc {
  n: number;
  kind: string;
  exp: Expectation;
  text: boolean;
  done: boolean;
  head: string;
}

function hexHead(d: Uint8Array | string): string {
  if (typeof d === 'string') return `text ${JSON.stringify(d.slice(0, 60))}`;
  const h = Buffer.from(d.subarray(0, 48)).toString('hex');
  return d.length > 48 ? `${h}... (${d.length} bytes)` : h;
}

/** Whether `reply` is an acceptable answer to the frame `d`; a reason when it is not. */
function judge(d: Desc, reply: Frame): string | null {
  const e = d.exp;
  if (reply.t === 'err') {
    const code = String(reply.code);
    if (!ERR_CODES.has(code)) return `unknown err code ${code}`;
    if (typeof reply.msg !== 'string') return 'err without a msg string';
    if (d.text) return code === 'bad_frame' ? null : `text frame answered ${code}, want bad_frame`;
    if (e.verdict === 'valid') {
      const ok = code === 'overloaded' || (code === 'too_many_rooms' && e.t === 'join') || (code === 'not_joined' && e.t !== 'join');
      return ok ? null : `valid ${e.t} frame answered err ${code} "${String(reply.msg)}"`;
    }
    if (e.verdict === 'mustErr') {
      if (!e.wellFormed) return code === 'bad_frame' || code === 'bad_request' ? null : `malformed frame (${e.why}) answered ${code}, want bad_frame`;
      return code === 'unknown_type' || code === 'bad_request' || code === 'bad_room' ? null : `invalid frame (${e.why}) answered ${code}`;
    }
    return null;
  }
  if (d.text) return `text frame was acted on: ${reply.t as string}`;
  if (e.verdict === 'mustErr') return `invalid frame (${e.why}) was acted on: got ${String(reply.t)}, want an err`;
  if (e.t !== null && reply.t !== SUCCESS[e.t]) return `${e.t} answered ${String(reply.t)}`;
  if (e.room !== null && reply.room !== e.room) return `reply for room ${String(reply.room)}, frame named ${e.room}`;
  return null;
}

class FuzzConn {
  readonly ws: WebSocket;
  sent = 0;
  replies = 0;
  reflessReplies = 0;
  reflessSuccess = 0;
  reflessAllowed = 0;
  reflessValidSent = 0;
  broadcasts = 0;
  readonly byType = new Map<string, number>();
  /** Frames sent by generator class (valid, each mutation, text, random bytes). */
  readonly kinds = new Map<string, number>();
  readonly errCodes = new Map<string, number>();
  readonly violations: string[] = [];
  violationCount = 0;
  private readonly pending = new Map<number, Desc[]>();
  /** Refs that two frames waiting at the same time carried: their replies cannot be told apart. */
  private readonly collided = new Set<number>();
  ambiguousMatches = 0;
  private readonly musts = new Set<Desc>();
  private readonly roomState = new Map<string, { in: boolean; next: number }>();
  private waiter: (() => void) | null = null;
  private waitTarget = 0;
  closeInfo: { code: number; reason: string } | null = null;
  hello: Frame | null = null;

  constructor(readonly port: number, readonly label: string) {
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/ws?user=${label}`, { perMessageDeflate: false, maxPayload: 256 << 20 });
    this.ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => this.onMessage(data as Buffer, isBinary));
    this.ws.on('close', (code: number, reason: Buffer) => {
      this.closeInfo = { code, reason: reason.toString() };
      this.waiter?.();
    });
    this.ws.on('error', (e: Error) => this.violate(`socket error: ${e.message}`));
  }

  opened(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.label}: no hello within 5 s`)), 5000);
      const check = (): void => {
        if (this.hello) { clearTimeout(timer); resolve(); } else if (this.closeInfo) { clearTimeout(timer); reject(new Error(`${this.label}: closed before hello`)); } else setTimeout(check, 5);
      };
      check();
    });
  }

  private violate(s: string): void {
    this.violationCount++;
    if (this.violations.length < 30) this.violations.push(s);
  }

  private bump(m: Map<string, number>, k: string): void {
    m.set(k, (m.get(k) ?? 0) + 1);
  }

  send(g: Gen): void {
    const text = typeof g.data === 'string';
    const exp: Expectation = text
      ? { wellFormed: false, mustRef: -1, mayRefs: [], verdict: 'mustErr', t: null, room: null, why: 'text frame' }
      : expect(g.data as Uint8Array);
    const d: Desc = { n: this.sent, kind: g.kind, exp, text, done: false, head: hexHead(g.data) };
    if (exp.mustRef >= 0) {
      this.addPending(exp.mustRef, d);
      this.musts.add(d);
    } else {
      for (const r of new Set(exp.mayRefs)) this.addPending(r, d);
      this.reflessAllowed++;
      if (exp.verdict !== 'mustErr') this.reflessValidSent++;
    }
    this.sent++;
    this.bump(this.kinds, g.kind);
    this.ws.send(g.data, { binary: !text });
  }

  private addPending(ref: number, d: Desc): void {
    const l = this.pending.get(ref);
    if (l) { l.push(d); this.collided.add(ref); } else this.pending.set(ref, [d]);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (!isBinary) { this.violate('server sent a text message'); return; }
    let f: Frame;
    try {
      // Bodies are forwarded as sent, so they may hold map keys that are neither strings nor numbers.
      const v = decode(data, { mapKeyConverter: (k: unknown) => (typeof k === 'string' || typeof k === 'number' ? k : `<key ${typeof k}>`) });
      if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) { this.violate(`server message is not a map: ${hexHead(data)}`); return; }
      f = v as Frame;
    } catch (e) {
      this.violate(`undecodable server message (${(e as Error).message}): ${hexHead(data)}`);
      return;
    }
    const t = String(f.t);
    this.bump(this.byType, t);
    if (this.hello === null) {
      if (t !== 'hello') this.violate(`first frame is ${t}, not hello`);
      this.hello = f;
      return;
    }
    if (t === 'hello') { this.violate('a second hello'); return; }
    if (REPLY_TYPES.has(t)) this.onReply(f, t);
    else if (t === 'msg' || t === 'presence') this.onBroadcast(f, t);
    else this.violate(`unknown server frame type ${t}`);
  }

  private onReply(f: Frame, t: string): void {
    this.replies++;
    if (t === 'err') this.bump(this.errCodes, String(f.code));
    if (t === 'joined' || t === 'left') this.trackMembership(f, t);
    if (t === 'hist') {
      const msgs = f.msgs as Frame[];
      if (!Array.isArray(msgs)) this.violate('hist without msgs');
      else for (let i = 1; i < msgs.length; i++) if ((msgs[i]!.seq as number) !== (msgs[i - 1]!.seq as number) + 1) { this.violate(`hist msgs not contiguous: ${msgs.map((m) => m.seq).join(',')}`); break; }
    }
    if (f.ref === undefined) {
      this.reflessReplies++;
      if (t !== 'err') this.reflessSuccess++;
    } else {
      const ref = f.ref as number;
      const list = this.pending.get(ref);
      const live = list ? list.filter((d) => !d.done) : [];
      if (live.length === 0) {
        this.violate(`reply carries ref ${ref}, which no frame sent (or already answered) carried: ${JSON.stringify(f).slice(0, 200)}`);
      } else {
        let chosen: Desc | null = null;
        let why = '';
        // With several frames waiting under one ref: first those that must get a reply with it,
        // then the one naming the reply's room.
        const rank = (d: Desc): number => (d.exp.mustRef === ref ? 2 : 0) + (typeof f.room === 'string' && d.exp.room === f.room ? 1 : 0);
        if (live.length > 1) live.sort((x, y) => rank(y) - rank(x));
        for (const d of live) {
          const r = judge(d, f);
          if (r === null) { chosen = d; break; }
          if (why === '') why = r;
        }
        if (chosen === null && this.collided.has(ref)) {
          chosen = live[0]!;
          this.ambiguousMatches++;
        } else if (chosen === null) {
          chosen = live[0]!;
          this.violate(`frame #${chosen.n} (${chosen.kind}) [${chosen.head}]: ${why}; reply ${JSON.stringify(f).slice(0, 200)}`);
        }
        chosen.done = true;
        this.musts.delete(chosen);
        // Drop answered descriptors (a 'may' one can sit under several refs).
        const rest = list!.filter((d) => !d.done);
        if (rest.length === 0) this.pending.delete(ref); else this.pending.set(ref, rest);
      }
    }
    if (this.waiter && this.sent - this.replies <= this.waitTarget) this.waiter();
  }

  private trackMembership(f: Frame, t: string): void {
    const room = String(f.room);
    const s = this.roomState.get(room) ?? { in: false, next: 0 };
    const seq = f.seq as number;
    if (t === 'joined') {
      if (typeof seq !== 'number' || typeof f.epoch !== 'string') { this.violate(`joined without seq/epoch: ${JSON.stringify(f)}`); return; }
      if (s.in && s.next !== seq + 1) this.violate(`${room}: joined again with seq ${seq} while the next msg expected is ${s.next}`);
      const missed = f.missed as Frame[] | undefined;
      if (missed !== undefined) {
        if (!Array.isArray(missed)) this.violate(`${room}: joined.missed not an array`);
        else {
          const first = seq - missed.length + 1;
          if (!missed.every((m, i) => m.t === 'msg' && m.seq === first + i && m.room === room)) this.violate(`${room}: joined.missed is not the contiguous run ending at seq ${seq}: ${missed.map((m) => m.seq).join(',')}`);
        }
        if (f.truncated === true) this.violate(`${room}: joined has both missed and truncated`);
      }
      s.in = true;
      s.next = seq + 1;
    } else s.in = false;
    this.roomState.set(room, s);
  }

  private onBroadcast(f: Frame, t: string): void {
    this.broadcasts++;
    const room = String(f.room);
    const s = this.roomState.get(room);
    if (!s || !s.in) { this.violate(`${t} for room ${room} while not joined to it (seq ${String(f.seq)})`); return; }
    if (t === 'msg') {
      if (f.seq !== s.next) this.violate(`${room}: msg seq ${String(f.seq)}, want ${s.next} (gap or reorder)`);
      if (typeof f.from !== 'string' || typeof f.ts !== 'number' || !('body' in f)) this.violate(`${room}: msg missing fields: ${JSON.stringify(f).slice(0, 200)}`);
      s.next = (f.seq as number) + 1;
    } else if (f.state !== 'join' && f.state !== 'leave') this.violate(`presence with state ${String(f.state)}`);
  }

  /** Resolves once at most `target` frames are without a reply. */
  async waitOutstanding(target: number, timeoutMs: number): Promise<void> {
    if (this.sent - this.replies <= target) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`${this.label}: ${this.sent - this.replies} frames still unanswered after ${timeoutMs} ms (sent ${this.sent}, replies ${this.replies}, closed ${JSON.stringify(this.closeInfo)}); violations: ${this.violations.slice(0, 5).join(' | ')}`));
      }, timeoutMs);
      this.waitTarget = target;
      this.waiter = () => {
        if (this.sent - this.replies <= target || this.closeInfo) {
          clearTimeout(timer);
          this.waiter = null;
          if (this.closeInfo) reject(new Error(`${this.label}: closed with ${this.closeInfo.code} "${this.closeInfo.reason}" during fuzzing (sent ${this.sent}, replies ${this.replies})`));
          else resolve();
        }
      };
    });
  }

  /** Frames that had to be answered with their ref and were not. */
  unansweredMusts(): Desc[] {
    return [...this.musts];
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) { resolve(); return; }
      const timer = setTimeout(() => { this.ws.terminate(); }, 2000);
      this.ws.once('close', () => { clearTimeout(timer); resolve(); });
      this.ws.close(1000);
    });
  }
}

function fmtMap(m: Map<string, number>): string {
  return [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v}`).join(' ');
}

test(`fuzz: ${TOTAL_FRAMES} generated and mutated frames from ${CONNS} connections; the engine answers each as the contract says and stays whole`, async (t) => {
  const engine = await start(t, { historyLimit: 200, maxBufferBytes: 64 << 20 });
  const shared = roomsPerShard(engine, SHARDS, 'fz-shared', 4).flat();
  const conns: FuzzConn[] = [];
  t.after(async () => { await Promise.all(conns.map((c) => c.close())); });
  for (let i = 0; i < CONNS; i++) conns.push(new FuzzConn(engine.port, `fuzz${i}`));
  await Promise.all(conns.map((c) => c.opened()));

  const perConn = Math.ceil(TOTAL_FRAMES / CONNS);
  const t0 = performance.now();
  await Promise.all(conns.map(async (c, i) => {
    const privateRooms = roomsPerShard(engine, SHARDS, `fz-c${i}`, 1).flat();
    const rng = new Rng(SEED + i * 7919);
    // Random refs (a tenth of them small, for the short integer encodings): a bit flip then
    // practically never turns one frame's ref into another's still waiting for its reply.
    const nextRef = (): number => (rng.chance(0.1) ? rng.int(65536) : rng.u32());
    const ctx: Ctx = { rng, privateRooms, sharedRooms: shared, hugeRoom: `fz-huge-${i}`, nextRef };
    // Join the huge room first (plain valid frames), so that huge pubs have somewhere to go.
    c.send({ data: encodeV(new M([['t', 'join'], ['room', ctx.hugeRoom], ['ref', ctx.nextRef()]])), kind: 'valid' });
    for (let n = 1; n < perConn; n++) {
      if (c.sent - c.replies >= WINDOW) await c.waitOutstanding(WINDOW / 2, 20_000);
      c.send(generate(ctx));
    }
    await c.waitOutstanding(0, 20_000);
  }));
  const ms = performance.now() - t0;

  const sent = conns.reduce((a, c) => a + c.sent, 0);
  const replies = conns.reduce((a, c) => a + c.replies, 0);
  const errs = new Map<string, number>();
  const types = new Map<string, number>();
  const kinds = new Map<string, number>();
  for (const c of conns) {
    for (const [k, v] of c.kinds) for (const part of k.split('+')) kinds.set(part, (kinds.get(part) ?? 0) + v);
    for (const [k, v] of c.errCodes) errs.set(k, (errs.get(k) ?? 0) + v);
    for (const [k, v] of c.byType) types.set(k, (types.get(k) ?? 0) + v);
  }
  console.log(`# fuzz seed 0x${SEED.toString(16)}: ${sent} frames from ${CONNS} connections in ${(ms / 1000).toFixed(1)} s (${Math.round(sent / (ms / 1000))} frames/s); ${replies} replies`);
  console.log(`# fuzz replies that could not be matched unambiguously (two frames waiting with one ref): ${conns.reduce((a, c) => a + c.ambiguousMatches, 0)}`);
  console.log(`# fuzz frames sent by kind (a frame mutated twice counts under both): ${fmtMap(kinds)}`);
  console.log(`# fuzz frames received by type: ${fmtMap(types)}`);
  console.log(`# fuzz err replies by code: ${fmtMap(errs)}`);
  const mainErrs = [...engine.counters.errors].map((v, i) => [i, v] as const).filter(([, v]) => v > 0).map(([i, v]) => `#${i}=${v}`).join(' ');
  console.log(`# fuzz engine counters.errors (main thread, by error number): ${mainErrs}`);

  // Each check is its own subtest, so that one failing does not hide the others.
  await t.test('every frame got exactly one reply; no connection closed; no shard crashed or restarted', () => {
    assert.ok(sent >= TOTAL_FRAMES, `sent ${sent} frames, want at least ${TOTAL_FRAMES}`);
    for (const c of conns) {
      assert.equal(c.closeInfo, null, `${c.label} was closed during fuzzing`);
      assert.equal(c.replies, c.sent, `${c.label}: every frame gets exactly one reply (sent ${c.sent}, replies ${c.replies})`);
    }
    assert.equal(engine.counters.closedByCode.size, 0, `connections closed during fuzzing: ${JSON.stringify([...engine.counters.closedByCode])}`);
    const st = engine.stats();
    assert.equal(st.connections, CONNS);
    for (const s of st.shards) {
      assert.ok(s.up, `shard ${s.index} down after fuzzing`);
      assert.equal(s.restarts, 0, `shard ${s.index} restarted ${s.restarts} times during fuzzing`);
    }
  });

  await t.test('every reply to a frame with a valid ref carries that ref, err included', () => {
    const missing: string[] = [];
    const byWhy = new Map<string, number>();
    for (const c of conns) {
      for (const d of c.unansweredMusts()) {
        missing.push(`${c.label} #${d.n} ${d.kind} (${d.exp.why}) ref ${d.exp.mustRef} [${d.head}]`);
        byWhy.set(d.exp.why, (byWhy.get(d.exp.why) ?? 0) + 1);
      }
      assert.ok(c.reflessReplies <= c.reflessAllowed, `${c.label}: ${c.reflessReplies} replies without ref, but only ${c.reflessAllowed} frames lacked a valid ref`);
      assert.ok(c.reflessSuccess <= c.reflessValidSent, `${c.label}: ${c.reflessSuccess} ref-less success replies for ${c.reflessValidSent} ref-less frames that could succeed`);
    }
    assert.deepEqual(missing.slice(0, 12), [], `${missing.length} frames with a valid ref got a reply without it (by what was wrong with them: ${fmtMap(byWhy)}; first 12 shown)`);
  });

  await t.test('invalid frames are never acted on, valid ones never refused as malformed; msgs in order without gaps', () => {
    const all = conns.flatMap((c) => c.violations.map((v) => `${c.label}: ${v}`));
    const count = conns.reduce((a, c) => a + c.violationCount, 0);
    assert.deepEqual(all.slice(0, 30), [], `${count} contract violations (first 30 shown)`);
    // Every kind of outcome was exercised, so the oracle was not vacuous.
    for (const code of ['bad_frame', 'unknown_type', 'bad_request', 'bad_room', 'not_joined']) {
      assert.ok((errs.get(code) ?? 0) > 0, `the fuzz produced no ${code} (generator too narrow)`);
    }
    for (const ty of ['joined', 'left', 'ack', 'hist', 'who', 'msg', 'presence']) assert.ok((types.get(ty) ?? 0) > 0, `no ${ty} frame seen`);
  });

  await t.test('a message over maxFrame closes with 1009 and a close frame (the only close allowed)', async () => {
    for (const size of [MAX_FRAME + 1, MAX_FRAME + 4096]) {
      const c = await TestClient.connect(engine.port, { user: 'big' });
      c.sendRaw(new Uint8Array(size).fill(0x90));
      const closed = await c.waitClosed(5000);
      assert.equal(closed.code, 1009, `a ${size}-byte message: close ${closed.code} (1006 = dropped without a close frame)`);
    }
    assert.deepEqual([...engine.counters.closedByCode], [[1009, 2]], 'closes seen by the engine');
  });

  await t.test('normal traffic works afterwards: join / pub / ack / msg in order on fresh connections', async () => {
    const a = await TestClient.connect(engine.port, { user: 'after-a' });
    const b = await TestClient.connect(engine.port, { user: 'after-b' });
    try {
      const ja = await a.request({ t: 'join', room: 'after-fuzz' });
      assert.equal(ja.t, 'joined', JSON.stringify(ja));
      assert.equal(ja.seq, 0);
      const jb = await b.request({ t: 'join', room: 'after-fuzz' });
      assert.equal(jb.t, 'joined', JSON.stringify(jb));
      const acks = await Promise.all(Array.from({ length: 50 }, (_, i) => b.request({ t: 'pub', room: 'after-fuzz', body: { i } })));
      assert.deepEqual(acks.map((x) => [x.t, x.seq]), acks.map((_, i) => ['ack', i + 1]), 'acks in send order');
      await a.next((f) => f.t === 'msg' && f.seq === 50, 5000);
      for (const c of [a, b]) {
        const msgs = c.framesOf('msg', 'after-fuzz');
        assert.deepEqual(msgs.map((m) => [m.seq, (m.body as { i: number }).i, m.from]), acks.map((_, i) => [i + 1, i, 'after-b']), `${c.label}: msgs in order`);
      }
      // The sender sees each msg before its ack (acks of one batch may follow all of its msgs).
      const order = b.frames.filter((f) => (f.t === 'msg' || f.t === 'ack') && f.room === 'after-fuzz').map((f) => `${f.t as string}${f.seq as number}`);
      assert.equal(order.length, 100, 'every msg and every ack, once');
      for (let i = 1; i <= 50; i++) {
        assert.ok(order.indexOf(`msg${i}`) >= 0 && order.indexOf(`msg${i}`) < order.indexOf(`ack${i}`), `msg${i} before ack${i} on the sender: ${order.join(' ')}`);
      }
      assert.deepEqual([...a.violations, ...b.violations], []);
    } finally {
      await a.close();
      await b.close();
    }
  });

  await t.test('once every client is gone the engine state is empty (roomTtlMs 0)', async () => {
    await Promise.all(conns.map((c) => c.close()));
    await assertEmpty(engine, 'after every fuzzing client closed');
  });
});

test('rate limit (10/s, burst 50): the 51st pub of a burst gets rate_limited with retryAfterMs and is never published', async (t) => {
  const engine = await start(t, { ratePerSec: 10, rateBurst: 50 });
  const c = await TestClient.connect(engine.port, { user: 'rl' });
  t.after(() => c.close());
  assert.deepEqual([(c.hello.limits as Frame).ratePerSec, (c.hello.limits as Frame).burst], [10, 50]);
  const j = await c.request({ t: 'join', room: 'rl' });
  assert.equal(j.t, 'joined');
  // The join cost one token; wait until the bucket is full again (1 token / 100 ms).
  await new Promise((r) => setTimeout(r, 250));
  // 55 pubs in one TCP write, so they arrive within a millisecond (no refill in between).
  const sock = (c.ws as unknown as { _socket: import('node:net').Socket })._socket;
  const refs: number[] = [];
  sock.cork();
  for (let i = 1; i <= 55; i++) {
    const ref = c.takeRef();
    refs.push(ref);
    c.send({ t: 'pub', room: 'rl', body: `x${i}`, ref });
  }
  sock.uncork();
  const replies = await Promise.all(refs.map((ref) => c.next((f) => f.ref === ref, 5000, `reply to ref ${ref}`)));
  const outcome = replies.map((r) => (r.t === 'ack' ? 'ack' : `${r.t as string}:${String(r.code)}`));
  assert.deepEqual(outcome.slice(0, 50), Array(50).fill('ack'), 'the first 50 pubs (the burst) are acked');
  assert.deepEqual(outcome.slice(50), Array(5).fill('err:rate_limited'), 'pubs 51..55 are rate_limited');
  for (const r of replies.slice(50)) {
    assert.equal(typeof r.retryAfterMs, 'number', `rate_limited without retryAfterMs: ${JSON.stringify(r)}`);
    assert.ok((r.retryAfterMs as number) > 0 && (r.retryAfterMs as number) <= 100, `retryAfterMs ${String(r.retryAfterMs)} (one token takes 100 ms)`);
  }
  // After waiting as told, a pub goes through; none of the refused bodies was ever published.
  await new Promise((r) => setTimeout(r, (replies[50]!.retryAfterMs as number) + 20));
  const after = await c.request({ t: 'pub', room: 'rl', body: 'after' });
  assert.equal(after.t, 'ack', JSON.stringify(after));
  assert.equal(after.seq, 51, 'the refused pubs took no seq');
  await c.next((f) => f.t === 'msg' && f.body === 'after', 5000);
  const bodies = c.framesOf('msg', 'rl').map((m) => m.body);
  assert.deepEqual(bodies, [...Array.from({ length: 50 }, (_, i) => `x${i + 1}`), 'after'], 'msgs: exactly the acked pubs');
  await new Promise((r) => setTimeout(r, 150)); // a token for the hist request
  const hist = await c.request({ t: 'hist', room: 'rl', limit: 100 });
  assert.deepEqual((hist.msgs as Frame[]).map((m) => m.body), bodies, 'history holds exactly the acked pubs');
  assert.deepEqual(c.violations, []);
});

test('WebSocket-level violations (unmasked, RSV bits, unknown opcodes, bad control frames, invalid UTF-8, bad close) end only the offending connection; the engine stays whole', async (t) => {
  const engine = await start(t, {});
  const bystander = await TestClient.connect(engine.port, { user: 'bystander' });
  t.after(() => bystander.close());
  assert.equal((await bystander.request({ t: 'join', room: 'wsv' })).t, 'joined');
  const who = (ref: number): Uint8Array => encodeV(new M([['t', 'who'], ['room', 'wsv'], ['ref', ref]]));
  const rsv = wsFrame(OP_BINARY, who(2)); rsv[0] = rsv[0]! | 0x40;
  const cases: Record<string, Uint8Array> = {
    'unmasked client frame': wsFrame(OP_BINARY, who(2), { mask: false }),
    'RSV1 without an extension': rsv,
    'reserved data opcode 3': wsFrame(3, Uint8Array.of(1)),
    'reserved control opcode 0xB': wsFrame(0xb, Uint8Array.of(1)),
    'fragmented ping': wsFrame(OP_PING, Uint8Array.of(1), { fin: false }),
    'continuation without a start': wsFrame(0, Uint8Array.of(1)),
    'text with invalid UTF-8': wsFrame(OP_TEXT, Uint8Array.of(0xff, 0xfe)),
    'ping with 126 bytes': wsFrame(OP_PING, new Uint8Array(126)),
    'close with code 999': wsFrame(OP_CLOSE, closePayload(999)),
    'close with 1 byte': wsFrame(OP_CLOSE, Uint8Array.of(3)),
    'length 2^63-1': Uint8Array.from([0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]),
  };
  const outcomes: string[] = [];
  for (const [name, bytes] of Object.entries(cases)) {
    const c = await RawClient.connect(engine.port, { user: 'violator' });
    await c.next((f) => f.t === 'hello');
    c.send({ t: 'join', room: 'wsv', ref: 1 });
    assert.equal((await c.next((f) => f.ref === 1)).t, 'joined', name);
    c.writeRaw(bytes);
    // uWS decides what a violation does: the connection ends, or the violation is tolerated and
    // the next request is answered, or (an unmasked frame: uWS reads 4 payload bytes as the mask)
    // the parser waits for bytes that never come. Whatever it is, the engine must stay whole.
    let outcome: string;
    const ended = await c.waitEnded(1000).then(() => true, () => false);
    if (ended) outcome = `closed${c.closeFrame ? ` (close frame ${c.closeFrame.code})` : ' (no close frame)'}`;
    else {
      c.send({ t: 'who', room: 'wsv', ref: 3 });
      const r = await c.next((f) => f.ref === 3, 1500).then((f) => f, () => null);
      if (r !== null) {
        assert.equal(r.t, 'who', `${name}: ${JSON.stringify(r)}`);
        outcome = 'tolerated';
      } else outcome = c.socketClosed ? 'closed at the next frame' : 'no reply, left open';
    }
    outcomes.push(`${name}: ${outcome}`);
    c.destroy();
    await c.ended;
    await bystander.next((f) => f.t === 'presence' && f.user === 'violator' && f.state === 'leave', 3000, `presence leave after "${name}"`);
  }
  console.log(`# ws-level violations: ${outcomes.join('; ')}`);
  // A fragmented message (legal) is reassembled and answered.
  const c = await RawClient.connect(engine.port, { user: 'frag' });
  await c.next((f) => f.t === 'hello');
  const m = encodeV(new M([['t', 'join'], ['room', 'wsv'], ['ref', 4]]));
  c.writeRaw(Buffer.concat([wsFrame(OP_BINARY, m.subarray(0, 3), { fin: false }), wsFrame(OP_PING, Uint8Array.of(9)), wsFrame(0, m.subarray(3, 5), { fin: false }), wsFrame(0, m.subarray(5))]));
  assert.equal((await c.next((f) => f.ref === 4)).t, 'joined');
  await c.close();
  const st = engine.stats();
  assert.ok(st.shards.every((s) => s.up && s.restarts === 0), 'shards up, never restarted');
  assert.equal((await bystander.request({ t: 'who', room: 'wsv' })).users instanceof Array, true);
  await bystander.close();
  await assertEmpty(engine, 'after the violations');
});
