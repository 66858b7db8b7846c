import type { ClientEvents, ShardchatClient } from '../../engine/client/index.js';

/** Records every event of the kinds given, in order. */
export function record<K extends keyof ClientEvents>(c: ShardchatClient, ...kinds: K[]): { kind: K; e: ClientEvents[K] }[] {
  const log: { kind: K; e: ClientEvents[K] }[] = [];
  for (const k of kinds) c.on(k, (e) => log.push({ kind: k, e }));
  return log;
}
