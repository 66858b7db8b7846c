export { BufferPool, PoolError, geometricClasses, DEFAULT_CLASSES, DEFAULT_MAX_POOLED_PER_CLASS, MAX_CLASS_SIZE } from './pool.js';
export type { BufferPoolOptions, PoolClassStats, PoolErrorCode, PoolStats } from './pool.js';
