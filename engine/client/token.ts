/**
 * What the SDK reads of its own token (docs/CLIENT.md, "Auth"): the `exp` claim, to refresh the
 * connection's token before the engine closes it with 4401, and when to do so. It verifies
 * nothing (the engine does); a token it cannot read is simply never refreshed. No Node API:
 * `atob` and TextDecoder exist in browsers and Node 20.
 */

/** The `exp` claim (unix seconds) of a compact JWT, or null when it has none or cannot be read. */
export function tokenExp(token: string): number | null {
  const part = token.split('.')[1];
  if (part === undefined || part === '') return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp : null;
  } catch {
    return null; // not base64url JSON: the engine will say what it thinks of it
  }
}

/**
 * Milliseconds from `nowMs` until a token expiring at `expSec` should be replaced: at 70..90% of
 * its remaining life (the jitter spreads the refreshes of clients whose tokens share an `exp`),
 * never sooner than `minMs`.
 */
export function refreshDelay(expSec: number, nowMs: number, random: () => number, minMs = 1000): number {
  const left = expSec * 1000 - nowMs;
  return Math.max(minMs, Math.round(left * (0.7 + 0.2 * random())));
}

/** The `GET /auth/check` URL of an engine's WebSocket URL (ws -> http, wss -> https). */
export function authCheckUrl(wsUrl: string): string {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = '/auth/check';
  u.search = '';
  u.hash = '';
  return u.toString();
}
