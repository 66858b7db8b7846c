/**
 * The server HTTP API (docs/API.md): `POST /api/v1/<method>` with a JSON body and
 * `Authorization: Bearer <apiKey>` (compared in constant time), served by uWS on the main port,
 * no framework. Answers are JSON: 200 with the result, or a real HTTP status with
 * `{error: {code, msg}}` using the protocol's error codes (plus `not_found`, `too_large`).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { EngineError } from '../errors.js';
import { isValidRoom, isValidUser } from '../protocol/frames.js';
import { readBody } from './api-body.js';
import type { Engine } from './engine.js';
import type { HttpResponse, TemplatedApp } from './uws.js';

export const API_PREFIX = '/api/v1/';
/** Most rooms one `broadcast` names. */
export const MAX_BROADCAST_ROOMS = 100;
/** Longest ban a `kick` sets (30 days). */
export const MAX_BAN_SEC = 30 * 86_400;

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, msg: string) { super(msg); }
}

const STATUS: Record<number, string> = {
  200: '200 OK', 400: '400 Bad Request', 401: '401 Unauthorized', 404: '404 Not Found', 405: '405 Method Not Allowed',
  413: '413 Payload Too Large', 500: '500 Internal Server Error', 503: '503 Service Unavailable',
};

type Args = Record<string, unknown>;
type Method = (engine: Engine, a: Args) => Promise<unknown> | unknown;

const room = (a: Args, key = 'room'): string => {
  const r = a[key];
  if (r === undefined) throw new ApiError(400, 'bad_request', `missing field: ${key}`);
  if (!isValidRoom(r)) throw new ApiError(400, 'bad_room', `${key} must be 1..128 bytes of [A-Za-z0-9_.:@-]`);
  return r;
};
const user = (v: unknown, key: string): string => {
  if (!isValidUser(v)) throw new ApiError(400, 'bad_request', `${key} must be 1..64 bytes of [A-Za-z0-9_.@-]`);
  return v;
};
const optInt = (a: Args, key: string, min: number, max: number): number | undefined => {
  const v = a[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ApiError(400, 'bad_request', `${key} must be an integer ${min}..${max}`);
  return v;
};

async function publishOne(engine: Engine, r: string, a: Args): Promise<{ seq: number; epoch: string }> {
  if (!('body' in a)) throw new ApiError(400, 'bad_request', 'missing field: body');
  const opts: { from?: string; cid?: string } = {};
  if (a.from !== undefined) opts.from = user(a.from, 'from');
  if (a.cid !== undefined) {
    if (typeof a.cid !== 'string' || a.cid.length === 0 || a.cid.length > 64) throw new ApiError(400, 'bad_request', 'cid must be a string of 1..64 characters');
    opts.cid = a.cid; // passed through: engine.publish deduplicates on it where it supports cid (issue 11)
  }
  return engine.publish(r, a.body, opts);
}

/** A stored msg as JSON: binary strings as {$base64}, integers past 2^53 as decimal strings. */
function jsonSafe(v: unknown): unknown {
  if (v instanceof Uint8Array) return { $base64: Buffer.from(v).toString('base64') };
  if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSafe(x)]));
  return v;
}

function shardError(r: unknown): void {
  const e = r as { error?: string; msg?: string };
  if (typeof e?.error === 'string') throw new ApiError(e.error === 'not_found' ? 404 : e.error === 'unavailable' ? 503 : 400, e.error, e.msg ?? e.error);
}

/**
 * The stored `ts` of message `seq`: read back from history (the shard's ack carries seq and epoch
 * only), so the answer is the message's own timestamp; null when history does not keep it.
 */
async function storedTs(e: Engine, r: string, seq: number): Promise<number | null> {
  const h = await e.admin(e.shardOf(r), 'history', { room: r, after: seq - 1, limit: 1 }) as { msgs?: { seq: unknown; ts: unknown }[] };
  const m = h.msgs?.[0];
  return m !== undefined && Number(m.seq) === seq ? Number(m.ts) : null;
}

