/** Token auth and room permissions (docs/AUTH.md): the surface the engine wires in. */
export { AuthError, refusal, type AuthReason } from './errors.js';
export { identityFromClaims, identityFromHook, DEFAULT_MAX_INFO_BYTES, type HookIdentity, type Identity } from './identity.js';
export { ACTIONS, ACTION_BIT, MAX_ROOM_PATTERNS, RoomsClaimError, allows, compileRooms, roomMask, type RoomAction, type RoomMatcher } from './permissions.js';
export { TokenCache, type TokenCacheStats } from './cache.js';
export { BEARER_PREFIX, MAX_TOKEN_BYTES, SUBPROTOCOL, bearerProtocols, extractToken, tokenQuery, type ExtractedToken } from './transport.js';
export { AUTH_OPTION_SPECS, MIN_SECRET_BYTES, checkOptionValue, resolveAuthOptions, type AuthOptionSpec, type AuthOptions, type KeySource, type ResolvedAuthOptions } from './options.js';
export { JWKS_ALGORITHMS, createVerifier, type TokenVerifier, type VerifierStats } from './verifier.js';
