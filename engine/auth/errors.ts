/**
 * Why a token was refused, as a typed error with a stable `reason` a program can match, and the
 * HTTP answer the engine gives for it at upgrade (and on the token-check endpoint). Pure.
 */

/**
 * - `missing`: no token where one is required.
 * - `expired`: a well-signed token whose `exp` is past (beyond the clock tolerance).
 * - `invalid`: anything else wrong with the token: bad signature, algorithm, `aud`, `iss`,
 *   claims, encoding, size, or a key set that has no key for it.
 * - `unavailable`: the token could not be checked because the key set (JWKS URL) did not answer;
 *   not the token's fault, so it is answered 503 and the client may retry.
 */
export type AuthReason = 'missing' | 'expired' | 'invalid' | 'unavailable';

export class AuthError extends Error {
  readonly code = 'SHARDCHAT_UNAUTHORIZED';
  /**
   * `detail` is for logs (which check failed); clients get `reason` and a fixed message, and
   * `publicDetail` when set: what is wrong with a claim of a token whose signature verified
   * (an `info` too large, a bad `rooms` list), safe to tell and needed to fix the issuer.
   */
  constructor(readonly reason: AuthReason, readonly detail: string, readonly publicDetail?: string) {
    super(`token ${reason}: ${detail}`);
    this.name = 'AuthError';
  }
}

const MESSAGES: Record<AuthReason, string> = {
  missing: 'a token is required (Sec-WebSocket-Protocol bearer.<token> or ?token=)',
  expired: 'the token has expired: get a new one',
  invalid: 'the token is not valid for this server',
  unavailable: 'the token could not be checked now: retry later',
};

/** The HTTP status line and JSON body for a refused token (docs/AUTH.md, "Refusals"). */
export function refusal(err: AuthError): { status: string; body: string } {
  const status = err.reason === 'unavailable' ? '503 Service Unavailable' : '401 Unauthorized';
  const error: Record<string, string> = { code: 'unauthorized', reason: err.reason, msg: MESSAGES[err.reason] };
  if (err.publicDetail !== undefined) error.detail = err.publicDetail;
  const body = JSON.stringify({ error });
  return { status, body };
}
