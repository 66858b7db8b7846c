/**
 * The SDK's typed errors. Every one carries a stable `code` a program can match; `ServerError`
 * also carries the protocol's `err` code and `retryAfterMs` when the engine sent them.
 */
export type ClientErrorCode =
  | 'queue_full' | 'timeout' | 'closed' | 'disconnected' | 'too_large' | 'not_joined' | 'server' | 'bad_frame'
  /** The engine refused the token (missing, invalid, or expired again): the client closed for good. */
  | 'unauthorized';

export class ClientError extends Error {
  constructor(readonly code: ClientErrorCode, message: string) {
    super(message);
    this.name = 'ClientError';
  }
}

/** A publish did not fit the offline queue (count or bytes). */
export class QueueFullError extends ClientError {
  constructor(message: string) { super('queue_full', message); this.name = 'QueueFullError'; }
}

/** A publish or request was not answered within its timeout. */
export class TimeoutError extends ClientError {
  constructor(message: string) { super('timeout', message); this.name = 'TimeoutError'; }
}

/** The engine answered with `err`. */
export class ServerError extends ClientError {
  constructor(readonly serverCode: string, message: string, readonly retryAfterMs?: number) {
    super('server', `${serverCode}: ${message}`);
    this.name = 'ServerError';
  }
}
