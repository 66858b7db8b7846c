/**
 * SDK: join, leave and join again before the first `joined` arrives (found in review). The
 * reply to the superseded join used to leave its request timer armed, and the timer then
 * dropped a healthy connection ("timeout").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startEngine } from './helpers/engine.js';
import { ShardchatClient } from '../engine/client/index.js';
import type { WebSocketCtor } from '../engine/client/types.js';
import { guardHandles } from './helpers/leaks.js';

guardHandles();

test('join, leave, join before the first joined: no spurious disconnect, the room ends joined', async (t) => {
  const engine = await startEngine(t, { shards: 1 });
  const c = new ShardchatClient({ url: `ws://127.0.0.1:${engine.port}/ws`, user: 'u1', WebSocket: WebSocket as unknown as WebSocketCtor, requestTimeoutMs: 800 });
  t.after(() => c.close());
  const states: string[] = [];
  c.on('state', (e) => states.push(`${e.state}:${e.cause.reason}`));
  await new Promise<void>((r) => { const off = c.on('hello', () => { off(); r(); }); });
  const j1 = c.join('room1').catch(() => undefined);
  const l = c.leave('room1').catch(() => undefined);
  await c.join('room1');
  await Promise.all([j1, l]);
  // Longer than the request timeout: a stale timer would have fired by now.
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(states.filter((s) => s.startsWith('disconnected')), [], `state changes: ${states.join(' ')}`);
  assert.equal(c.roomState('room1'), 'joined');
});
