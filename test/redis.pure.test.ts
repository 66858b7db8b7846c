/**
 * Cluster mode, the pure parts: the partition of rooms over several Redis URLs, the bytes the
 * scripts publish, the recovery merge, the reconnect back-off. No Redis needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { normalizeRedisUrl, parseRedisUrls, partitionIndex, roomChannel, roomOfChannel } from '../workers/store/redis/keys.js';
import { decodeRoomEvent, findSeqSlot, readSeq, writeSeq, WireError } from '../workers/store/redis/wire.js';
import { mergeBySeq } from '../workers/store/redis/merge.js';
import { backoffMs } from '../workers/store/redis/connection.js';
import { capBytes, type RedisMessage } from '../workers/store/redis/history.js';
import { validateClusterOptions } from '../workers/store/redis/index.js';

const rooms = Array.from({ length: 3000 }, (_, i) => `room-${i}`);

test('partition: stable, independent of list order and URL spelling, spread evenly', () => {
  const urls = ['redis://10.0.0.1:6379', 'redis://10.0.0.2:6379', 'redis://10.0.0.3:6380/0'];
  const shuffled = [urls[2]!, urls[0]!, urls[1]!];
  const spelled = ['redis://user:pw@10.0.0.1', 'REDIS://10.0.0.2:6379/', 'redis://10.0.0.3:6380'];
  const counts = [0, 0, 0];
  for (const r of rooms) {
    const i = partitionIndex(r, urls);
    counts[i]!++;
    assert.equal(shuffled[partitionIndex(r, shuffled)], urls[i], `order of the list moved ${r}`);
    assert.equal(partitionIndex(r, spelled), i, `spelling moved ${r}`);
    assert.equal(partitionIndex(r, urls), i, 'deterministic');
  }
  for (const c of counts) assert.ok(c > 850 && c < 1150, `uneven spread: ${counts.join(', ')}`);
  assert.equal(partitionIndex('any', ['redis://h:1']), 0);
  assert.throws(() => partitionIndex('r', []), RangeError);
});

test('partition: adding an instance moves only the rooms it wins (about 1/n), removing one only its own', () => {
  const three = ['redis://a:6379', 'redis://b:6379', 'redis://c:6379'];
  const four = [...three, 'redis://d:6379'];
  let moved = 0;
  for (const r of rooms) {
    const before = three[partitionIndex(r, three)]!;
    const after = four[partitionIndex(r, four)]!;
    if (before !== after) {
      moved++;
      assert.equal(after, 'redis://d:6379', `${r} moved between old instances`);
    }
  }
  assert.ok(moved > rooms.length * 0.18 && moved < rooms.length * 0.32, `moved ${moved} of ${rooms.length}`);
});

test('Redis URLs: normalised, and bad lists rejected with a message naming the URL', () => {
  assert.equal(normalizeRedisUrl('redis://Host'), 'redis://host:6379/0');
  assert.equal(normalizeRedisUrl('rediss://u:p@h:7000/3'), 'rediss://h:7000/3');
  assert.throws(() => normalizeRedisUrl('http://h'), /redis:\/\/ or rediss:\/\//);
  assert.throws(() => normalizeRedisUrl('nonsense'), /not a URL/);
  assert.throws(() => normalizeRedisUrl('redis://h/abc'), /database number/);
  assert.deepEqual(parseRedisUrls('redis://a, redis://b:6380'), ['redis://a', 'redis://b:6380']);
  assert.throws(() => parseRedisUrls('redis://a,,redis://b'), /empty URL/);
  assert.throws(() => parseRedisUrls('redis://a,redis://A:6379/0'), /listed twice/);
});

test('room channels round-trip; other channels are not rooms', () => {
  assert.equal(roomOfChannel(roomChannel('a.b:c@d-e_f')), 'a.b:c@d-e_f');
  assert.equal(roomOfChannel('sc:n:node1'), null);
});

test('wire: seq bytes round-trip up to 2^53-1; room events decode; garbage is a WireError', () => {
  fc.assert(fc.property(fc.maxSafeNat(), (n) => {
    const b = new Uint8Array(8);
    writeSeq(b, 0, n);
    return readSeq(b, 0) === n;
  }));
  assert.throws(() => writeSeq(new Uint8Array(8), 0, -1), RangeError);
  const frame = Buffer.from([1, 2, 3]);
  const seqb = Buffer.alloc(8);
  writeSeq(seqb, 0, 2 ** 40 + 7);
  const ev = decodeRoomEvent(Buffer.concat([Buffer.from('m'), seqb, Buffer.from([4]), Buffer.from('ep01'), frame]));
  assert.deepEqual(ev, { kind: 'msg', seq: 2 ** 40 + 7, epoch: 'ep01', frame });
  assert.deepEqual(decodeRoomEvent(Buffer.from('pjann')), { kind: 'presence', state: 'join', user: 'ann' });
  assert.deepEqual(decodeRoomEvent(Buffer.from('plbob')), { kind: 'presence', state: 'leave', user: 'bob' });
  assert.throws(() => decodeRoomEvent(Buffer.from('m123')), WireError);
  assert.throws(() => decodeRoomEvent(Buffer.from('x')), WireError);
  assert.throws(() => decodeRoomEvent(Buffer.concat([Buffer.from('m'), seqb, Buffer.from([9]), Buffer.from('ep')])), WireError);
});

test('findSeqSlot: the 8 bytes after "seq" 0xcf', () => {
  const f = Buffer.from([0x83, 0xa1, 0x74, 0xa3, 0x6d, 0x73, 0x67, 0xa3, 0x73, 0x65, 0x71, 0xcf, 0, 0, 0, 0, 0, 0, 0, 0, 0xa4]);
  assert.equal(findSeqSlot(f), 12);
  assert.equal(findSeqSlot(Buffer.from([0xa3, 0x73, 0x65, 0x71, 0x05])), -1, 'a fixint seq has no slot');
});

test('mergeBySeq: contiguous from afterSeq, duplicates once, a hole stops it (property)', () => {
  fc.assert(fc.property(fc.nat(20), fc.array(fc.nat(60)), fc.array(fc.nat(60)), (after, hs, ls) => {
    const history = [...new Set(hs)].sort((a, b) => a - b).map((seq) => ({ seq, src: 'h' }));
    const live = ls.map((seq) => ({ seq, src: 'l' }));
    const r = mergeBySeq(after, history, live);
    const have = new Set([...hs, ...ls].filter((s) => s > after));
    let n = after + 1;
    while (have.has(n)) n++;
    assert.deepEqual(r.messages.map((m) => m.seq), Array.from({ length: n - after - 1 }, (_, k) => after + 1 + k));
    assert.equal(r.lastSeq, n - 1);
    assert.equal(r.gapAt, [...have].some((s) => s > n) ? n : null);
    for (const m of r.messages) if (history.some((h) => h.seq === m.seq)) assert.equal(m.src, 'h', 'history wins ties');
  }));
});

test('backoff: full jitter, capped', () => {
  assert.equal(backoffMs(0, 50, 2000, () => 0), 25);
  assert.equal(backoffMs(30, 50, 2000, () => 0.999999), 25 + 1999);
  for (let n = 0; n < 40; n++) assert.ok(backoffMs(n, 50, 2000) <= 2025);
});

test('capBytes: at most maxBytes, at least one message, from the right end', () => {
  const ms = [1, 2, 3].map((seq): RedisMessage => ({ seq, from: 'a', ts: 0, cid: null, frame: Buffer.alloc(10) }));
  assert.deepEqual(capBytes(ms, 25, false).map((m) => m.seq), [1, 2]);
  assert.deepEqual(capBytes(ms, 25, true).map((m) => m.seq), [2, 3]);
  assert.deepEqual(capBytes(ms, 1, true).map((m) => m.seq), [3]);
  assert.deepEqual(capBytes(ms, 1, false).map((m) => m.seq), [1]);
});

test('cluster options are checked up front, each message naming the option', () => {
  const ok = { urls: ['redis://a'], node: 'n1' };
  assert.doesNotThrow(() => validateClusterOptions(ok));
  assert.throws(() => validateClusterOptions({ ...ok, urls: [] }), /options\.redis needs/);
  assert.throws(() => validateClusterOptions({ ...ok, urls: ['http://a'] }), /options\.redis: .*redis:\/\//);
  assert.throws(() => validateClusterOptions({ ...ok, urls: ['redis://a', 'redis://A:6379'] }), /options\.redis lists redis:\/\/A:6379 twice/);
  assert.throws(() => validateClusterOptions({ ...ok, node: 'a:b' }), /options\.nodeId/);
  assert.throws(() => validateClusterOptions({ ...ok, heartbeatTtlMs: 10 }), /options\.redisHeartbeatTtlMs/);
  assert.throws(() => validateClusterOptions({ ...ok, limits: { historyLimit: 1.5 } }), /options\.historyLimit/);
  assert.throws(() => validateClusterOptions({ ...ok, connection: { reconnectMinMs: 500, reconnectMaxMs: 100 } }), /options\.redisReconnectMaxMs/);
  assert.throws(() => validateClusterOptions({ ...ok, subscriber: { fillBatch: 0 } }), /options\.redisFillBatch/);
});
