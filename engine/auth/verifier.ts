/**
 * Token verification with jose: loads the one configured key source (reads files, builds the
 * remote key set), pins the algorithms to that key's type, checks the registered claims, builds
 * the Identity, and caches verified tokens. The only module of engine/auth that does I/O.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRemoteJWKSet, errors, jwtVerify, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose';
import { OptionError } from '../errors.js';
import { TokenCache, type TokenCacheStats } from './cache.js';
import { AuthError, type AuthReason } from './errors.js';
import { identityFromClaims, type Identity } from './identity.js';
import { MIN_SECRET_BYTES, type ResolvedAuthOptions } from './options.js';
import { MAX_TOKEN_BYTES, extractToken } from './transport.js';

/** Algorithms a JWKS may use; each key in it is bound to its own type by jose's selection. */
export const JWKS_ALGORITHMS = ['RS256', 'ES256', 'ES384', 'EdDSA', 'Ed25519'] as const;

export interface VerifierStats {
  verified: number;
  refused: Record<AuthReason, number>;
  cache: TokenCacheStats;
}

export interface TokenVerifier {
  /** The algorithms this verifier accepts (pinned by the key type). */
  readonly algorithms: readonly string[];
  /** Verifies a token (null = none given: `missing`); throws AuthError. */
  verify(token: string | null): Promise<Identity>;
  /** Extracts the token of an upgrade request and verifies it; `protocol` is the one to answer. */
  verifyUpgrade(protocolHeader: string, query: string): Promise<{ identity: Identity; protocol: string }>;
  stats(): VerifierStats;
}

/** Token codes of jose: the token itself is at fault (anything else from a JWKS is `unavailable`). */
const TOKEN_FAULTS = new Set([
  'ERR_JWT_CLAIM_VALIDATION_FAILED', 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', 'ERR_JOSE_ALG_NOT_ALLOWED',
  'ERR_JWS_INVALID', 'ERR_JWT_INVALID', 'ERR_JWKS_NO_MATCHING_KEY', 'ERR_JWKS_MULTIPLE_MATCHING_KEYS',
  'ERR_JOSE_NOT_SUPPORTED',
]);

export async function createVerifier(opts: ResolvedAuthOptions, now: () => number = Date.now): Promise<TokenVerifier> {
  const { key, algorithms } = await loadKey(opts);
  const viaJwks = opts.key.kind === 'jwks';
  const verifyOptions: JWTVerifyOptions = {
    algorithms: [...algorithms],
    clockTolerance: opts.clockToleranceSec,
    requiredClaims: ['exp', 'sub'],
  };
  if (opts.audience !== null) verifyOptions.audience = opts.audience;
  if (opts.issuer !== null) verifyOptions.issuer = opts.issuer;
  const cache = new TokenCache(opts.tokenCacheEntries, opts.tokenCacheBytes);
  const refused: Record<AuthReason, number> = { missing: 0, expired: 0, invalid: 0, unavailable: 0 };
  let verified = 0;

  const check = async (token: string | null): Promise<Identity> => {
    if (token === null) throw new AuthError('missing', 'no token given');
    if (token.length > MAX_TOKEN_BYTES) throw new AuthError('invalid', `token longer than ${MAX_TOKEN_BYTES} bytes`);
    const t = now();
    const nowSec = Math.floor(t / 1000);
    const hit = cache.get(token, nowSec);
    if (hit !== undefined) return hit;
    let payload: Record<string, unknown>;
    try {
      const o = { ...verifyOptions, currentDate: new Date(t) };
      // Both branches are the same call; TypeScript wants to see which overload of jwtVerify it is.
      payload = (typeof key === 'function' ? await jwtVerify(token, key, o) : await jwtVerify(token, key, o)).payload;
    } catch (e) {
      throw joseToAuthError(e, viaJwks);
    }
    const identity = identityFromClaims(payload, opts.maxInfoBytes);
    cache.set(token, identity, nowSec);
    return identity;
  };
  const counted = async (token: string | null): Promise<Identity> => {
    try {
      const id = await check(token);
      verified++;
      return id;
    } catch (e) {
      if (e instanceof AuthError) refused[e.reason]++;
      throw e;
    }
  };
  return {
    algorithms,
    verify: counted,
    async verifyUpgrade(protocolHeader, query) {
      let extracted;
      try {
        extracted = extractToken(protocolHeader, query);
      } catch (e) {
        if (e instanceof AuthError) refused[e.reason]++;
        throw e;
      }
      return { identity: await counted(extracted.token), protocol: extracted.protocol };
    },
    stats: () => ({ verified, refused: { ...refused }, cache: cache.stats() }),
  };
}

