/** `?user=` parsing, table-driven with literal query strings. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseUserQuery } from '../engine/protocol/identity.js';

const cases: [string, string | null | false][] = [
  ['', null],
  ['room=x', null],
  ['user=alice', 'alice'],
  ['a=1&user=bob.smith@x-y_z&b=2', 'bob.smith@x-y_z'],
  ['user=al%69ce', 'alice'],
  ['user=' + 'a'.repeat(64), 'a'.repeat(64)],
  ['user=' + 'a'.repeat(65), false],
  ['user=', false],
  ['user', false],
  ['user=a&user=b', false],
  ['user=a&user=a', false],
  ['user=%E0%A4%A', false],
  ['user=%zz', false],
  ['user=a+b', false],
  ['user=a%20b', false],
  ['user=%C3%A9', false],
  ['user=a:b', false],
  // The anonymous namespace is the engine's (issue 10, item 14); only the exact prefix.
  ['user=anon-c1', false],
  ['user=anon-', false],
  ['user=anon%2Dc1', false],
  ['user=Anon-c1', 'Anon-c1'],
  ['user=anonymous', 'anonymous'],
  ['user=xanon-c1', 'xanon-c1'],
];

for (const [query, want] of cases) {
  test(`parseUserQuery(${JSON.stringify(query.length > 40 ? query.slice(0, 40) + '...' : query)}) = ${JSON.stringify(want)}`, () => {
    assert.equal(parseUserQuery(query), want);
  });
}
