/** The per-connection state of the connection router (./connections.ts), held by uWS as each socket's user data. */
import type { Identity } from '../auth/index.js';
import type { ExpirySlot } from './auth-gate.js';
import type { BucketState } from './token-bucket.js';
import type { RoomSet } from './room-set.js';

/**
 * Per-socket state, held by uWS as the socket's user data. One flat object per connection (issue
 * 15: idle bytes): the frame-rate bucket's two numbers are its own fields (BucketState), not an
 * object of their own, and the subscribed-topics list exists only once the socket has a topic.
 */
export interface Conn extends ExpirySlot, BucketState {
  /** The token's (or authenticate hook's) identity: permissions and expiry; null in open mode. */
  identity: Identity | null;
  id: number;
  connStr: string;
  user: string;
  /** No identity (`anon-<conn>`): the shard drops its cursors on leave and limits room creation by `addr`. */
  anon: boolean;
  /** A hash of the client address (the room-creation principal of an anonymous user). */
  addr: number;
  /** Rooms this connection joined (and has not left), as the main thread routed them (./room-set.ts). */
  rooms: RoomSet;
  /** uWS topics the socket is subscribed to (kept by SlowConsumerGuard, as a RoomSet). */
  topics: RoomSet;
  closed: boolean;
  /** When (monotonic ms) this connection's last "limit hit" line was logged (at most one per LIMIT_LOG_MS). */
  lastLimitLog: number;
}

/** Counters the metrics module reads (owned by the engine, counted by the router): closes by code (KNOWN_CLOSE_CODES, else CLOSE_OTHER), `err` replies by code, slow consumers closed. */
export interface ConnCounters {
  opened: number;
  closedByCode: Map<number, number>;
  errors: Uint32Array;
  slowConsumers: number;
  upgradesThrottled: number;
  framesIn: number;
}
