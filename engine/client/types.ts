/**
 * Types of the SDK's public surface: options, states, events, and the frames it reads.
 */
import type { Random } from './backoff.js';
import type { Limits } from '../protocol/frames.js';

/** The part of the WebSocket API the SDK uses; browsers' WebSocket and `ws` both provide it. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  // Handlers typed with `never` so that any implementation's own event types fit; the client
  // assigns handlers that read only `data` (message) and `code` (close).
  onopen: ((ev: never) => void) | null;
  onmessage: ((ev: never) => void) | null;
  onclose: ((ev: never) => void) | null;
  onerror: ((ev: never) => void) | null;
}
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** `ws://host:port/ws`. */
  url: string;
  /** User id for the engine's open mode (`?user=`). */
  user?: string;
  /** A bearer token, or a function giving one before every connection attempt. */
  token?: string;
  getToken?: () => string | Promise<string>;
  /** Where the token goes: `protocol` (Sec-WebSocket-Protocol `bearer.<token>` beside `shardchat.v1`) or `query` (`?token=`). Default: `protocol` with the global WebSocket, `query` when `WebSocket` is passed. */
  tokenIn?: 'protocol' | 'query';
  /** A WebSocket implementation (Node: `ws`). Default: globalThis.WebSocket. */
  WebSocket?: WebSocketCtor;
  /** Reconnect back-off: base and cap of the full-jitter formula. Defaults 500 ms, 20 s. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** A connection must stay up this long before the attempt counter resets. Default 10 s. */
  stableMs?: number;
  /** After a 1001 (engine shutting down) wait an extra random 0..this first. Default 5000 ms. */
  shutdownJitterMs?: number;
  /** Open + hello must arrive within this, else the attempt counts as failed. Default 10 s. */
  connectTimeoutMs?: number;
  /** Offline/unacked publish queue bounds. Defaults 1000 entries, 1 MiB. */
  maxQueue?: number;
  maxQueueBytes?: number;
  /** A publish not acked within this rejects with TimeoutError. Default 30 s. */
  publishTimeoutMs?: number;
  /** hist/who/read/join requests time out after this. Default 10 s. */
  requestTimeoutMs?: number;
  /** Messages of the latest page loaded after a gap. Default 50. */
  gapPageSize?: number;
  /** Live messages held while a gap reload is in flight. Default 5000. */
  maxHeldMessages?: number;
  /** Random source for jitter (tests seed it). Default Math.random. */
  random?: Random;
  /** Connect at construction. Default true. */
  autoConnect?: boolean;
}

export type ClientState = 'disconnected' | 'connecting' | 'connected' | 'closed';
export type RoomState = 'left' | 'joining' | 'joined';

export interface Cause {
  /** What happened: 'connect', 'hello', 'close', 'error', 'timeout', 'closed-by-app', 'join', 'leave', 'resumed', 'gap', 'refused'... */
  reason: string;
  /** WebSocket close code, when a close caused it. */
  code?: number;
  error?: Error;
}

/** hello.limits, as the protocol module defines them. */
export type { Limits } from '../protocol/frames.js';

export interface Message {
  room: string;
  seq: number;
  from: string;
  body: unknown;
  ts: number;
}

export interface ClientEvents {
  state: { state: ClientState; prev: ClientState; cause: Cause };
  room: { room: string; state: RoomState; prev: RoomState; cause: Cause };
  /** A reconnect is scheduled: attempt number (1-based) and when it starts. */
  retry: { attempt: number; delayMs: number; at: number };
  hello: { conn: string; user: string; limits: Limits };
  message: Message;
  /** History between the last delivered message and what follows is lost (or a new epoch): messages before what follows may be missing. The latest page follows as `message` events. */
  gap: { room: string; reason: 'truncated' | 'epoch'; epoch: string; seq: number };
  /** `info`: on a join, the joining identity's info (the token's `info` claim), when it has one. */
  presence: { room: string; user: string; state: 'join' | 'leave'; info?: UserInfo };
  /** The room's present users, after a (re)join and after each presence change. */
  members: { room: string; users: string[] };
  unread: { room: string; count: number };
  /** Something the app cannot act on but may log: a bad frame, a listener that threw. */
  error: { error: Error };
}

/**
 * An identity's `info` (a token's `info` claim, or what an `authenticate` hook returned): a small
 * JSON object the server shows with presence and `who` (docs/PROTOCOL.md).
 */
export type UserInfo = Record<string, unknown>;

/** A `who` reply as the engine sends it: `info` maps users to their info, present only when some user has one. */
export interface WhoFrame { t: 'who'; room: string; users: string[]; info?: Record<string, UserInfo>; truncated?: boolean; ref?: number }

export interface HistOptions { before?: number; after?: number; limit?: number }
export interface HistPage { room: string; msgs: Message[]; truncated: boolean }

export type Frame = Record<string, unknown>;
