/**
 * shardchat's public surface. `createEngine(options)` starts the shard workers; `listen()` opens
 * the WebSocket endpoint; `close()` drains. See README.md and docs/PROTOCOL.md.
 */
import { Engine } from './server/engine.js';
import type { EngineOptions } from './options.js';

export { Engine } from './server/engine.js';
export type { PublishResult } from './server/engine.js';
export type { EngineStats, ShardStats } from './server/stats.js';
export { EngineError, OptionError, CLOSE_GOING_AWAY, CLOSE_SLOW_CONSUMER, CLOSE_TOO_BIG } from './errors.js';
export type { EngineErrorCode } from './errors.js';
export { OPTION_SPECS, resolveOptions } from './options.js';
export type { AuthRequest, AuthResult, Authenticate, EngineOptions, LogLevel, ResolvedOptions } from './options.js';

/** Validates options, starts every shard, and resolves once they run. */
export async function createEngine(options: EngineOptions = {}): Promise<Engine> {
  const engine = new Engine(options);
  try {
    await engine.ready();
  } catch (e) {
    await engine.close();
    throw e;
  }
  return engine;
}
