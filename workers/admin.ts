/**
 * The shard's side of the server HTTP API (docs/API.md): IN_ADMIN records carry a request
 * (`op` and JSON arguments) from the main thread; each is answered by exactly one
 * OUT_ADMIN_REPLY (a MessagePack map: the result, or `{error, msg}`), plus, for `redact`, the
 * `redacted` frame published to the room. Like the handler, a call either does all of its work
 * or, when the outbound ring lacks room, nothing, and returns the bytes it needs.
 *
 * Ops: `history` (as `hist`), `presence` (the users of a room), `rooms` (a page of room names,
 * sorted), `redact` (a message's body replaced by a tombstone in history, members told).
 * With a durable store, `history` pages come from the store (the whole retention, also rooms the
 * shard does not hold in memory now) and `redact` writes its tombstone there too (and into the
 * memory cache when the message is in it), so a redaction outlives a restart.
 */
import { MsgSizer, MsgWriter, asciiString, skipValue } from '../engine/protocol/msgpack.js';
import { DEFAULT_HIST_LIMIT, MAX_HIST_LIMIT, writeHead } from '../engine/protocol/frames.js';
import { ADMIN_OPS, OUT_ADMIN_REPLY, OUT_BODY, OUT_PUBLISH, getU32 } from '../engine/protocol/records.js';
import { type RingWriter, recordSpan } from '../engine/ring/index.js';
import type { Room, Rooms } from './rooms.js';
import type { Store, StoredMessage } from './store/index.js';

/** Most room names one `rooms` page returns. */
export const MAX_ROOMS_PAGE = 1000;

export interface AdminArgs { room?: unknown; before?: unknown; after?: unknown; limit?: unknown; seq?: unknown; cursor?: unknown }

/** Most users one `presence` page lists (and its default). */
export const MAX_PRESENCE_PAGE = 1000;

const sz = new MsgSizer();
const w = new MsgWriter();
const scratch = { names: [] as string[] };

export const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * How many of `count` items a page keeps within `maxBytes` when item i costs `cost(i)` bytes:
 * at least one (a page is never empty while items remain), so a reply always fits the ring and
 * always moves its cursor on.
 */
export function fitCount(count: number, cost: (i: number) => number, maxBytes: number): number {
  let bytes = 0; let n = 0;
  for (; n < count; n++) {
    const c = cost(n);
    if (n > 0 && bytes + c > maxBytes) break;
    bytes += c;
  }
  return n;
}

/** The JSON arguments of an IN_ADMIN record at b[off, end), or null when they are not JSON. */
export function parseAdminArgs(b: Uint8Array, off: number, end: number): AdminArgs | null {
  try {
    return JSON.parse(Buffer.from(b.buffer, b.byteOffset + off + 6, end - off - 6).toString('utf8')) as AdminArgs;
  } catch {
    return null;
  }
}

/** Handles IN_ADMIN at b[off, end): 0 when answered, else the outbound bytes it needs. */
export function handleAdmin(out: RingWriter, rooms: Rooms, maxHistBytes: number, b: Uint8Array, off: number, end: number, store: Store | null = null): number {
  const req = getU32(b, off + 1);
  const op = ADMIN_OPS[b[off + 5]!] ?? '';
  const args = parseAdminArgs(b, off, end);
  if (args === null) return reply(out, req, (m) => adminError(m, 'bad_request', 'arguments are not JSON'));
  if (op === 'rooms') return listRooms(out, rooms, req, args, maxHistBytes);
  const name = typeof args.room === 'string' ? args.room : '';
  const r = rooms.get(name);
  switch (op) {
    case 'history': return store === null ? history(out, rooms, maxHistBytes, req, r, args) : storeHistory(out, store, maxHistBytes, req, name, r, args);
    case 'presence': return presence(out, req, r, args, maxHistBytes);
    case 'redact': return redact(out, rooms, req, r, args, store, name);
    default: return reply(out, req, (m) => adminError(m, 'bad_request', `unknown op ${op}`));
  }
}

/** An OUT_ADMIN_REPLY body that reports a failure: {error, msg}. */
export function adminError(m: MsgWriter, code: string, msg: string): void {
  m.mapHeader(2).str('error').str(code).str('msg').str(msg);
}

