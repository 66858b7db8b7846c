/**
 * The upgrade path of the connection router (./connections.ts): refuses while draining (503),
 * takes an admission token (upgradeRatePerSec: 503 + Retry-After), holds maxConnections
 * (counting upgrades still waiting on auth), then finds the identity: open mode's `?user=`
 * (or an anonymous one), the authenticate hook, or the token gate; and upgrades with the
 * connection's state (./conn.ts) as the socket's user data.
 */
import type { Logger } from 'pino';
import { AuthError, identityFromHook, refusal, type Identity } from '../auth/index.js';
import { type AuthGate, answerProtocol } from './auth-gate.js';
import type { ResolvedOptions } from '../options.js';
import { addrHash } from '../protocol/records.js';
import { checkUserQuery } from '../protocol/identity.js';
import { type BucketState, TokenBucketPolicy, monotonicMs } from './token-bucket.js';
import type { Conn, ConnCounters } from './conn.js';
import type { HttpRequest, HttpResponse } from './uws.js';

/** What the upgrade path needs of the router. */
export interface UpgradeHost {
  readonly options: ResolvedOptions;
  readonly log: Logger;
  /** Counts upgradesThrottled. */
  readonly counters: ConnCounters;
  /** Open connections now. */
  connections(): number;
  /** Token auth, or null when off. */
  gate(): AuthGate | null;
  draining(): boolean;
  /** The frame-rate policy: a new connection starts with a full bucket. */
  readonly rate: TokenBucketPolicy;
}

export class UpgradePath {
  private nextConn = 1;
  /** New connections a second (upgradeRatePerSec; null = unlimited), one bucket for the engine. */
  private readonly admission: TokenBucketPolicy | null;
  private readonly admitted: BucketState;
  /** Upgrades waiting on an async authenticate hook: they count against maxConnections. */
  private authPending = 0;
  private readonly o: ResolvedOptions;

  constructor(private readonly host: UpgradeHost) {
    const o = (this.o = host.options);
    this.admission = o.upgradeRatePerSec === 0 ? null : new TokenBucketPolicy(o.upgradeRatePerSec, o.upgradeRatePerSec, monotonicMs);
    this.admitted = this.admission?.full() ?? { tokens: 0, last: 0 };
  }

  /** Takes an admission token (upgradeRatePerSec); without one, answers 503 + Retry-After and returns true. */
  throttled(res: HttpResponse): boolean {
    if (this.admission === null) return false;
    const wait = this.admission.take(this.admitted);
    if (wait <= 0) return false;
    this.host.counters.upgradesThrottled++;
    res.writeStatus('503 Service Unavailable').writeHeader('retry-after', String(Math.ceil(wait / 1000))).writeHeader('content-type', 'text/plain').end('too many new connections; retry after Retry-After seconds');
    return true;
  }

  onUpgrade(res: HttpResponse, req: HttpRequest, ctx: unknown): void {
    if (this.host.draining()) { res.writeStatus('503 Service Unavailable').end('shutting down'); return; }
    if (this.throttled(res)) return;
    if (this.host.connections() + this.authPending >= this.o.maxConnections) { res.writeStatus('503 Service Unavailable').end('too many connections'); return; }
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const query = req.getQuery() ?? '';
    const gate = this.host.gate();
    if (gate !== null) { this.upgradeWithToken(gate, res, key, protocol, extensions, query, ctx); return; }
    const auth = this.o.authenticate;
    if (auth === null) {
      const q = checkUserQuery(query);
      if (q.error !== undefined) { res.writeStatus('400 Bad Request').writeHeader('content-type', 'text/plain').end(q.error); return; }
      this.upgrade(res, q.user, null, key, answerProtocol(protocol), extensions, ctx);
      return;
    }
    const headers: Record<string, string> = {};
    req.forEach((k, v) => { headers[k] = v; });
    const url = req.getUrl();
    let aborted = false;
    res.onAborted(() => { aborted = true; });
    this.authPending++;
    void (async () => {
      let result: unknown = null;
      try {
        result = await auth({ url, query, headers });
      } catch (e) {
        this.host.log.warn({ event: 'auth_error', err: (e as Error).message }, 'authenticate threw');
      } finally {
        this.authPending--;
      }
      if (aborted) return;
      // Anything but { user: valid id, rooms?, info?, exp? } (null, undefined, a bad id, a bad
      // rooms list) refuses the upgrade with 401.
      let identity: Identity | null = null;
      if (result !== null && typeof result === 'object') {
        try {
          identity = identityFromHook(result as { user: string }, this.o.maxInfoBytes);
        } catch (e) {
          if (!(e instanceof AuthError)) throw e;
          this.host.log.warn({ event: 'auth_error', err: e.detail }, 'authenticate returned a bad identity');
        }
      }
      if (identity === null) { res.cork(() => { res.writeStatus('401 Unauthorized').end('unauthorized'); }); return; }
      if (this.refusedAfterAwait(res)) return;
      this.upgrade(res, identity.user, identity, key, answerProtocol(protocol), extensions, ctx);
    })();
  }

