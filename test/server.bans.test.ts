/** The API's ban table (engine/server/bans.ts): bans end, and the table stays within maxBans. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BanTable } from '../engine/server/bans.js';

test('a ban lasts its time, per user and room, and can be lifted', () => {
  let now = 1000;
  const bans = new BanTable(10, () => now);
  bans.ban('r', 'bob', 500);
  assert.equal(bans.remaining('r', 'bob'), 500);
  assert.equal(bans.remaining('r', 'eve'), 0);
  assert.equal(bans.remaining('other', 'bob'), 0);
  now += 499;
  assert.equal(bans.remaining('r', 'bob'), 1);
  now += 1;
  assert.equal(bans.remaining('r', 'bob'), 0);
  assert.equal(bans.size, 0, 'an ended ban is forgotten when seen');
  bans.ban('r', 'bob', 500);
  assert.equal(bans.lift('r', 'bob'), true);
  assert.equal(bans.remaining('r', 'bob'), 0);
});

test('a full table drops ended bans first, then the oldest, and counts what it forgot', () => {
  let now = 0;
  const bans = new BanTable(3, () => now);
  bans.ban('r', 'a', 10);
  bans.ban('r', 'b', 1000);
  bans.ban('r', 'c', 1000);
  now = 20;
  bans.ban('r', 'd', 1000);
  assert.equal(bans.size, 3);
  assert.equal(bans.forgotten, 0, 'the ended ban made room');
  bans.ban('r', 'e', 1000);
  assert.equal(bans.size, 3);
  assert.equal(bans.forgotten, 1);
  assert.equal(bans.remaining('r', 'b'), 0, 'the oldest live ban went');
  assert.ok(bans.remaining('r', 'e') > 0 && bans.remaining('r', 'c') > 0 && bans.remaining('r', 'd') > 0);
});