/** Writes one OUT_ADMIN_REPLY whose body `put` writes (run once over a sizer, once for real). */
function reply(out: RingWriter, req: number, put: (m: MsgWriter) => void, extra = 0): number {
  put(sz.start());
  const len = sz.pos;
  const need = recordSpan(OUT_BODY + len) * 2 + extra;
  if (out.freeBytes() < need) return need;
  record(out, OUT_ADMIN_REPLY, req, len, '', put);
  return 0;
}

function record(out: RingWriter, kind: number, id: number, bodyLen: number, room: string, put: (m: MsgWriter) => void): void {
  const len = OUT_BODY + bodyLen + room.length;
  const o = out.reserve(len);
  if (o < 0) throw new Error(`outbound ring refused ${len} bytes after the space check`);
  const bytes = out.bytes;
  bytes[o] = kind; bytes[o + 1] = room.length; bytes[o + 2] = 0; bytes[o + 3] = 0;
  bytes[o + 4] = id & 0xff; bytes[o + 5] = (id >>> 8) & 0xff; bytes[o + 6] = (id >>> 16) & 0xff; bytes[o + 7] = id >>> 24;
  const m = w.reset(bytes, o + OUT_BODY, o + OUT_BODY + bodyLen);
  put(m);
  if (m.pos !== o + OUT_BODY + bodyLen) throw new Error(`admin record sized ${bodyLen} wrote ${m.pos - o - OUT_BODY}`);
  for (let i = 0; i < room.length; i++) bytes[m.pos + i] = room.charCodeAt(i);
  out.commit(len);
}

/**
 * The seqs a `history` page asks for, as `hist` reads them (before / after / latest, `limit`),
 * clipped to what is kept from `first` on; `truncated` when some of the range existed once.
 */
export function pageRange(args: AdminArgs, seq: number, first: number): { lo: number; hi: number; truncated: boolean } {
  const limit = isSeq(args.limit) && args.limit >= 1 ? Math.min(args.limit, MAX_HIST_LIMIT) : DEFAULT_HIST_LIMIT;
  let lo: number; let hi: number;
  if (isSeq(args.before)) { hi = Math.min(args.before - 1, seq); lo = hi - limit + 1; }
  else if (isSeq(args.after)) { lo = args.after + 1; hi = Math.min(lo + limit - 1, seq); }
  else { hi = seq; lo = hi - limit + 1; }
  if (lo < 1) lo = 1;
  const truncated = lo < first && lo <= hi;
  return { lo: Math.max(lo, first), hi, truncated };
}

function history(out: RingWriter, rooms: Rooms, maxHistBytes: number, req: number, r: Room | undefined, args: AdminArgs): number {
  if (r === undefined || r.seq === 0) return reply(out, req, (m) => { m.mapHeader(3).str('epoch').nil().str('seq').uint(r?.seq ?? 0).str('msgs').arrayHeader(0); });
  const { lo, hi, truncated } = pageRange(args, r.seq, rooms.firstKept(r));
  let a = lo; let z = hi; let bytes = 0;
  if (!isSeq(args.after)) {
    for (let s = hi; s >= lo; s--) { const l = rooms.entryLen(r, s); if (bytes + l > maxHistBytes && s !== hi) { a = s + 1; break; } bytes += l; }
  } else {
    for (let s = lo; s <= hi; s++) { const l = rooms.entryLen(r, s); if (bytes + l > maxHistBytes && s !== lo) { z = s - 1; break; } bytes += l; }
  }
  return reply(out, req, (m) => {
    m.mapHeader(4).str('epoch').str(r.epoch).str('seq').uint(r.seq).str('truncated').bool(truncated);
    m.str('msgs').arrayHeader(z >= a ? z - a + 1 : 0);
    for (let s = a; s <= z; s++) m.raw(rooms.entry(r, s), 0, rooms.entryLen(r, s));
  });
}

/** `history` with a durable store: the page is read from the store (it holds the batch's own writes too). */
function storeHistory(out: RingWriter, store: Store, maxHistBytes: number, req: number, name: string, r: Room | undefined, args: AdminArgs): number {
  const info = store.room(name); // creates a cache entry for an unknown name: dropped below
  const forget = (): void => { if (r === undefined) store.evict(name); };
  if (info.seq === 0) { forget(); return reply(out, req, (m) => { m.mapHeader(3).str('epoch').nil().str('seq').uint(0).str('msgs').arrayHeader(0); }); }
  const { lo, hi, truncated } = pageRange(args, info.seq, store.firstKept(name));
  let msgs: StoredMessage[] = [];
  if (lo <= hi) {
    if (isSeq(args.after)) msgs = store.range(name, lo, hi, maxHistBytes); // the oldest end of the range
    else {
      // The newest end: read the range, then keep what fits from the newest down (at least one).
      const all = store.range(name, lo, hi, Number.MAX_SAFE_INTEGER);
      let bytes = 0; let k = all.length;
      while (k > 0 && (k === all.length || bytes + all[k - 1]!.frame.byteLength <= maxHistBytes)) { k--; bytes += all[k]!.frame.byteLength; }
      msgs = all.slice(k);
    }
  }
  forget();
  return reply(out, req, (m) => {
    m.mapHeader(4).str('epoch').str(info.epoch).str('seq').uint(info.seq).str('truncated').bool(truncated);
    m.str('msgs').arrayHeader(msgs.length);
    for (const x of msgs) m.raw(x.frame, 0, x.frame.byteLength);
  });
}

