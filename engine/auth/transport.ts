/**
 * Where a token travels on the WebSocket upgrade, and what the server answers. Pure.
 *
 * - `Sec-WebSocket-Protocol: shardchat.v1, bearer.<token>`: browsers can set no other header.
 *   The server answers `Sec-WebSocket-Protocol: shardchat.v1` (never the bearer entry), so the
 *   client must offer `shardchat.v1` beside it: a browser fails a connection whose answer names
 *   no protocol it offered.
 * - `?token=<token>` (percent-encoded): for clients that can set neither.
 * Giving both, or either twice, is refused (`invalid`) rather than guessing which one counts.
 */
import { queryParam } from '../protocol/identity.js';
import { AuthError } from './errors.js';

export const SUBPROTOCOL = 'shardchat.v1';
export const BEARER_PREFIX = 'bearer.';
/** Longest token accepted, in bytes (a JWT is base64url, so characters are bytes). */
export const MAX_TOKEN_BYTES = 8192;

/** A compact JWS has the shape b64url.b64url.b64url. */
const TOKEN_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export interface ExtractedToken {
  /** The token, or null when none was given. */
  token: string | null;
  /** The Sec-WebSocket-Protocol to answer with ('' = none: echo nothing). */
  protocol: string;
}

/**
 * The token of an upgrade request from its `Sec-WebSocket-Protocol` header value ('' if absent)
 * and its query string (without `?`). Throws AuthError('invalid') for an ambiguous or malformed
 * one; a request without any gives `{token: null}` (the caller decides whether that is `missing`).
 */
export function extractToken(protocolHeader: string, query: string): ExtractedToken {
  let fromHeader: string | null = null;
  let offersV1 = false;
  const others: string[] = [];
  for (const raw of protocolHeader.split(',')) {
    const p = raw.trim();
    if (p === '') continue;
    if (p.startsWith(BEARER_PREFIX)) {
      if (fromHeader !== null) throw new AuthError('invalid', 'more than one bearer.<token> in Sec-WebSocket-Protocol');
      fromHeader = p.slice(BEARER_PREFIX.length);
    } else if (p === SUBPROTOCOL) {
      offersV1 = true;
    } else {
      others.push(p);
    }
  }
  if (fromHeader !== null && !offersV1) {
    throw new AuthError('invalid', `bearer.<token> in Sec-WebSocket-Protocol needs ${SUBPROTOCOL} beside it`);
  }
  const fromQuery = tokenQuery(query);
  if (fromHeader !== null && fromQuery !== null) throw new AuthError('invalid', 'token given both in Sec-WebSocket-Protocol and in ?token=');
  const token = fromHeader ?? fromQuery;
  if (token !== null) checkShape(token);
  return { token, protocol: offersV1 ? SUBPROTOCOL : (others[0] ?? '') };
}

/** `?token=` from a query string: null when absent; throws when repeated or badly encoded. */
export function tokenQuery(query: string): string | null {
  const token = queryParam(query, 'token');
  if (token === false) throw new AuthError('invalid', '?token= given more than once, or badly percent-encoded');
  return token;
}

function checkShape(token: string): void {
  if (token.length > MAX_TOKEN_BYTES) throw new AuthError('invalid', `token longer than ${MAX_TOKEN_BYTES} bytes`);
  if (!TOKEN_SHAPE.test(token)) throw new AuthError('invalid', 'token is not a compact JWT (b64url.b64url.b64url)');
}

/** Builds the header value a client sends: what an SDK passes as `new WebSocket(url, protocols)`. */
export function bearerProtocols(token: string): [string, string] {
  return [SUBPROTOCOL, BEARER_PREFIX + token];
}
