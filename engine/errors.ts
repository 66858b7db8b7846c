/**
 * Errors of the library API, each with a stable `code` a program can match, and the WebSocket
 * close codes the engine uses, in one place.
 */

export type EngineErrorCode =
  | 'SHARDCHAT_INVALID_OPTION'
  | 'SHARDCHAT_UWS_UNAVAILABLE'
  | 'SHARDCHAT_NOT_LISTENING'
  | 'SHARDCHAT_LISTEN_FAILED'
  | 'SHARDCHAT_SHUTTING_DOWN'
  | 'SHARDCHAT_OVERLOADED'
  | 'SHARDCHAT_BAD_ROOM'
  | 'SHARDCHAT_BAD_BODY'
  | 'SHARDCHAT_SHARD_RESTARTED'
  | 'SHARDCHAT_SHARD_FAILED'
  | 'SHARDCHAT_UNAVAILABLE';

export class EngineError extends Error {
  constructor(readonly code: EngineErrorCode, message: string) {
    super(message);
    this.name = 'EngineError';
  }
}

/** An option that fails validation: a TypeError or RangeError whose message names the option. */
export class OptionError extends TypeError {
  readonly code = 'SHARDCHAT_INVALID_OPTION';
  constructor(readonly option: string, message: string) {
    super(`options.${option} ${message}`);
    this.name = 'OptionError';
  }
}

/** WebSocket close codes sent by the engine. */
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_TOO_BIG = 1009;
export const CLOSE_SLOW_CONSUMER = 4008;
/** The connection's token (or authenticate hook identity) reached its `exp` without a `refresh`. */
export const CLOSE_TOKEN_EXPIRED = 4401;

/**
 * Close codes counted under their own metric label: the engine's, and the common ones a peer
 * or the transport produces. Any other code (a client chooses it) is counted as CLOSE_OTHER,
 * so a client cannot create metric series or map entries.
 */
export const KNOWN_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 1001, 1002, 1005, 1006, 1009, 1011, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED]);
/** The key of every other close code (0 is never a close code on the wire); labelled `other`. */
export const CLOSE_OTHER = 0;