/** The `limit` smallest of `names` past `after`, sorted, kept as found: O(n log limit) compares, O(limit) memory. */
function smallestPast(names: Iterable<string>, after: string, limit: number, into: string[]): void {
  for (const n of names) {
    if (n <= after || (into.length === limit && n >= into[limit - 1]!)) continue;
    let lo = 0; let hi = into.length;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (into[mid]! < n) lo = mid + 1; else hi = mid; }
    into.splice(lo, 0, n);
    if (into.length > limit) into.length = limit;
  }
}

/**
 * `presence`: a page of the room's users sorted by name, past `cursor`, at most `limit` and at
 * most maxHistBytes of names and infos (at least one user), so a reply always fits the ring;
 * `cursor` is the last name when more may follow, else nil. `info` maps the page's users that
 * have one to it. `connections` counts the whole room.
 */
function presence(out: RingWriter, req: number, r: Room | undefined, args: AdminArgs, maxBytes: number): number {
  const after = typeof args.cursor === 'string' ? args.cursor : '';
  const limit = isSeq(args.limit) && args.limit >= 1 ? Math.min(args.limit, MAX_PRESENCE_PAGE) : MAX_PRESENCE_PAGE;
  const names = scratch.names;
  names.length = 0;
  if (r !== undefined) smallestPast(r.users.keys(), after, limit + 1, names);
  let more = names.length > limit;
  if (more) names.length = limit;
  // A user with info costs its name twice (list and map) and the info.
  const n = fitCount(names.length, (i) => {
    const info = r!.infos.get(names[i]!);
    return names[i]!.length + 2 + (info === undefined ? 0 : names[i]!.length + 2 + info.byteLength);
  }, maxBytes);
  if (n < names.length) more = true;
  names.length = n;
  let infos = 0;
  for (const u of names) if (r!.infos.has(u)) infos++;
  const cursor = more && n > 0 ? names[n - 1]! : null;
  const res = reply(out, req, (m) => {
    m.mapHeader(infos > 0 ? 4 : 3).str('users').arrayHeader(names.length);
    for (const u of names) m.str(u);
    m.str('connections').uint(r === undefined ? 0 : r.members.size);
    if (cursor === null) m.str('cursor').nil(); else m.str('cursor').str(cursor);
    if (infos > 0) {
      m.str('info').mapHeader(infos);
      for (const u of names) { const info = r!.infos.get(u); if (info !== undefined) m.str(u).raw(info, 0, info.byteLength); }
    }
  });
  names.length = 0;
  return res;
}

/**
 * The names of the shard's rooms with at least one connection: what `rooms` lists, in both modes
 * (cluster mode's Redis knows only rooms with presence; a room the shard merely still holds,
 * nobody in it, is not listed).
 */
function* occupied(rooms: Rooms): Generator<string> {
  for (const [name, r] of rooms.rooms) if (r.members.size > 0) yield name;
}

/**
 * `rooms`: the shard's `limit` smallest names past `after` of rooms with connections, with their counts,
 * cut to maxHistBytes of names (at least one) so the reply always fits the ring; `more` when
 * the shard holds names past the page's last (the API merges the shards' pages up to the
 * smallest such last name).
 */
