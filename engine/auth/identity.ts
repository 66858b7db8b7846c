/**
 * The verified identity a token yields, built from its claims. Pure: the signature and the
 * registered claims (exp, nbf, aud, iss) are checked by verifier.ts before this runs.
 */
import { CodecError, encode } from '../protocol/codec.js';
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
  /**
   * `info` as MessagePack (the SDK's codec: a map), as the shard keeps it and clients receive it
   * in `presence` and `who`; at most maxInfoBytes too. Null without info.
   */
  readonly infoBytes: Uint8Array | null;
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
  // The signature verified: what is wrong with a claim may be told to the client (AuthError.publicDetail).
  const rooms = roomsClaim(claims.rooms, true);
  return Object.freeze({ user: sub, exp, rooms, ...infoClaim(claims.info, maxInfoBytes, true) });
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
  return Object.freeze({ user: result.user, exp, rooms: roomsClaim(result.rooms, false), ...infoClaim(result.info, maxInfoBytes, false) });
}

function roomsClaim(rooms: unknown, tell: boolean): RoomMatcher | null {
  if (rooms === undefined) return null;
  try {
    return compileRooms(rooms);
  } catch (e) {
    if (e instanceof RoomsClaimError) throw claimError(e.message, tell);
    throw e;
  }
}

function claimError(detail: string, tell: boolean): AuthError {
  return new AuthError('invalid', detail, tell ? detail : undefined);
}

/**
 * The `info` object and its MessagePack bytes. It must be JSON data (a hook's result is made so:
 * JSON round-tripped, so what clients see is what JSON would carry), an object, and at most
 * `maxBytes` both as JSON and as MessagePack (smaller than the JSON but for non-integer numbers,
 * 9 bytes each): the shard keeps the MessagePack, so maxBytes bounds its memory per present user.
 */
function infoClaim(info: unknown, maxBytes: number, tell: boolean): { info: Readonly<Record<string, unknown>> | null; infoBytes: Uint8Array | null } {
  if (info === undefined || info === null) return { info: null, infoBytes: null };
  if (typeof info !== 'object' || Array.isArray(info)) throw claimError('info claim must be an object', tell);
  let json: string;
  try {
    json = JSON.stringify(info);
  } catch (e) {
    throw claimError(`info claim is not JSON data (${(e as Error).message})`, tell);
  }
  const jsonBytes = Buffer.byteLength(json);
  if (jsonBytes > maxBytes) throw claimError(`info claim is ${jsonBytes} bytes of JSON, more than ${maxBytes}`, tell);
  const data = tell ? info as Record<string, unknown> : JSON.parse(json) as Record<string, unknown>;
  let infoBytes: Uint8Array;
  try {
    infoBytes = encode(data);
  } catch (e) {
    if (e instanceof CodecError) throw claimError(`info claim cannot be sent as MessagePack (${e.message})`, tell);
    throw e;
  }
  if (infoBytes.byteLength > maxBytes) throw claimError(`info claim is ${infoBytes.byteLength} bytes of MessagePack, more than ${maxBytes}`, tell);
  return { info: data, infoBytes };
}