const METHODS: Record<string, Method> = {
  async publish(e, a) {
    const r = room(a);
    const res = await publishOne(e, r, a);
    return { ...res, ts: await storedTs(e, r, res.seq) };
  },
  async broadcast(e, a) {
    const rooms = a.rooms;
    if (!Array.isArray(rooms) || rooms.length === 0 || rooms.length > MAX_BROADCAST_ROOMS) throw new ApiError(400, 'bad_request', `rooms must be a list of 1..${MAX_BROADCAST_ROOMS} rooms`);
    const names = rooms.map((r: unknown, i) => {
      if (!isValidRoom(r)) throw new ApiError(400, 'bad_room', `rooms[${i}] must be 1..128 bytes of [A-Za-z0-9_.:@-]`);
      return r;
    });
    const results = await Promise.allSettled(names.map((r) => publishOne(e, r, a)));
    return { results: results.map((x, i) => (x.status === 'fulfilled' ? { room: names[i], ...x.value } : { room: names[i], error: errorBody(x.reason).error })) };
  },
  async history(e, a) {
    const r = room(a);
    const args = { room: r, before: optInt(a, 'before', 0, Number.MAX_SAFE_INTEGER), after: optInt(a, 'after', 0, Number.MAX_SAFE_INTEGER), limit: optInt(a, 'limit', 1, 500) };
    if (args.before !== undefined && args.after !== undefined) throw new ApiError(400, 'bad_request', 'history takes at most one of before and after');
    const res = await e.admin(e.shardOf(r), 'history', args) as { epoch: string | null; seq: number; truncated?: boolean; msgs: Args[] };
    shardError(res);
    const msgs = res.msgs.map(({ t: _t, room: _room, ...m }) => jsonSafe(m));
    return { room: r, epoch: res.epoch, seq: res.seq, truncated: res.truncated ?? false, msgs };
  },
  async presence(e, a) {
    const r = room(a);
    const res = await e.admin(e.shardOf(r), 'presence', { room: r }) as { users: string[]; connections: number };
    shardError(res);
    return { room: r, users: res.users, connections: res.connections };
  },
  async rooms(e, a) {
    const limit = optInt(a, 'limit', 1, 1000) ?? 100;
    const after = a.cursor === undefined || a.cursor === null ? '' : typeof a.cursor === 'string' ? a.cursor : (() => { throw new ApiError(400, 'bad_request', 'cursor must be a string'); })();
    const pages = await Promise.all(Array.from({ length: e.shardCount }, (_, s) => e.admin(s, 'rooms', { after, limit }) as Promise<{ rooms: { room: string; connections: number }[] }>));
    const all = pages.flatMap((p) => p.rooms).sort((x, y) => (x.room < y.room ? -1 : x.room > y.room ? 1 : 0));
    const more = all.length > limit || pages.some((p) => p.rooms.length === limit);
    const page = all.slice(0, limit);
    return { rooms: page, cursor: more && page.length > 0 ? page[page.length - 1]!.room : null };
  },
  disconnect(e, a) {
    const code = optInt(a, 'code', 1000, 4999) ?? 1000;
    if (code !== 1000 && code < 4000) throw new ApiError(400, 'bad_request', 'code must be 1000 or 4000..4999');
    const reason = a.reason === undefined ? 'disconnected by the server' : typeof a.reason === 'string' && Buffer.byteLength(a.reason) <= 120 ? a.reason : (() => { throw new ApiError(400, 'bad_request', 'reason must be a string of at most 120 bytes'); })();
    if ((a.user === undefined) === (a.conn === undefined)) throw new ApiError(400, 'bad_request', 'give exactly one of user and conn');
    const target = a.user !== undefined ? { user: user(a.user, 'user') } : { conn: typeof a.conn === 'string' ? a.conn : (() => { throw new ApiError(400, 'bad_request', 'conn must be a string'); })() };
    return { disconnected: e.disconnect(target, code, reason) };
  },
  kick(e, a) {
    const r = room(a);
    const u = user(a.user, 'user');
    const banSec = optInt(a, 'banSec', 0, MAX_BAN_SEC) ?? 0;
    return { kicked: e.kick(r, u, banSec * 1000), bannedSec: banSec };
  },
  async redact(e, a) {
    const r = room(a);
    const seq = optInt(a, 'seq', 1, Number.MAX_SAFE_INTEGER);
    if (seq === undefined) throw new ApiError(400, 'bad_request', 'missing field: seq');
    const res = await e.admin(e.shardOf(r), 'redact', { room: r, seq });
    shardError(res);
    return { room: r, seq, redacted: true };
  },
};

