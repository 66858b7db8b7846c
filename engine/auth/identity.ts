/**
 * The verified identity a token yields, built from its claims. Pure: the signature and the
 * registered claims (exp, nbf, aud, iss) are checked by verifier.ts before this runs.
 */
import { isValidUser } from '../protocol/frames.js';
import { AuthError } from './errors.js';
import { RoomsClaimError, compileRooms, type RoomMatcher } from './permissions.js';

export interface Identity {
  /** The user id: `sub`, 1..64 bytes of [A-Za-z0-9_.@-], never in the `anon-` namespace. */
  readonly user: string;
  /** Expiry, unix seconds (the token's `exp`; Infinity for a hook identity without one). */
  readonly exp: number;
  /** Compiled `rooms` claim; null = every room and action allowed. */
  readonly rooms: RoomMatcher | null;
  /** The token's `info` object (bounded by maxInfoBytes as JSON), or null. */
  readonly info: Readonly<Record<string, unknown>> | null;
}

/** Default bound of the `info` claim, in bytes of its JSON. */
export const DEFAULT_MAX_INFO_BYTES = 1024;

/** Builds the Identity from verified claims; throws AuthError('invalid') naming the bad claim. */
export function identityFromClaims(claims: Record<string, unknown>, maxInfoBytes = DEFAULT_MAX_INFO_BYTES): Identity {
  const { sub, exp } = claims;
  if (sub === undefined) throw new AuthError('invalid', 'sub claim missing');
  if (!isValidUser(sub)) throw new AuthError('invalid', 'sub must be 1..64 bytes of [A-Za-z0-9_.@-]');
  if (sub.startsWith('anon-')) throw new AuthError('invalid', 'sub must not start with anon- (reserved for anonymous connections)');
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw new AuthError('invalid', 'exp claim missing or not a number');
  return Object.freeze({ user: sub, exp, rooms: roomsClaim(claims.rooms), info: infoClaim(claims.info, maxInfoBytes) });
}

/** What an embedder's `authenticate` hook may return to get the same permissions as a token. */
export interface HookIdentity {
  user: string;
  /** A claim-shaped list, as in a token (docs/AUTH.md); absent = everything allowed. */
  rooms?: unknown;
  info?: unknown;
  /** Unix seconds after which the connection is closed; absent = never. */
  exp?: number;
}

/**
 * The Identity of an `authenticate` hook's result. The user rules are the hook's as today
 * (isValidUser; the `anon-` rule is for tokens only, so no existing hook changes meaning).
 * Throws AuthError('invalid') naming what is wrong, which the engine answers with 401.
 */
export function identityFromHook(result: HookIdentity, maxInfoBytes = DEFAULT_MAX_INFO_BYTES): Identity {
  if (!isValidUser(result.user)) throw new AuthError('invalid', 'authenticate returned a user that is not 1..64 bytes of [A-Za-z0-9_.@-]');
  const exp = result.exp ?? Infinity;
  if (typeof exp !== 'number' || Number.isNaN(exp)) throw new AuthError('invalid', 'authenticate returned an exp that is not a number');
  return Object.freeze({ user: result.user, exp, rooms: roomsClaim(result.rooms), info: infoClaim(result.info, maxInfoBytes) });
}

function roomsClaim(rooms: unknown): RoomMatcher | null {
  if (rooms === undefined) return null;
  try {
    return compileRooms(rooms);
  } catch (e) {
    if (e instanceof RoomsClaimError) throw new AuthError('invalid', e.message);
    throw e;
  }
}

function infoClaim(info: unknown, maxBytes: number): Readonly<Record<string, unknown>> | null {
  if (info === undefined || info === null) return null;
  if (typeof info !== 'object' || Array.isArray(info)) throw new AuthError('invalid', 'info claim must be an object');
  // The claim came from JSON.parse, so it serialises back; its size is what clients will see.
  const bytes = Buffer.byteLength(JSON.stringify(info));
  if (bytes > maxBytes) throw new AuthError('invalid', `info claim is ${bytes} bytes of JSON, more than ${maxBytes}`);
  return info as Record<string, unknown>;
}
