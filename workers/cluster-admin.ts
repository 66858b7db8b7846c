/**
 * The HTTP API's requests (IN_ADMIN) in cluster mode: workers/admin.ts answers them from the
 * shard's memory or its embedded store in single-node mode; here `history` and `presence` read
 * Redis (every node's data), `rooms` pages the rooms with presence on any node (shard 0 answers
 * for the node: Redis's list is the same from every shard), `redact` stores a tombstone in Redis
 * that every node's history reads overlay and tells every node's members, and `control` publishes a kick/disconnect on the control channel (docs/CLUSTER.md §9).
 * Each request gets exactly one OUT_ADMIN_REPLY; a Redis failure is the caller's to answer.
 */
import { MsgSizer, MsgWriter } from '../engine/protocol/msgpack.js';
import { DEFAULT_HIST_LIMIT, MAX_HIST_LIMIT } from '../engine/protocol/frames.js';
import { OUT_ADMIN_REPLY } from '../engine/protocol/records.js';
import { type AdminArgs, MAX_PRESENCE_PAGE, MAX_ROOMS_PAGE, adminError, fitCount, isSeq, pageRange, putTombstone } from './admin.js';
import type { OutQueue } from './out-queue.js';
import type { ClusterStore, RedisMessage } from './store/redis/index.js';

/** What the API's requests need of the cluster handler. */
export interface ClusterAdminHost {
  readonly store: ClusterStore;
  readonly out: OutQueue;
  /** The rooms this shard follows, with their local members. */
  readonly rooms: ReadonlyMap<string, { readonly members: ReadonlyMap<number, string> }>;
  readonly maxHistBytes: number;
  /** The shard's index: shard 0 answers `rooms` for the node, the others list none (the API merges the pages). */
  readonly shard: number;
}

function reply(h: ClusterAdminHost, req: number, put: (m: MsgWriter) => void): void {
  h.out.emit(OUT_ADMIN_REPLY, req, '', put);
}

/** True when maxBytes (not the range) is what ended the page: one more message of its size would not have fit. */
export function cutByBytes(msgs: readonly RedisMessage[], maxBytes: number): boolean {
  let bytes = 0;
  let largest = 0;
  for (const m of msgs) { bytes += m.frame.byteLength; if (m.frame.byteLength > largest) largest = m.frame.byteLength; }
  return bytes + largest > maxBytes;
}

/**
 * `presence`'s page of `users` (sorted ascending, as RedisPresence.who returns them), as
 * single-node mode pages it (workers/admin.ts): the names past `after`, at most `limit` and at
 * most `maxBytes` of names (2 bytes more each; at least one), so the reply fits the ring whatever
 * the room's size; `cursor` is the page's last name when more follow, else null.
 */
export function presencePage(users: readonly string[], after: string, limit: number, maxBytes: number): { users: string[]; cursor: string | null } {
  let lo = 0; let hi = users.length;
  while (lo < hi) { const mid = (lo + hi) >>> 1; if (users[mid]! <= after) lo = mid + 1; else hi = mid; }
  const page = users.slice(lo, lo + fitCount(Math.min(limit, users.length - lo), (i) => users[lo + i]!.length + 2, maxBytes));
  const more = lo + page.length < users.length;
  return { users: page, cursor: more && page.length > 0 ? page[page.length - 1]! : null };
}

const sizer = new MsgSizer();

/** The rooms of a `rooms` page that fit maxBytes as single-node mode counts them (name + 32 bytes each; at least one). */
export function roomsPage<T extends { room: string }>(rooms: readonly T[], maxBytes: number): T[] {
  return rooms.slice(0, fitCount(rooms.length, (i) => rooms[i]!.room.length + 32, maxBytes));
}

