/**
 * One node-redis connection, set up to fail fast: no offline queue (a command issued while the
 * socket is down is rejected at once, never run late), a bounded command queue, a per-command
 * deadline that also covers a command already sent, and reconnects with capped full-jitter
 * back-off. Every failure reaches the caller as RedisUnavailableError; replies of the server
 * (script errors) pass through unchanged. `healthy` is the flag /readyz can use.
 */
import { createClient, ErrorReply, RESP_TYPES, SocketClosedUnexpectedlyError, TimeoutReadError, type RedisArgument } from 'redis';
import { RedisUnavailableError } from './errors.js';

export interface RedisConnectionOptions {
  url: string;
  /** A command's deadline (queued and in flight), ms. */
  commandTimeoutMs?: number;
  /** Connect deadline, ms. */
  connectTimeoutMs?: number;
  /** Commands waiting for a reply on this connection at most (beyond: unavailable). */
  maxQueued?: number;
  /** Reconnect back-off: min(max, min * 2^n), with full jitter. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** A name for CLIENT LIST (`CLIENT SETNAME`). */
  name?: string;
}

export const DEFAULT_CONNECTION = {
  commandTimeoutMs: 800,
  connectTimeoutMs: 800,
  maxQueued: 10_000,
  reconnectMinMs: 50,
  reconnectMaxMs: 2_000,
} as const;

/** Replies with bulk strings as Buffers: frames are binary. */
const BUFFERS = { [RESP_TYPES.BLOB_STRING]: Buffer, [RESP_TYPES.SIMPLE_STRING]: Buffer } as const;

export function backoffMs(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 20));
  return Math.floor(minMs / 2 + random() * cap);
}

export type Reply = null | number | Buffer | Reply[];

export function createRedisClient(o: RedisConnectionOptions) {
  const minMs = o.reconnectMinMs ?? DEFAULT_CONNECTION.reconnectMinMs;
  const maxMs = o.reconnectMaxMs ?? DEFAULT_CONNECTION.reconnectMaxMs;
  return createClient({
    url: o.url,
    name: o.name,
    disableOfflineQueue: true,
    commandsQueueMaxLength: o.maxQueued ?? DEFAULT_CONNECTION.maxQueued,
    RESP: 2,
    socket: {
      connectTimeout: o.connectTimeoutMs ?? DEFAULT_CONNECTION.connectTimeoutMs,
      reconnectStrategy: (retries: number) => backoffMs(retries, minMs, maxMs),
    },
  });
}

export type RawRedisClient = ReturnType<typeof createRedisClient>;

export class RedisConnection {
  readonly client: RawRedisClient;
  private readonly timeoutMs: number;
  private readonly retryMs: number;
  private connected = false;
  private closed = false;
  /** The last error the socket reported (for logs and /readyz bodies). */
  lastError: Error | null = null;
  /** +1 each time the socket becomes ready (a reconnect may reach a Redis with an empty script cache). */
  generation = 0;

  constructor(readonly options: RedisConnectionOptions) {
    this.client = createRedisClient(options);
    this.timeoutMs = options.commandTimeoutMs ?? DEFAULT_CONNECTION.commandTimeoutMs;
    this.retryMs = options.reconnectMaxMs ?? DEFAULT_CONNECTION.reconnectMaxMs;
    // node-redis emits 'error' for every failed socket and reconnects by itself: record it,
    // never let it become an uncaught exception.
    this.client.on('error', (err: Error) => { this.lastError = err; });
    this.client.on('ready', () => { this.generation++; });
  }

  /**
   * Connects once. A Redis that is down now fails here within connectTimeoutMs (unavailable),
   * and node-redis keeps retrying in the background: `healthy` turns true when it succeeds.
   */
  async connect(): Promise<void> {
    if (this.connected) throw new Error('RedisConnection.connect() called twice');
    this.connected = true;
    const deadlineMs = this.options.connectTimeoutMs ?? DEFAULT_CONNECTION.connectTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const pending = this.client.connect();
    // node-redis's connect() only settles once connected (it retries inside): do not leave its
    // rejection unhandled when close() ends the retries.
    pending.catch((err: unknown) => { this.lastError = err as Error; });
    try {
      await Promise.race([pending, new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not connected within ${deadlineMs} ms`)), deadlineMs);
      })]);
    } catch (err) {
      throw new RedisUnavailableError(`connect to ${this.options.url}`, this.retryMs, false, err);
    } finally {
      clearTimeout(timer);
    }
  }

  /** True while the socket is up and ready for commands. */
  get healthy(): boolean { return !this.closed && this.client.isReady; }

  /**
   * One command; bulk replies as Buffers. Fails fast with RedisUnavailableError when the
   * socket is down, the queue is full, or no reply came within the deadline.
   */
  async call(args: readonly RedisArgument[], operation: string): Promise<Reply> {
    if (!this.healthy) throw new RedisUnavailableError(operation, this.retryMs, false, this.lastError ?? undefined);
    try {
      return (await this.client.sendCommand(args, {
        timeout: this.timeoutMs, rejectInFlight: true, typeMapping: BUFFERS,
      })) as Reply;
    } catch (err) {
      if (err instanceof ErrorReply) throw err;
      // A reply that timed out, or a socket that closed with the command sent: it may have run.
      const maybe = err instanceof TimeoutReadError || err instanceof SocketClosedUnexpectedlyError;
      throw new RedisUnavailableError(operation, this.retryMs, maybe, err);
    }
  }

  /** Closes the connection without waiting for replies. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    // isOpen is true also while node-redis is still retrying a connect that never succeeded.
    if (this.client.isOpen) this.client.destroy();
  }
}