function joseToAuthError(e: unknown, viaJwks: boolean): AuthError {
  if (e instanceof AuthError) return e;
  if (e instanceof errors.JWTExpired) return new AuthError('expired', e.message);
  const code = e instanceof errors.JOSEError ? e.code : '';
  const msg = e instanceof Error ? e.message : String(e);
  if (TOKEN_FAULTS.has(code)) return new AuthError('invalid', `${code}: ${msg}`);
  // A JWKS that timed out, answered non-200 or garbage, or a refused connection.
  if (viaJwks) return new AuthError('unavailable', `${code || 'fetch'}: ${msg}`);
  return new AuthError('invalid', `${code || 'verify'}: ${msg}`);
}

type VerifyKey = KeyObject | Uint8Array | JWTVerifyGetKey;

async function loadKey(opts: ResolvedAuthOptions): Promise<{ key: VerifyKey; algorithms: readonly string[] }> {
  const src = opts.key;
  switch (src.kind) {
    case 'secret':
      return { key: src.secret, algorithms: ['HS256'] };
    case 'secretFile': {
      const secret = stripNewline(await readOption('jwtSecretFile', src.path));
      if (secret.length < MIN_SECRET_BYTES) throw new OptionError('jwtSecretFile', `must hold at least ${MIN_SECRET_BYTES} bytes, ${src.path} has ${secret.length}`);
      return { key: secret, algorithms: ['HS256'] };
    }
    case 'publicKeyFile': {
      const pem = (await readOption('jwtPublicKeyFile', src.path)).toString('utf8');
      if (!pem.includes('-----BEGIN PUBLIC KEY-----')) throw new OptionError('jwtPublicKeyFile', `must be a PEM public key (SPKI, "BEGIN PUBLIC KEY"): ${src.path}`);
      let key: KeyObject;
      try {
        key = createPublicKey(pem);
      } catch (e) {
        throw new OptionError('jwtPublicKeyFile', `is not a readable public key (${(e as Error).message}): ${src.path}`);
      }
      return { key, algorithms: [algorithmFor(key, src.path)] };
    }
    case 'jwks':
      return {
        key: createRemoteJWKSet(src.url, {
          timeoutDuration: opts.jwksTimeoutMs, cooldownDuration: opts.jwksCooldownMs, cacheMaxAge: opts.jwksCacheMaxAgeMs,
        }),
        algorithms: JWKS_ALGORITHMS,
      };
  }
}

/** The one algorithm a public key may verify: no token picks its own. */
function algorithmFor(key: KeyObject, path: string): string {
  const d = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa':
      if ((d.modulusLength ?? 0) < 2048) throw new OptionError('jwtPublicKeyFile', `RSA key must be at least 2048 bits: ${path}`);
      return 'RS256';
    case 'ec':
      if (d.namedCurve === 'prime256v1') return 'ES256';
      if (d.namedCurve === 'secp384r1') return 'ES384';
      throw new OptionError('jwtPublicKeyFile', `EC key must be on P-256 or P-384, got ${d.namedCurve}: ${path}`);
    case 'ed25519':
      return 'EdDSA';
    default:
      throw new OptionError('jwtPublicKeyFile', `key type ${key.asymmetricKeyType} is not supported (RSA, EC P-256/P-384, Ed25519): ${path}`);
  }
}

async function readOption(option: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new OptionError(option, `cannot be read: ${(e as Error).message}`);
  }
}

function stripNewline(b: Buffer): Uint8Array {
  let n = b.length;
  if (n > 0 && b[n - 1] === 0x0a) n--;
  if (n > 0 && b[n - 1] === 0x0d) n--;
  return new Uint8Array(b.subarray(0, n));
}