/** Answers one IN_ADMIN request `op` with `args` (JSON) by one OUT_ADMIN_REPLY; rejects with the store's error (RedisUnavailableError) for the caller to answer. */
export async function clusterAdmin(h: ClusterAdminHost, req: number, op: string, args: AdminArgs): Promise<void> {
  const name = typeof args.room === 'string' ? args.room : '';
  switch (op) {
    case 'rooms': {
      // The rooms with presence on any node, from Redis: the same list from every shard, so shard 0 alone gives it.
      if (h.shard !== 0) { reply(h, req, (m) => { m.mapHeader(2).str('rooms').arrayHeader(0).str('more').bool(false); }); return; }
      const after = typeof args.after === 'string' ? args.after : '';
      const limit = isSeq(args.limit) && args.limit >= 1 ? Math.min(args.limit, MAX_ROOMS_PAGE) : 100;
      const res = await h.store.rooms(after, limit);
      const page = roomsPage(res.rooms, h.maxHistBytes);
      const more = res.more || page.length < res.rooms.length;
      reply(h, req, (m) => {
        m.mapHeader(2).str('rooms').arrayHeader(page.length);
        for (const r of page) m.mapHeader(2).str('room').str(r.room).str('connections').uint(r.connections);
        m.str('more').bool(more);
      });
      return;
    }
    case 'presence': {
      // Paged like single-node mode: users past `cursor`, at most `limit` and maxHistBytes of names.
      const after = typeof args.cursor === 'string' ? args.cursor : '';
      const limit = isSeq(args.limit) && args.limit >= 1 ? Math.min(args.limit, MAX_PRESENCE_PAGE) : MAX_PRESENCE_PAGE;
      const [all, connections] = await Promise.all([h.store.who(name), h.store.connections(name)]);
      const { users, cursor } = presencePage(all, after, limit, h.maxHistBytes);
      reply(h, req, (m) => {
        m.mapHeader(3).str('users').arrayHeader(users.length);
        for (const u of users) m.str(u);
        m.str('connections').uint(connections);
        if (cursor === null) m.str('cursor').nil(); else m.str('cursor').str(cursor);
      });
      return;
    }
    case 'history': {
      const meta = await h.store.meta(name);
      if (meta.epoch === null || meta.seq === 0) {
        reply(h, req, (m) => { m.mapHeader(3).str('epoch').nil().str('seq').uint(0).str('msgs').arrayHeader(0); });
        return;
      }
      const limit = isSeq(args.limit) && args.limit >= 1 ? Math.min(args.limit, MAX_HIST_LIMIT) : DEFAULT_HIST_LIMIT;
      const before = isSeq(args.before) ? args.before : undefined;
      const after = isSeq(args.after) ? args.after : undefined;
      const msgs = await h.store.hist(name, { limit, ...(before === undefined ? {} : { before }), ...(after === undefined ? {} : { after }) });
      const { lo, hi } = pageRange(args, meta.seq, 1);
      const truncated = lo <= hi && (msgs.length === 0 || msgs[0]!.seq > lo) && !cutByBytes(msgs, h.maxHistBytes);
      const epoch = meta.epoch;
      reply(h, req, (m) => {
        m.mapHeader(4).str('epoch').str(epoch).str('seq').uint(meta.seq).str('truncated').bool(truncated);
        m.str('msgs').arrayHeader(msgs.length);
        for (const x of msgs) m.raw(x.frame, 0, x.frame.byteLength);
      });
      return;
    }
    case 'redact': {
      const seq = args.seq;
      const notFound = (): void => { reply(h, req, (m) => adminError(m, 'not_found', `room ${String(args.room)} keeps no message ${String(seq)}`)); };
      if (!isSeq(seq) || seq < 1) { notFound(); return; }
      const meta = await h.store.meta(name);
      if (meta.epoch === null || seq > meta.seq) { notFound(); return; }
      const [msg] = await h.store.hist(name, { after: seq - 1, limit: 1 });
      if (msg === undefined || msg.seq !== seq) { notFound(); return; }
      // The tombstone as single-node mode writes it; the script stores it only if the entry is still kept in this epoch.
      putTombstone(sizer.start(), name, msg.frame, msg.frame.byteLength, seq);
      const tomb = new Uint8Array(sizer.pos);
      putTombstone(new MsgWriter().reset(tomb), name, msg.frame, msg.frame.byteLength, seq);
      if (!await h.store.redact(name, meta.epoch, seq, tomb)) { notFound(); return; }
      reply(h, req, (m) => { m.mapHeader(1).str('ok').bool(true); });
      return;
    }
    case 'control':
      // A kick or disconnect for every node: published as the main thread wrote it.
      await h.store.publishControl(JSON.stringify(args));
      reply(h, req, (m) => { m.mapHeader(1).str('ok').bool(true); });
      return;
    default:
      reply(h, req, (m) => adminError(m, 'bad_request', `unknown op ${op}`));
  }
}
