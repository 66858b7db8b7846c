/**
 * A real engine and real clients for integration tests, each closed after the test that made it.
 */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createEngine, type Engine, type EngineOptions } from '../../engine/index.js';
import { TestClient, type ConnectOptions, type Frame } from './client.js';

/** A real engine on 127.0.0.1 port 0, closed after the test. Rate limits (frames, room creation) are lifted unless `opts` sets them. */
export async function startEngine(t: TestContext, opts: EngineOptions = {}): Promise<Engine> {
  const engine = await createEngine({
    port: 0, host: '127.0.0.1', shards: 2, logLevel: 'silent', ratePerSec: 1e6, rateBurst: 1e6,
    roomCreateRate: 1e6, roomCreateBurst: 1e6, ...opts,
  });
  t.after(() => engine.close());
  await engine.listen();
  assert.ok(Number.isInteger(engine.port) && engine.port > 0, `engine.port after listen(): ${engine.port}`);
  return engine;
}

/** A connected client, closed after the test, whose transport must stay free of protocol violations. */
export async function openClient(t: TestContext, engine: Engine, user?: string, opts: ConnectOptions = {}): Promise<TestClient> {
  const c = await TestClient.connect(engine.port, { user, ...opts });
  t.after(async () => {
    await c.close();
    assert.deepEqual(c.violations, [], `protocol violations seen by ${c.label}`);
  });
  return c;
}

export async function joinRoom(c: TestClient, room: string, extra: Frame = {}): Promise<Frame> {
  const r = await c.request({ t: 'join', room, ...extra });
  assert.equal(r.t, 'joined', `join ${room} by ${c.label}: ${JSON.stringify(r)}`);
  return r;
}

export async function pubTo(c: TestClient, room: string, body: unknown): Promise<Frame> {
  const r = await c.request({ t: 'pub', room, body });
  assert.equal(r.t, 'ack', `pub to ${room} by ${c.label}: ${JSON.stringify(r)}`);
  return r;
}

/** Room names, `perShard` for every shard of the engine, chosen with engine.shardOf. */
export function roomsPerShard(engine: Engine, shards: number, prefix: string, perShard = 1): string[][] {
  const by: string[][] = Array.from({ length: shards }, () => []);
  for (let i = 0; i < 10_000 && by.some((b) => b.length < perShard); i++) {
    const name = `${prefix}-${i}`;
    const k = engine.shardOf(name);
    assert.ok(Number.isInteger(k) && k >= 0 && k < shards, `shardOf(${name}) = ${k}`);
    if (by[k]!.length < perShard) by[k]!.push(name);
  }
  assert.ok(by.every((b) => b.length === perShard), 'shardOf spreads names over every shard');
  return by;
}
