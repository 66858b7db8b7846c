/**
 * Regression (issue 10, item 5): `hist`, `who` and `join`+`since` returned up to maxHistBytes
 * for one token, so one connection could pull 50 MiB at once and 10 MiB/s after that. Now a
 * direct reply costs one more token per replyBytesPerToken bytes (docs/LIMITS.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startEngine, openClient, joinRoom } from './helpers/engine.js';
import { guardHandles } from './helpers/leaks.js';
import { encodedSize, type Frame } from './helpers/client.js';

guardHandles();

const RATE = 10;
const BURST = 50;

test('a client pulling big hist pages in a loop is rate_limited at the documented rate; a normal client is not', async (t) => {
  const engine = await startEngine(t, { ratePerSec: RATE, rateBurst: BURST, maxHistBytes: 1 << 20 });
  const body = 'h'.repeat(30_000);
  for (let i = 0; i < 40; i++) await engine.publish('big', body); // ~1.2 MB of history
  const puller = await openClient(t, engine, 'puller');
  const normal = await openClient(t, engine, 'normal');
  await joinRoom(puller, 'big');
  await joinRoom(normal, 'chat');
  const pages: number[] = [];
  let limited: Frame | null = null;
  for (let i = 0; i < 10 && limited === null; i++) {
    const r = await puller.request({ t: 'hist', room: 'big', limit: 500 });
    if (r.t === 'err') { limited = r; break; }
    assert.equal(r.t, 'hist', JSON.stringify(r).slice(0, 200));
    pages.push(encodedSize(r));
  }
  const per = Math.floor(pages[0]! / 65536);
  assert.ok(per >= 15, `a page of ${pages[0]} bytes costs ${per} tokens beyond its frame`);
  // Tokens: BURST, each page 1 + per (charged after it is sent, into a debt the next frame waits out).
  const allowed = Math.ceil(BURST / (1 + per));
  assert.ok(limited !== null, `no rate_limited after ${pages.length} pages of ${pages[0]} bytes (one token each before the fix)`);
  assert.equal(limited.code, 'rate_limited');
  assert.ok(pages.length <= allowed, `${pages.length} pages served before rate_limited; at most ${allowed} expected`);
  const wait = limited.retryAfterMs as number;
  assert.ok(wait > 0 && wait <= ((BURST + 1) * 1000) / RATE, `retryAfterMs ${wait}`);
  // The normal client, small requests only: nothing extra, 20 requests well inside its burst.
  for (let i = 0; i < 10; i++) {
    assert.equal((await normal.request({ t: 'pub', room: 'chat', body: `hi ${i}` })).t, 'ack');
    assert.equal((await normal.request({ t: 'hist', room: 'chat', limit: 5 })).t, 'hist');
  }
});
