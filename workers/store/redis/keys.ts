/**
 * Key and channel names of cluster mode, and the partition of rooms over several Redis
 * instances. Pure: no I/O.
 *
 * Every key of a room carries the room in a hash tag (`{room}`), so all of a room's keys live in
 * one Redis Cluster slot and one script may touch them all. Room names are `[A-Za-z0-9_.:@-]`
 * (docs/PROTOCOL.md), so they never contain the braces that would cut the tag short.
 */

/** The prefix of every key and channel (scripts that compute key names get it as an argument). */
export const KEY_PREFIX = 'sc:';
const PREFIX = KEY_PREFIX;

/** Hash `e` = epoch, `s` = latest seq of the room. */
export function metaKey(room: string): string { return `${PREFIX}{${room}}:m`; }
/** Stream of the room's messages, entry id `<seq>-0`. */
export function streamKey(room: string): string { return `${PREFIX}{${room}}:h`; }
/**
 * Hash of the room's redactions: `e` = the epoch they belong to, `<seq>` = the tombstoned `msg`
 * frame that history reads show instead of the stream entry's (a stream entry cannot be edited).
 * Fields below the stream's first kept seq are deleted by the next redaction (docs/LIMITS.md).
 */
export function redactKey(room: string): string { return `${PREFIX}{${room}}:x`; }
/** Hash user -> read cursor. */
export function cursorKey(room: string): string { return `${PREFIX}{${room}}:c`; }
/** Hash `<node>:<conn>` -> user: the room's members on every node. */
export function presenceKey(room: string): string { return `${PREFIX}{${room}}:p`; }
/** Hash user -> number of that user's connections in the room over all nodes. */
export function presenceCountKey(room: string): string { return `${PREFIX}{${room}}:pc`; }
/** String `<epoch>:<seq>` with a TTL of the dedupe window: `user`'s message with `cid`. */
export function cidKey(room: string, user: string, cid: string): string {
  // Length-prefix the user so that no (user, cid) pair can collide with another.
  return `${PREFIX}{${room}}:d:${user.length}:${user}:${cid}`;
}
/** The room's pub/sub channel: every sequenced message, as `seq | epoch | frame`. */
export function roomChannel(room: string): string { return `${PREFIX}r:${room}`; }
/** A node's own service channel (the idle probe of its subscriber). */
export function nodeChannel(node: string): string { return `${PREFIX}n:${node}`; }
/** The control channel: the HTTP API's kick and disconnect, told to every node (docs/CLUSTER.md §9). */
export const CONTROL_CHANNEL = `${PREFIX}ctl`;
/** The node's heartbeat: exists while the node is alive (TTL). */
export function nodeAliveKey(node: string): string { return `${PREFIX}node:${node}`; }
/** Set of rooms in which the node has presence entries (what a sweep of a dead node visits). */
export function nodeRoomsKey(node: string): string { return `${PREFIX}noderooms:${node}`; }
/** Sorted set (score 0, by name) of the rooms with presence on some node: what the API's `rooms` pages. */
export const ROOMS_KEY = `${PREFIX}rooms`;
/** Set of all nodes that ever registered presence (the sweep's work list). */
export const NODES_KEY = `${PREFIX}nodes`;

/** The room name back from a room channel, or null when it is not one. */
export function roomOfChannel(channel: string): string | null {
  return channel.startsWith(`${PREFIX}r:`) ? channel.slice(PREFIX.length + 2) : null;
}

function mix(h: number): number {
  // murmur3's finaliser: spreads FNV-1a's low-entropy high bits.
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function fnv1a(s: string): number {
  const bytes = Buffer.from(s, 'utf8');
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * A URL as every node would write it: lower-case scheme and host, default port 6379, default
 * database 0, no trailing slash, credentials dropped (they differ per node, the instance does not).
 */
export function normalizeRedisUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TypeError(`redis URL ${JSON.stringify(url)} is not a URL`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new TypeError(`redis URL ${JSON.stringify(url)} must start with redis:// or rediss://`);
  const db = u.pathname.replace(/^\/+|\/+$/g, '') || '0';
  if (!/^\d+$/.test(db)) throw new TypeError(`redis URL ${JSON.stringify(url)}: the path must be a database number`);
  return `${u.protocol}//${u.hostname.toLowerCase()}:${u.port || '6379'}/${Number(db)}`;
}

/** The comma-separated `--redis` value as a list of URLs (blank entries are an error). */
export function parseRedisUrls(value: string): string[] {
  const urls = value.split(',').map((s) => s.trim());
  if (urls.some((s) => s === '')) throw new TypeError(`redis: empty URL in ${JSON.stringify(value)}`);
  const seen = new Set<string>();
  for (const u of urls) {
    const n = normalizeRedisUrl(u);
    if (seen.has(n)) throw new TypeError(`redis: ${u} is listed twice`);
    seen.add(n);
  }
  return urls;
}

/**
 * Which of `urls` holds `room`: rendezvous (highest-random-weight) hashing over the normalised
 * URLs. Stable across nodes whatever order each was given the list in, and adding an instance
 * moves only the rooms the new one wins (about 1/n of them); removing one moves only its own.
 * Every node must be given the same set of instances.
 */
export function partitionIndex(room: string, urls: readonly string[]): number {
  if (urls.length === 0) throw new RangeError('partitionIndex: no Redis URLs');
  let best = -1;
  let bestWeight = -1;
  let bestKey = '';
  for (let i = 0; i < urls.length; i++) {
    const key = normalizeRedisUrl(urls[i]!);
    const w = mix(fnv1a(`${key}\n${room}`));
    // Ties (2^-32) break on the URL text so that the order of the list never matters.
    if (w > bestWeight || (w === bestWeight && key < bestKey)) {
      best = i; bestWeight = w; bestKey = key;
    }
  }
  return best;
}