  /** Token auth: `?user=` names no one; the token's `sub` is the user (docs/AUTH.md). */
  private upgradeWithToken(gate: AuthGate, res: HttpResponse, key: string, protocol: string, extensions: string, query: string, ctx: unknown): void {
    let aborted = false;
    res.onAborted(() => { aborted = true; });
    this.authPending++;
    void (async () => {
      let answer: { identity: Identity; protocol: string } | AuthError;
      try {
        answer = await gate.verifyUpgrade(protocol, query);
      } catch (e) {
        answer = e instanceof AuthError ? e : new AuthError('invalid', (e as Error).message);
      } finally {
        this.authPending--;
      }
      if (aborted) return;
      if (answer instanceof AuthError) {
        const r = refusal(answer);
        res.cork(() => { res.writeStatus(r.status).writeHeader('content-type', 'application/json').end(r.body); });
        return;
      }
      if (this.refusedAfterAwait(res)) return;
      // Answer the one protocol extractToken chose (`shardchat.v1`), never the bearer entry.
      this.upgrade(res, answer.identity.user, answer.identity, key, answer.protocol, extensions, ctx);
    })();
  }

  /**
   * After an await the engine may be draining or full: the upgrade is then answered 503 (corked,
   * as every HTTP write outside a uWS callback) and this returns true.
   *
   * The upgrade itself must NOT run inside res.cork(). uWS 20.30's HttpResponse::cork() reads the
   * response's state after its callback; after an upgrade that memory is the new WebSocket's
   * (the socket is resized in place), and when the bits it finds there read as "Connection: close,
   * fully answered" it shuts the fresh WebSocket down right after its hello: close 1006, no close
   * frame, before any client frame is read (seen with token auth after `Connection: close` API
   * answers). Uncorked, uWS.js prints a "writes must be made from within a corked callback"
   * warning; the 101 and the hello are written without the cork (two writes instead of one).
   */
  private refusedAfterAwait(res: HttpResponse): boolean {
    const why = this.host.draining() ? 'shutting down' : this.host.connections() >= this.o.maxConnections ? 'too many connections' : null;
    if (why === null) return false;
    res.cork(() => { res.writeStatus('503 Service Unavailable').end(why); });
    return true;
  }

  private upgrade(res: HttpResponse, user: string | null, identity: Identity | null, key: string, protocol: string, extensions: string, ctx: unknown): void {
    const id = this.nextConn++;
    if (this.nextConn > 0xffffffff) this.nextConn = 1;
    const connStr = `c${id.toString(36)}`;
    const full = this.host.rate.full();
    const data: Conn = {
      id, connStr, user: user ?? `anon-${connStr}`, anon: user === null, identity, expiryTimer: null,
      addr: addrHash(Buffer.from(res.getRemoteAddressAsText()).toString('latin1')), rooms: null, topics: null,
      tokens: full.tokens, last: full.last, closed: false, lastLimitLog: -Infinity,
    };
    res.upgrade(data, key, protocol, extensions, ctx as never);
  }
}
