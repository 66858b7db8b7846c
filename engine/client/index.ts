/**
 * `shardchat/client`: the SDK. Runs in browsers and in Node 20 (pass a WebSocket implementation
 * such as `ws`). See docs/CLIENT.md.
 */
export { ShardchatClient } from './client.js';
export { backoffDelay, seededRandom, type Random, type BackoffOptions } from './backoff.js';
export { ClientError, QueueFullError, ServerError, TimeoutError, type ClientErrorCode } from './errors.js';
export type {
  Cause, ClientEvents, ClientOptions, ClientState, HistOptions, HistPage, Limits, Message, RoomState,
  UserInfo, WebSocketCtor, WebSocketLike, WhoFrame,
} from './types.js';
