/**
 * Token auth on the main thread (docs/AUTH.md): the verifier behind the upgrade path, the
 * `GET /auth/check` endpoint, the `refresh` frame, the per-frame room permission check and the
 * expiry timers that close a connection with 4401. The connection router (./connections.ts)
 * calls in here; it holds no uWS state of its own beyond the handlers it is given.
 */
import { unpack } from 'msgpackr';
import { AuthError, BEARER_PREFIX, SUBPROTOCOL, allows, createVerifier, extractToken, refusal, type Identity, type ResolvedAuthOptions, type RoomAction, type TokenVerifier, type VerifierStats } from '../auth/index.js';
import type { HttpRequest, HttpResponse } from './uws.js';

/** The action a client frame type needs (index: frames.ts T_*); '' = none (leave). */
const ACTION_OF: readonly (RoomAction | '')[] = ['', 'join', '', 'pub', 'hist', 'read', 'who'];

/** setTimeout's longest delay; a later expiry re-arms the timer when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** True when `identity` may do what frame type `type` (T_*) asks on `room`. Allocation-free. */
export function permits(identity: Identity, type: number, room: string): boolean {
  if (identity.rooms === null) return true;
  const action = ACTION_OF[type];
  return action === '' || action === undefined || allows(identity, action, room);
}

/**
 * The one Sec-WebSocket-Protocol to answer an offer with (RFC 6455: the server selects one, and a
 * browser fails a handshake answered with a list or with a value it did not offer):
 * `shardchat.v1` when offered, else the first entry that is not a `bearer.` token, else none.
 */
export function answerProtocol(header: string): string {
  let first = '';
  for (const raw of header.split(',')) {
    const p = raw.trim();
    if (p === SUBPROTOCOL) return p;
    if (first === '' && p !== '' && !p.startsWith(BEARER_PREFIX)) first = p;
  }
  return first;
}

/** A `refresh` frame `{t: "refresh", token, ref?}` decoded, or null when the frame is not one. */
export interface RefreshFrame { token: unknown; ref: number }

/**
 * Decodes a frame the scanner refused with unknown_type, to see whether it is a `refresh`.
 * Off the hot path: only frames that are no v1 type reach it, and only with token auth on.
 */
export function parseRefresh(bytes: Uint8Array): RefreshFrame | null {
  let v: unknown;
  try {
    v = unpack(bytes);
  } catch {
    return null; // not MessagePack the scanner could read either: stays unknown_type
  }
  if (v === null || typeof v !== 'object' || (v as { t?: unknown }).t !== 'refresh') return null;
  const r = (v as { ref?: unknown }).ref;
  const ref = typeof r === 'number' && Number.isInteger(r) && r >= 0 && r <= 0xffffffff ? r : -1;
  return { token: (v as { token?: unknown }).token, ref };
}

/** Where a connection keeps its expiry timer. */
export interface ExpirySlot { expiryTimer: NodeJS.Timeout | null }

export class AuthGate {
  private constructor(private readonly verifier: TokenVerifier, private readonly toleranceMs: number) {}

  /** Loads the key (reads files, builds the JWKS client): a bad key option fails here, naming it. */
  static async create(opts: ResolvedAuthOptions): Promise<AuthGate> {
    return new AuthGate(await createVerifier(opts), opts.clockToleranceSec * 1000);
  }

  verifyUpgrade(protocolHeader: string, query: string): Promise<{ identity: Identity; protocol: string }> {
    return this.verifier.verifyUpgrade(protocolHeader, query);
  }

  /**
   * The identity of a `refresh` token: verified like an upgrade's, and for the same user (a
   * connection never changes whose it is). Throws AuthError.
   */
  async refresh(token: unknown, current: Identity): Promise<Identity> {
    if (typeof token !== 'string' || token === '') throw new AuthError('missing', 'refresh without a token string');
    let next: Identity;
    try {
      next = await this.verifier.verify(extractToken('', `token=${encodeURIComponent(token)}`).token);
    } catch (e) {
      if (e instanceof AuthError) throw e;
      throw new AuthError('invalid', (e as Error).message);
    }
    if (next.user !== current.user) throw new AuthError('invalid', `refresh token is for ${next.user}, the connection is ${current.user}`);
    return next;
  }

  /**
   * Arms (or re-arms) `slot`'s timer to call `expire` once `identity` is past its `exp` plus the
   * clock tolerance (the verifier accepts a token that long). An identity without `exp`
   * (Infinity, from a hook) never expires. A due date beyond setTimeout's range re-arms itself.
   */
  arm(slot: ExpirySlot, identity: Identity, expire: () => void): void {
    AuthGate.disarm(slot);
    if (!Number.isFinite(identity.exp)) return;
    const due = identity.exp * 1000 + this.toleranceMs;
    const schedule = (): void => {
      const wait = due - Date.now();
      if (wait <= 0) { slot.expiryTimer = null; expire(); return; }
      slot.expiryTimer = setTimeout(schedule, Math.min(wait, MAX_TIMER_MS));
      slot.expiryTimer.unref();
    };
    const wait = due - Date.now();
    // An already-due identity (accepted within the tolerance) still gets its hello first.
    slot.expiryTimer = setTimeout(schedule, Math.min(Math.max(0, wait), MAX_TIMER_MS));
    slot.expiryTimer.unref();
  }

  static disarm(slot: ExpirySlot): void {
    if (slot.expiryTimer !== null) { clearTimeout(slot.expiryTimer); slot.expiryTimer = null; }
  }

  /**
   * `GET /auth/check`: the same question as the upgrade, for a browser that sees only 1006 when
   * its upgrade is refused. The token comes as `Authorization: Bearer <token>`, `?token=` or the
   * upgrade's `Sec-WebSocket-Protocol` entries; 200 `{user, exp}` or the refusal's status and body.
   */
  check(res: HttpResponse, req: HttpRequest): void {
    const authz = req.getHeader('authorization');
    const protocol = req.getHeader('sec-websocket-protocol');
    const query = req.getQuery() ?? '';
    let aborted = false;
    res.onAborted(() => { aborted = true; });
    void (async () => {
      let status = '200 OK';
      let body: string;
      try {
        let identity: Identity;
        if (authz !== '') {
          const m = /^Bearer +(\S+)$/i.exec(authz);
          if (m === null) throw new AuthError('invalid', 'Authorization must be "Bearer <token>"');
          if (protocol !== '' || extractToken('', query).token !== null) throw new AuthError('invalid', 'token given more than one way');
          identity = await this.verifier.verify(extractToken('', `token=${encodeURIComponent(m[1]!)}`).token);
        } else {
          identity = (await this.verifier.verifyUpgrade(protocol, query)).identity;
        }
        body = JSON.stringify({ user: identity.user, exp: identity.exp });
      } catch (e) {
        const err = e instanceof AuthError ? e : new AuthError('invalid', (e as Error).message);
        const r = refusal(err);
        status = r.status;
        body = r.body;
      }
      if (aborted) return;
      res.cork(() => { res.writeStatus(status).writeHeader('content-type', 'application/json').writeHeader('cache-control', 'no-store').end(body); });
    })();
  }

  stats(): VerifierStats {
    return this.verifier.stats();
  }
}
