/** The store's public surface for the shard: the interface, the two backends, the typed error. */
export type { AppendInput, RoomInfo, Store, StoredMessage, StoreLimits, TrimResult } from './types.js';
export { DEFAULT_STORE_LIMITS } from './types.js';
export { MemoryStore } from './memory.js';
export { SqliteStore, type FsyncMode, type SqliteStoreOptions } from './sqlite.js';
export { StoreError, type StoreErrorCode } from '../../engine/store-dir.js';
