/**
 * The Lua scripts of cluster mode. Each runs atomically in Redis, so no node owns a room: the
 * script that sequences a message also stores it and publishes it, in one step. Scripts are sent
 * with EVAL until one succeeded on the connection since it (re)connected, then EVALSHA (Script.run).
 *
 * Wire formats the scripts produce (decoded by wire.ts):
 * - room channel, message:  'm' | seq (8 bytes BE) | epoch length (1 byte) | epoch | frame
 * - room channel, presence: 'p' | 'j' or 'l' | user
 * - room channel, redaction: 'x' | seq (8 bytes BE) | epoch length (1 byte) | epoch | tombstone frame
 * - node channel, probe:    'probe' | token
 */
import { createHash } from 'node:crypto';
import { ErrorReply, type RedisArgument } from 'redis';
import type { RedisConnection, Reply } from './connection.js';

export class Script {
  readonly sha: string;
  /** The connection generation in which an EVAL of this script succeeded (then EVALSHA is safe). */
  private readonly loaded = new WeakMap<RedisConnection, number>();
  constructor(readonly name: string, readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  /**
   * EVAL until one EVAL has succeeded on this connection since it (re)connected, EVALSHA after.
   * Calls of one connection run in order only if none takes the NOSCRIPT detour: an EVALSHA
   * answered NOSCRIPT and re-sent as EVAL ran after an EVALSHA sent later that found the script
   * (another connection had loaded it meanwhile), so a room's later batch got the lower seqs
   * (seen on a fresh Redis: one connection's pubs acked out of send order).
   */
  async run(conn: RedisConnection, keys: readonly RedisArgument[], args: readonly RedisArgument[], operation: string): Promise<Reply> {
    const tail = [String(keys.length), ...keys, ...args];
    const gen = conn.generation;
    if (this.loaded.get(conn) !== gen) {
      const r = await conn.call(['EVAL', this.source, ...tail], operation);
      this.loaded.set(conn, gen);
      return r;
    }
    try {
      return await conn.call(['EVALSHA', this.sha, ...tail], operation);
    } catch (err) {
      // Only after a SCRIPT FLUSH on a live connection.
      if (!(err instanceof ErrorReply) || !err.message.startsWith('NOSCRIPT')) throw err;
      this.loaded.delete(conn);
      return conn.call(['EVAL', this.source, ...tail], operation);
    }
  }
}

/** Shared Lua: the room's epoch and seq, creating a new epoch (and dropping any stale history) when missing. */
const ROOM = `
local function room_state(meta, stream, cursors, candidate, red)
  local epoch = redis.call('hget', meta, 'e')
  if epoch then return epoch, tonumber(redis.call('hget', meta, 's')), 0 end
  -- No meta: a new room, or a Redis that lost it. A stream, cursors or redactions left without
  -- their meta belong to a dead epoch: drop them, so seq 1 can be appended again.
  redis.call('del', stream, cursors, red)
  redis.call('hset', meta, 'e', candidate, 's', 0)
  return candidate, 0, 1
end
local function seq_bytes(seq)
  return struct.pack('>I4I4', math.floor(seq / 4294967296), seq % 4294967296)
end
local function touch(ttl, a, b, c, d)
  if ttl > 0 then
    redis.call('pexpire', a, ttl); redis.call('pexpire', b, ttl); redis.call('pexpire', c, ttl)
    if d then redis.call('pexpire', d, ttl) end
  end
end
-- The tombstone of seq (a string of digits) when the room's redactions are of this epoch, else nil.
local function redacted(red, epoch, seq)
  if redis.call('hget', red, 'e') ~= epoch then return nil end
  local t = redis.call('hget', red, seq)
  if t then return t end
  return nil
end
`;

/**
 * Sequences a batch of messages of one room.
 * KEYS: meta, stream, cursors, then one cid key per message (the meta key when it has no cid),
 *       then the redactions hash (last).
 * ARGV: candidate epoch, maxlen, cid window ms, cid window messages, channel, room ttl ms, n,
 *       then per message: user, cid ('' = none), ts, frame, seq offset in frame (-1 = none).
 * Returns: epoch, new-epoch flag, then per message: seq, duplicate flag.
 */
export const PUBLISH = new Script('publish', `${ROOM}
local meta, stream, cursors, red = KEYS[1], KEYS[2], KEYS[3], KEYS[#KEYS]
local epoch, seq, created = room_state(meta, stream, cursors, ARGV[1], red)
local maxlen, win_ms, win_n, channel = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local ttl, n = tonumber(ARGV[6]), tonumber(ARGV[7])
local hdr = string.char(string.len(epoch)) .. epoch
local out = {epoch, created}
for i = 0, n - 1 do
  local a = 8 + i * 5
  local user, cid, ts, frame, off = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  local dup = 0
  if cid ~= '' then
    local prev = redis.call('get', KEYS[4 + i])
    if prev then
      local pe, ps = string.match(prev, '^(.*):(%d+)$')
      ps = tonumber(ps)
      if pe == epoch and ps and ps <= seq and seq - ps < win_n then dup = ps end
    end
  end
  if dup > 0 then
    out[#out + 1] = dup; out[#out + 1] = 1
  else
    seq = seq + 1
    local sb = seq_bytes(seq)
    if off >= 0 then frame = string.sub(frame, 1, off) .. sb .. string.sub(frame, off + 9) end
    redis.call('xadd', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'f', frame, 'u', user, 't', ts, 'c', cid)
    if cid ~= '' then redis.call('set', KEYS[4 + i], epoch .. ':' .. seq, 'PX', win_ms) end
    redis.call('hset', cursors, user, seq)
    redis.call('publish', channel, 'm' .. sb .. hdr .. frame)
    out[#out + 1] = seq; out[#out + 1] = 0
  end
end
redis.call('hset', meta, 's', seq)
touch(ttl, meta, stream, cursors, red)
return out
`);

/**
 * Reads a room: its state and the messages after \`since\` (redacted ones as their tombstone), atomically.
 * KEYS: meta, stream, cursors, redactions.
 * ARGV: candidate epoch, user ('' = no cursor), since (-1 = none), max count, room ttl ms.
 * With a user, a missing cursor starts at the room's seq (a first join).
 * Returns: epoch, seq, new-epoch flag, cursor (-1 without user), first kept seq, then per
 *          message after since (at most max count): seq, frame, user, ts, cid.
 */
export const READ = new Script('read', `${ROOM}
local meta, stream, cursors, red = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local epoch, seq, created = room_state(meta, stream, cursors, ARGV[1], red)
local user, since, max, ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cursor = -1
if user ~= '' then
  cursor = tonumber(redis.call('hget', cursors, user))
  if not cursor then cursor = seq; redis.call('hset', cursors, user, seq) end
end
local first = seq + 1
local head = redis.call('xrange', stream, '-', '+', 'COUNT', 1)
if head[1] then first = tonumber(string.match(head[1][1], '^(%d+)-')) end
local out = {epoch, seq, created, cursor, first}
if since >= 0 and since < seq and max > 0 then
  local rows = redis.call('xrange', stream, (since + 1) .. '-0', '+', 'COUNT', max)
  for _, row in ipairs(rows) do
    local f = {}
    for j = 1, #row[2], 2 do f[row[2][j]] = row[2][j + 1] end
    local s = string.match(row[1], '^(%d+)-')
    out[#out + 1] = tonumber(s)
    out[#out + 1] = redacted(red, epoch, s) or f['f']; out[#out + 1] = f['u']; out[#out + 1] = f['t']; out[#out + 1] = f['c']
  end
end
touch(ttl, meta, stream, cursors, red)
return out
`);

/**
 * Keeps followed rooms' keys alive: refreshes the TTL of each room's meta, stream, cursor and
 * redaction keys (a key already gone stays gone: the next script starts a new epoch as for any lost room).
 * KEYS: per room meta, stream, cursors, redactions (several rooms per call: keys of different rooms, so like
 * SWEEP it is for a standalone Redis, not Redis Cluster). ARGV: room ttl ms.
 * Returns: how many rooms still had their meta key.
 */
export const TOUCH = new Script('touch', `${ROOM}
local ttl, alive = tonumber(ARGV[1]), 0
for i = 1, #KEYS, 4 do
  alive = alive + redis.call('exists', KEYS[i])
  touch(ttl, KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3])
end
return alive
`);

/**
 * History reads of \`hist\` and the API: XRANGE ('f') or XREVRANGE ('r') of the stream, with the
 * frame of every redacted entry replaced by its tombstone (the reply has XRANGE's shape).
 * KEYS: meta, stream, redactions. ARGV: 'f' or 'r', start, end, count.
 */
export const RANGE = new Script('range', `${ROOM}
local rows
if ARGV[1] == 'f' then rows = redis.call('xrange', KEYS[2], ARGV[2], ARGV[3], 'COUNT', ARGV[4])
else rows = redis.call('xrevrange', KEYS[2], ARGV[2], ARGV[3], 'COUNT', ARGV[4]) end
local epoch = redis.call('hget', KEYS[1], 'e')
if epoch and redis.call('exists', KEYS[3]) == 1 then
  for _, row in ipairs(rows) do
    local t = redacted(KEYS[3], epoch, string.match(row[1], '^(%d+)-'))
    if t then
      for j = 1, #row[2], 2 do if row[2][j] == 'f' then row[2][j + 1] = t end end
    end
  end
end
return rows
`);

/**
 * Redacts one message: when the room is in \`epoch\` and its stream still keeps \`seq\`, stores the
 * tombstone in the redactions hash (dropping fields of another epoch and below the first kept
 * seq, so the hash never outgrows the stream) and publishes it on the room's channel.
 * KEYS: meta, stream, redactions. ARGV: epoch, seq, tombstone frame, room channel, room ttl ms.
 * Returns: 1 when redacted, 0 when the room or epoch is gone or the stream keeps no such seq.
 */
export const REDACT = new Script('redact', `${ROOM}
local meta, stream, red = KEYS[1], KEYS[2], KEYS[3]
local epoch = redis.call('hget', meta, 'e')
if not epoch or epoch ~= ARGV[1] then return 0 end
local seq = ARGV[2]
if not redis.call('xrange', stream, seq .. '-0', seq .. '-0')[1] then return 0 end
if redis.call('hget', red, 'e') ~= epoch then redis.call('del', red); redis.call('hset', red, 'e', epoch) end
local head = redis.call('xrange', stream, '-', '+', 'COUNT', 1)
local first = tonumber(string.match(head[1][1], '^(%d+)-'))
for _, f in ipairs(redis.call('hkeys', red)) do
  if f ~= 'e' and tonumber(f) < first then redis.call('hdel', red, f) end
end
redis.call('hset', red, seq, ARGV[3])
local ttl = tonumber(ARGV[5])
if ttl > 0 then redis.call('pexpire', red, ttl) end
redis.call('publish', ARGV[4], 'x' .. seq_bytes(tonumber(seq)) .. string.char(string.len(epoch)) .. epoch .. ARGV[3])
return 1
`);

/**
 * Moves a user's cursor forward, never backwards and never past the room's seq.
 * KEYS: meta, cursors. ARGV: user, seq, epoch ('' = any).
 * Returns: the cursor after the update (-1 when the room or the epoch is gone).
 */
export const CURSOR = new Script('cursor', `
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch or (ARGV[3] ~= '' and ARGV[3] ~= epoch) then return -1 end
local top = tonumber(redis.call('hget', KEYS[1], 's'))
local want = tonumber(ARGV[2])
if want > top then want = top end
local cur = tonumber(redis.call('hget', KEYS[2], ARGV[1]))
if cur and cur >= want then return cur end
redis.call('hset', KEYS[2], ARGV[1], want)
return want
`);

/**
 * A connection joins or leaves a room's presence.
 * KEYS: presence, presence counts, the node's room set, the node list, the rooms sorted set.
 * ARGV: 'j' or 'l', node, conn, user, room channel, room.
 * A join adds the room to the rooms set; the leave of its last connection (any node) removes it.
 * Publishes the user's presence event when their count over all nodes goes 0 -> 1 or 1 -> 0.
 * Returns: the user's connection count in the room after the change.
 */
export const PRESENCE = new Script('presence', `
local field = ARGV[2] .. ':' .. ARGV[3]
local user = ARGV[4]
if ARGV[1] == 'j' then
  redis.call('sadd', KEYS[3], ARGV[6]); redis.call('sadd', KEYS[4], ARGV[2]); redis.call('zadd', KEYS[5], 0, ARGV[6])
  if redis.call('hsetnx', KEYS[1], field, user) == 0 then
    return tonumber(redis.call('hget', KEYS[2], user) or 0)
  end
  local c = redis.call('hincrby', KEYS[2], user, 1)
  if c == 1 then redis.call('publish', ARGV[5], 'pj' .. user) end
  return c
end
local had = redis.call('hget', KEYS[1], field)
if not had then return tonumber(redis.call('hget', KEYS[2], user) or 0) end
redis.call('hdel', KEYS[1], field)
if redis.call('hlen', KEYS[1]) == 0 then redis.call('zrem', KEYS[5], ARGV[6]) end
local c = redis.call('hincrby', KEYS[2], had, -1)
if c <= 0 then
  redis.call('hdel', KEYS[2], had)
  redis.call('publish', ARGV[5], 'pl' .. had)
  c = 0
end
return c
`);

/**
 * Removes the presence of nodes whose heartbeat expired. Any node may run it.
 * KEYS: the node list. ARGV: key prefix ('sc:'), max entries to remove this call.
 * Computes room keys itself, so it is for a standalone Redis (all keys on one instance).
 * Returns: entries removed, 1 when work is left.
 */
export const SWEEP = new Script('sweep', `
local prefix, budget = ARGV[1], tonumber(ARGV[2])
local removed = 0
for _, node in ipairs(redis.call('smembers', KEYS[1])) do
  if redis.call('exists', prefix .. 'node:' .. node) == 0 then
    local roomsKey = prefix .. 'noderooms:' .. node
    for _, room in ipairs(redis.call('smembers', roomsKey)) do
      local p = prefix .. '{' .. room .. '}:p'
      local pc = prefix .. '{' .. room .. '}:pc'
      local flat = redis.call('hgetall', p)
      local mine = node .. ':'
      for j = 1, #flat, 2 do
        local field, user = flat[j], flat[j + 1]
        if string.sub(field, 1, #mine) == mine then
          if removed >= budget then return {removed, 1} end
          redis.call('hdel', p, field)
          local c = redis.call('hincrby', pc, user, -1)
          if c <= 0 then
            redis.call('hdel', pc, user)
            redis.call('publish', prefix .. 'r:' .. room, 'pl' .. user)
          end
          removed = removed + 1
        end
      end
      if redis.call('hlen', p) == 0 then redis.call('zrem', prefix .. 'rooms', room) end
      redis.call('srem', roomsKey, room)
    end
    redis.call('srem', KEYS[1], node)
  end
end
return {removed, 0}
`);

/**
 * A page of the rooms with presence (the \`rooms\` API), names and connection counts read in one
 * step, so a page is one snapshot: PRESENCE and SWEEP add and remove a room's name in the same
 * script that fills or empties its presence hash, so every name listed here has connections >= 1.
 * (Reading the names and then the counts let a leave fall between them: the room was listed with
 * 0 connections.) A name whose hash is empty anyway (only a hand-edited Redis) is skipped.
 * KEYS: the rooms sorted set. ARGV: key prefix ('sc:'), after ('' = from the first), max names.
 * Computes room keys itself, like SWEEP: for a standalone Redis (all keys on one instance).
 * Returns: per room, in name order, at most max: name, connections.
 */
export const ROOMS = new Script('rooms', `
local prefix, max = ARGV[1], tonumber(ARGV[3])
local from = '-'
if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
local out, n = {}, 0
while n < max do
  local names = redis.call('zrangebylex', KEYS[1], from, '+', 'LIMIT', 0, max - n)
  if #names == 0 then break end
  for _, room in ipairs(names) do
    local c = redis.call('hlen', prefix .. '{' .. room .. '}:p')
    if c > 0 then out[#out + 1] = room; out[#out + 1] = c; n = n + 1 end
  end
  from = '(' .. names[#names]
end
return out
`);