function errorBody(e: unknown): { status: number; error: { code: string; msg: string } } {
  if (e instanceof ApiError) return { status: e.status, error: { code: e.code, msg: e.message } };
  if (e instanceof EngineError) {
    const map: Partial<Record<string, [number, string]>> = {
      SHARDCHAT_SHUTTING_DOWN: [503, 'shutting_down'], SHARDCHAT_OVERLOADED: [503, 'overloaded'], SHARDCHAT_BAD_ROOM: [400, 'bad_room'],
      SHARDCHAT_BAD_BODY: [400, 'bad_request'], SHARDCHAT_SHARD_RESTARTED: [503, 'internal'], SHARDCHAT_SHARD_FAILED: [503, 'internal'],
      SHARDCHAT_UNAVAILABLE: [503, 'unavailable'],
    };
    const [status, code] = map[e.code] ?? [500, 'internal'];
    return { status, error: { code, msg: e.message } };
  }
  return { status: 500, error: { code: 'internal', msg: 'internal error' } };
}

/** Constant-time check of `Authorization: Bearer <key>` (hashes first, so lengths do not leak). */
function keyMatches(header: string, want: Buffer): boolean {
  const m = /^Bearer +(.+)$/i.exec(header);
  const got = createHash('sha256').update(m === null ? '' : m[1]!).digest();
  return timingSafeEqual(got, want) && m !== null;
}

export function routeApi(app: TemplatedApp, engine: Engine, apiKey: string, maxBodyBytes: number, log: Logger): void {
  const want = createHash('sha256').update(apiKey).digest();
  const answer = (res: HttpResponse, status: number, body: unknown): void => {
    res.cork(() => { res.writeStatus(STATUS[status] ?? `${status} Error`).writeHeader('content-type', 'application/json').writeHeader('cache-control', 'no-store').end(JSON.stringify(body)); });
  };
  app.post(`${API_PREFIX}*`, (res, req) => {
    const name = req.getUrl().slice(API_PREFIX.length);
    const authorized = keyMatches(req.getHeader('authorization'), want);
    const declared = Number(req.getHeader('content-length') || '0');
    let aborted = false;
    res.onAborted(() => { aborted = true; });
    if (!authorized) { answer(res, 401, { error: { code: 'unauthorized', msg: 'Authorization: Bearer <api key> required' } }); return; }
    const method = Object.hasOwn(METHODS, name) ? METHODS[name]! : null;
    readBody(res, maxBodyBytes, declared, (r) => {
      if (aborted) return;
      if (!r.ok) { answer(res, 413, { error: { code: 'too_large', msg: `request body over ${maxBodyBytes} bytes (apiMaxBodyBytes)` } }); return; }
      if (method === null) { answer(res, 404, { error: { code: 'not_found', msg: `no API method ${name}` } }); return; }
      let args: unknown;
      try { args = r.body.length === 0 ? {} : JSON.parse(r.body.toString('utf8')); } catch { args = undefined; }
      if (args === null || typeof args !== 'object' || Array.isArray(args)) { answer(res, 400, { error: { code: 'bad_request', msg: 'body must be a JSON object' } }); return; }
      Promise.resolve().then(() => method(engine, args as Args)).then(
        (out) => { if (!aborted) answer(res, 200, out); },
        (e: unknown) => {
          const b = errorBody(e);
          if (b.status === 500) log.error({ event: 'api_error', method: name, err: (e as Error).message }, 'API method failed');
          if (!aborted) answer(res, b.status, { error: b.error });
        },
      );
    });
  });
  app.any(`${API_PREFIX}*`, (res) => { answer(res, 405, { error: { code: 'bad_request', msg: 'API methods are POST' } }); });
}
