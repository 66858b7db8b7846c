/**
 * The HTTP API's requests (IN_ADMIN) in cluster mode: workers/admin.ts answers them from the
 * shard's memory or its embedded store in single-node mode; here `history` and `presence` read
 * Redis (every node's data), `rooms` lists the rooms this shard follows on this node, `redact`
 * is refused, and `control` publishes a kick/disconnect on the control channel (docs/CLUSTER.md §9).
 * Each request gets exactly one OUT_ADMIN_REPLY; a Redis failure is the caller's to answer.
 */
import type { MsgWriter } from '../engine/protocol/msgpack.js';
import { DEFAULT_HIST_LIMIT, MAX_HIST_LIMIT } from '../engine/protocol/frames.js';
import { OUT_ADMIN_REPLY } from '../engine/protocol/records.js';
import { type AdminArgs, MAX_PRESENCE_PAGE, MAX_ROOMS_PAGE, adminError, pageRange } from './admin.js';
import type { OutQueue } from './out-queue.js';
import type { ClusterStore, RedisMessage } from './store/redis/index.js';

/** What the API's requests need of the cluster handler. */
export interface ClusterAdminHost {
  readonly store: ClusterStore;
  readonly out: OutQueue;
  /** The rooms this shard follows, with their local members. */
  readonly rooms: ReadonlyMap<string, { readonly members: ReadonlyMap<number, string> }>;
  readonly maxHistBytes: number;
}

const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

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
  const page: string[] = [];
  let bytes = 0;
  for (let i = lo; i < users.length && page.length < limit; i++) {
    const cost = users[i]!.length + 2;
    if (page.length > 0 && bytes + cost > maxBytes) break;
    page.push(users[i]!);
    bytes += cost;
  }
  const more = lo + page.length < users.length;
  return { users: page, cursor: more && page.length > 0 ? page[page.length - 1]! : null };
}

/** Answers one IN_ADMIN request `op` with `args` (JSON) by one OUT_ADMIN_REPLY; rejects with the store's error (RedisUnavailableError) for the caller to answer. */
export async function clusterAdmin(h: ClusterAdminHost, req: number, op: string, args: AdminArgs): Promise<void> {
  const name = typeof args.room === 'string' ? args.room : '';
  switch (op) {
    case 'rooms': {
      // This shard's rooms on this node (the rooms it has members in), as in single-node mode.
      const after = typeof args.after === 'string' ? args.after : '';
      const limit = isSeq(args.limit) && args.limit >= 1 ? Math.min(args.limit, MAX_ROOMS_PAGE) : 100;
      const names = [...h.rooms.keys()].filter((n) => n > after).sort().slice(0, limit);
      reply(h, req, (m) => {
        m.mapHeader(1).str('rooms').arrayHeader(names.length);
        for (const n of names) m.mapHeader(2).str('room').str(n).str('connections').uint(h.rooms.get(n)!.members.size);
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
    case 'redact':
      reply(h, req, (m) => adminError(m, 'not_supported', 'redact is not available in cluster mode (docs/CLUSTER.md)'));
      return;
    case 'control':
      // A kick or disconnect for every node: published as the main thread wrote it.
      await h.store.publishControl(JSON.stringify(args));
      reply(h, req, (m) => { m.mapHeader(1).str('ok').bool(true); });
      return;
    default:
      reply(h, req, (m) => adminError(m, 'bad_request', `unknown op ${op}`));
  }
}
