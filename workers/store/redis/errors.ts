/**
 * The one error cluster mode raises to the shard: Redis could not be reached in time. The shard
 * answers the request with protocol `err` `unavailable` + `retryAfterMs`, at once; nothing is
 * queued to run later.
 */

export type RedisStoreErrorCode = 'unavailable';

export class RedisUnavailableError extends Error {
  readonly code: RedisStoreErrorCode = 'unavailable';
  constructor(
    /** What the store was doing ("publish to room r", "read history of r"...). */
    readonly operation: string,
    /** When the client may retry (the reconnect back-off, bounded). */
    readonly retryAfterMs: number,
    /**
     * True when the command may have reached Redis before the failure (a reply timed out):
     * it may have run. A `pub` with a `cid` can be retried safely; without one it may repeat.
     */
    readonly maybeApplied: boolean,
    cause?: unknown,
  ) {
    super(`redis unavailable: ${operation}${cause instanceof Error ? `: ${cause.message}` : ''}`, { cause });
    this.name = 'RedisUnavailableError';
  }
}

/** A reply Redis sent that breaks the store's own invariants (a script's contract): a bug, not an outage. */
export class RedisProtocolError extends Error {
  readonly code = 'internal';
  constructor(message: string) {
    super(message);
    this.name = 'RedisProtocolError';
  }
}