function listRooms(out: RingWriter, rooms: Rooms, req: number, args: AdminArgs, maxBytes: number): number {
  const after = typeof args.after === 'string' ? args.after : '';
  const limit = isSeq(args.limit) && args.limit >= 1 ? Math.min(args.limit, MAX_ROOMS_PAGE) : 100;
  const names = scratch.names;
  names.length = 0;
  // The `limit` + 1 smallest names past `after` (one more tells whether more follow): a page
  // costs the shard no sort of all its rooms.
  smallestPast(occupied(rooms), after, limit + 1, names);
  let more = names.length > limit;
  if (more) names.length = limit;
  const n = fitCount(names.length, (i) => names[i]!.length + 32, maxBytes); // the name, its map and the count
  if (n < names.length) more = true;
  names.length = n;
  const counts = names.map((x) => rooms.get(x)!.members.size);
  const res = reply(out, req, (m) => {
    m.mapHeader(2).str('rooms').arrayHeader(names.length);
    for (let i = 0; i < names.length; i++) m.mapHeader(2).str('room').str(names[i]!).str('connections').uint(counts[i]!);
    m.str('more').bool(more);
  });
  names.length = 0;
  return res;
}

/** The tombstone of msg entry e[0, len): the same msg with `body: nil` and `redacted: true`. */
export function putTombstone(m: MsgWriter, room: string, e: Uint8Array, len: number, seq: number): void {
  // The entry is writeMsg's map of six fixstr keys (frames.ts): copy `from` and `ts` as they are.
  let p = 1; let fromAt = -1; let fromEnd = -1; let tsAt = -1; let tsEnd = -1;
  for (let i = 0; i < (e[0]! & 0x0f); i++) {
    const kl = e[p]! & 0x1f;
    const key = asciiString(e, p + 1, p + 1 + kl);
    const vs = p + 1 + kl;
    const ve = skipValue(e, vs, len, 1, 1000);
    if (key === 'from') { fromAt = vs; fromEnd = ve; }
    if (key === 'ts') { tsAt = vs; tsEnd = ve; }
    p = ve;
  }
  m.mapHeader(7).str('t').str('msg').str('room').str(room).str('seq').uint(seq);
  m.str('from').raw(e, fromAt, fromEnd).str('body').nil().str('ts').raw(e, tsAt, tsEnd).str('redacted').bool(true);
}

function redact(out: RingWriter, rooms: Rooms, req: number, r: Room | undefined, args: AdminArgs, store: Store | null, name: string): number {
  const seq = args.seq;
  const notFound = (): number => reply(out, req, (m) => adminError(m, 'not_found', `room ${String(args.room)} keeps no message ${String(seq)}`));
  if (!isSeq(seq)) return notFound();
  // The message: from the memory cache when it is there, else from the durable store.
  const inCache = r !== undefined && seq >= rooms.firstKept(r) && seq <= r.seq && seq >= 1;
  let e: Uint8Array; let len: number;
  if (inCache) { e = rooms.entry(r, seq); len = rooms.entryLen(r, seq); }
  else if (store !== null) {
    const known = r !== undefined || store.room(name).seq > 0;
    const m = known ? store.range(name, seq, seq, Number.MAX_SAFE_INTEGER)[0] : undefined;
    if (r === undefined && !known) store.evict(name);
    if (m === undefined || m.seq !== seq) return notFound();
    e = m.frame; len = e.byteLength;
  } else return notFound();
  putTombstone(sz.start(), name, e, len, seq);
  const tombLen = sz.pos;
  const put = (m: MsgWriter): void => { writeHead(m, 'redacted', roomBytes(name), 0, name.length, -1, 1); m.str('seq').uint(seq); };
  put(sz.start());
  const frameLen = sz.pos;
  sz.start().mapHeader(1).str('ok').bool(true);
  const okLen = sz.pos;
  const need = recordSpan(OUT_BODY + frameLen + name.length) + recordSpan(OUT_BODY + okLen) * 2 + recordSpan(OUT_BODY + tombLen);
  if (out.freeBytes() < need) return need;
  const tmp = new Uint8Array(tombLen);
  putTombstone(w.reset(tmp), name, e, len, seq);
  if (inCache) rooms.history.replace(r!.hist!, seq - rooms.firstKept(r!), tmp, 0, tombLen);
  // Written to the store too (at once, or in the open batch when the message is still pending in it), so it outlives a restart.
  if (store !== null) store.replace(name, seq, tmp);
  // Members are told (a room the shard does not hold has none).
  if (r !== undefined) record(out, OUT_PUBLISH, 0, frameLen, name, put);
  return reply(out, req, (m) => { m.mapHeader(1).str('ok').bool(true); });
}

const nameBuf = new Uint8Array(256);
function roomBytes(name: string): Uint8Array {
  for (let i = 0; i < name.length; i++) nameBuf[i] = name.charCodeAt(i);
  return nameBuf;
}
