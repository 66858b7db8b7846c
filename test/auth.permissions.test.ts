/** The pure parts of token auth: the permission table, token extraction, and the cache's bounds. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ACTIONS, AuthError, MAX_ROOM_PATTERNS, MAX_TOKEN_BYTES, TokenCache, allows, bearerProtocols, compileRooms, extractToken, identityFromHook,
  type Identity, type RoomAction,
} from '../engine/auth/index.js';

const ident = (rooms: unknown): Identity => ({ user: 'u', exp: 2e9, rooms: rooms === null ? null : compileRooms(rooms), info: null, infoBytes: null });

test('allows(): a table of patterns, actions and rooms', () => {
  const claim = [
    { match: 'team-42:*', allow: ['join', 'pub', 'hist', 'who', 'read'] },
    { match: 'lobby', allow: ['join', 'hist'] },
    { match: 'a:*', allow: ['join'] },
    { match: 'a:b:*', allow: ['pub'] },
    { match: 'lobby', allow: ['who'] },
  ];
  const id = ident(claim);
  const rows: [RoomAction, string, boolean][] = [
    ['join', 'team-42:general', true],
    ['pub', 'team-42:general', true],
    ['read', 'team-42:', true],
    ['join', 'team-42', false],
    ['join', 'team-420:x', false],
    ['join', 'team-4', false],
    ['join', 'lobby', true],
    ['hist', 'lobby', true],
    ['who', 'lobby', true],
    ['pub', 'lobby', false],
    ['join', 'lobby2', false],
    ['join', 'a:1', true],
    ['pub', 'a:1', false],
    ['join', 'b:1', false],
    ['pub', 'a:b:c', true],
    ['join', 'a:b:c', true],
    ['hist', 'a:b:c', false],
  ];
  for (const [action, room, want] of rows) assert.equal(allows(id, action, room), want, `${action} ${room}`);
  const all = ident(null);
  for (const [action, room] of rows) assert.ok(allows(all, action, room), 'no claim: everything');
  const star = ident([{ match: '*', allow: ['hist'] }]);
  assert.ok(allows(star, 'hist', 'anything'));
  assert.ok(!allows(star, 'join', 'anything'));
  const none = ident([]);
  assert.ok(!allows(none, 'join', 'a'), 'an empty list allows nothing');
});

test('compileRooms(): bad claims are refused with the entry named', () => {
  const bad: [unknown, RegExp][] = [
    [{}, /must be an array/],
    [[null], /\[0\] must be an object/],
    [[{ match: 1, allow: [] }], /\[0\]\.match must be a string/],
    [[{ match: 'a', allow: 'join' }], /\[0\]\.allow must be an array/],
    [[{ match: 'a', allow: ['join', 'leave'] }], /\[0\]\.allow has "leave"/],
    [[{ match: 'a', allow: ['join'] }, { match: 'a*b', allow: ['join'] }], /\[1\]\.match "a\*b"/],
    [[{ match: 'bad room', allow: ['join'] }], /\[0\]\.match/],
    [[{ match: 'x/*', allow: ['join'] }], /prefix/],
    [[{ match: '', allow: ['join'] }], /\[0\]\.match ""/],
    [[{ match: 'a', allow: ['__proto__'] }], /allow has "__proto__"/],
    [Array.from({ length: MAX_ROOM_PATTERNS + 1 }, () => ({ match: 'a', allow: ['join'] })), /more than 256/],
  ];
  for (const [claim, re] of bad) assert.throws(() => compileRooms(claim), re, JSON.stringify(claim).slice(0, 80));
});

test('allows() with 256 prefixes: every prefix matches its own rooms only', () => {
  const id = ident(Array.from({ length: 256 }, (_, i) => ({ match: `p${i}:*`, allow: i % 2 === 0 ? ['join'] : ['pub'] })));
  for (let i = 0; i < 256; i++) {
    assert.equal(allows(id, 'join', `p${i}:room`), i % 2 === 0, `join p${i}`);
    assert.equal(allows(id, 'pub', `p${i}:room`), i % 2 === 1, `pub p${i}`);
  }
  assert.ok(!allows(id, 'join', 'p256:room'));
  assert.ok(!allows(id, 'join', 'p1'), 'the prefix includes its colon');
  // Its cost (O(patterns), no allocation) is measured by native-bench/auth/verify.ts, not here.
});

test('allows() agrees with a naive reading of the claim on random claims and rooms', () => {
  const seg = fc.constantFrom('a', 'b', 'team-42', 'x.y', '1', '');
  const room = fc.array(seg, { minLength: 1, maxLength: 3 }).map((p) => p.join(':')).filter((r) => r.length > 0);
  const pattern = fc.oneof(room, fc.array(seg, { maxLength: 3 }).map((p) => (p.length ? `${p.join(':')}:*` : '*')));
  const entry = fc.record({ match: pattern, allow: fc.subarray([...ACTIONS]) });
  fc.assert(fc.property(fc.array(entry, { maxLength: 12 }), room, fc.constantFrom(...ACTIONS), (claim, r, action) => {
    const naive = claim.some((e) => (e.match.endsWith('*') ? r.startsWith(e.match.slice(0, -1)) : r === e.match) && e.allow.includes(action));
    return allows(ident(claim), action, r) === naive;
  }), { numRuns: 2000, seed: 14 });
});

const JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln';

test('extractToken(): Sec-WebSocket-Protocol and ?token=', () => {
  assert.deepEqual(extractToken(`shardchat.v1, bearer.${JWT}`, ''), { token: JWT, protocol: 'shardchat.v1' });
  assert.deepEqual(extractToken(`bearer.${JWT},shardchat.v1`, 'user=x'), { token: JWT, protocol: 'shardchat.v1' });
  assert.deepEqual(extractToken(bearerProtocols(JWT).join(', '), ''), { token: JWT, protocol: 'shardchat.v1' });
  assert.deepEqual(extractToken('', `a=1&token=${encodeURIComponent(JWT)}`), { token: JWT, protocol: '' });
  assert.deepEqual(extractToken('shardchat.v1', `token=${JWT}`), { token: JWT, protocol: 'shardchat.v1' });
  assert.deepEqual(extractToken('', ''), { token: null, protocol: '' });
  assert.deepEqual(extractToken('shardchat.v1', 'user=bob'), { token: null, protocol: 'shardchat.v1' });
  const refused: [string, string, RegExp][] = [
    [`bearer.${JWT}`, '', /needs shardchat\.v1 beside it/],
    [`shardchat.v1, bearer.${JWT}, bearer.${JWT}`, '', /more than one bearer/],
    [`shardchat.v1, bearer.${JWT}`, `token=${JWT}`, /both/],
    ['', `token=${JWT}&token=${JWT}`, /more than once/],
    ['', 'token=%E0%A4%A', /percent-encoded/],
    ['', 'token', /compact JWT/],
    ['', 'token=', /compact JWT/],
    ['', 'token=abc', /compact JWT/],
    ['', `token=${JWT}%20`, /compact JWT/],
    ['shardchat.v1, bearer.', '', /compact JWT/],
    ['', `token=${'a'.repeat(MAX_TOKEN_BYTES)}.b.c`, /longer than 8192/],
  ];
  for (const [h, q, re] of refused) {
    assert.throws(() => extractToken(h, q), (e: unknown) => e instanceof AuthError && e.reason === 'invalid' && re.test(e.detail), `${h} | ${q}`);
  }
});

test('TokenCache: bounded by entries and bytes, least recently used out, never past exp', () => {
  const id = (exp: number): Identity => ({ user: 'u', exp, rooms: null, info: null, infoBytes: null });
  const c = new TokenCache(3, 1000);
  c.set('t1', id(100), 0);
  c.set('t2', id(100), 0);
  c.set('t3', id(100), 0);
  assert.ok(c.get('t1', 1), 'touch t1: t2 is now the oldest');
  c.set('t4', id(100), 0);
  assert.equal(c.get('t2', 1), undefined, 'LRU entry evicted');
  assert.ok(c.get('t1', 1) && c.get('t3', 1) && c.get('t4', 1));
  assert.equal(c.stats().entries, 3);
  assert.equal(c.stats().evictions, 1);
  assert.equal(c.get('t1', 100), undefined, 'at exp it is gone');
  assert.equal(c.stats().entries, 2);
  c.set('old', id(5), 5);
  assert.equal(c.get('old', 0), undefined, 'an already expired token is not kept');

  const b = new TokenCache(100, 10);
  b.set('aaaa', id(100), 0);
  b.set('bbbb', id(100), 0);
  b.set('cccc', id(100), 0);
  assert.deepEqual([b.stats().entries, b.stats().bytes], [2, 8], 'bytes bound evicts');
  b.set('x'.repeat(11), id(100), 0);
  assert.equal(b.stats().entries, 2, 'a token bigger than the bound is not cached and evicts nothing');
  b.set('cccc', id(100), 0);
  assert.deepEqual([b.stats().entries, b.stats().bytes], [2, 8], 'a re-set does not count twice');

  const off = new TokenCache(0, 1000);
  off.set('t', id(100), 0);
  assert.equal(off.stats().entries, 0, '0 entries = no cache');

  const big = new TokenCache(1000, 1 << 20);
  for (let i = 0; i < 10_000; i++) big.set(`tok-${i}`, id(100), 0);
  assert.equal(big.stats().entries, 1000);
  assert.ok(big.get('tok-9999', 1) && !big.get('tok-0', 1));
});

test('identityFromHook(): an authenticate hook can return the same permissions as a token', () => {
  const id = identityFromHook({ user: 'hooked', rooms: [{ match: 'a:*', allow: ['join'] }], info: { role: 'mod' } });
  assert.equal(id.user, 'hooked');
  assert.equal(id.exp, Infinity, 'no exp: never expires');
  assert.ok(allows(id, 'join', 'a:1') && !allows(id, 'join', 'b:1') && !allows(id, 'pub', 'a:1'));
  assert.deepEqual(id.info, { role: 'mod' });
  assert.ok(allows(identityFromHook({ user: 'plain' }), 'pub', 'any'), 'no rooms: everything');
  assert.equal(identityFromHook({ user: 'anon-legacy' }).user, 'anon-legacy', 'hooks keep today\'s user rules');
  const bad = (r: Parameters<typeof identityFromHook>[0], re: RegExp): void => {
    assert.throws(() => identityFromHook(r), (e: unknown) => e instanceof AuthError && e.reason === 'invalid' && re.test(e.detail));
  };
  bad({ user: 'no spaces' }, /user/);
  bad({ user: 'u', rooms: 'a:*' }, /array/);
  bad({ user: 'u', info: { x: 'y'.repeat(2000) } }, /info/);
  bad({ user: 'u', exp: Number.NaN }, /exp/);
});
