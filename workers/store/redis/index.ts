/** Cluster mode's public surface for the shard (see docs/CLUSTER.md). */
export { ClusterStore, type ClusterStoreOptions, type JoinResult, type MissedMessage, type RoomOutcome } from './cluster-store.js';
export { RedisUnavailableError, RedisProtocolError } from './errors.js';
export { parseRedisUrls, partitionIndex, normalizeRedisUrl } from './keys.js';
export { validateClusterOptions } from './options.js';
export { findSeqSlot } from './wire.js';
export type { PublishInput, PublishOutcome, PublishResult } from './sequencer.js';
export type { SubscriberEvents } from './subscriber.js';
export type { RedisMessage } from './history.js';
