/**
 * Token-auth options: names, CLI flags, environment variables, defaults, and their validation,
 * at once and naming the option. Pure (no file or network I/O: verifier.ts reads the files and
 * keys). engine/options.ts calls `resolveAuthOptions` and appends AUTH_OPTION_SPECS to its own
 * list (docs/AUTH.md, "Wiring").
 */
import { OptionError } from '../errors.js';
import { DEFAULT_MAX_INFO_BYTES } from './identity.js';

export interface AuthOptions {
  jwtSecret?: string;
  jwtSecretFile?: string;
  jwtPublicKeyFile?: string;
  jwksUrl?: string;
  jwtAudience?: string;
  jwtIssuer?: string;
  jwtClockToleranceSec?: number;
  jwksTimeoutMs?: number;
  jwksCooldownMs?: number;
  jwksCacheMaxAgeMs?: number;
  tokenCacheEntries?: number;
  tokenCacheBytes?: number;
  maxInfoBytes?: number;
}

export type KeySource =
  | { kind: 'secret'; secret: Uint8Array }
  | { kind: 'secretFile'; path: string }
  | { kind: 'publicKeyFile'; path: string }
  | { kind: 'jwks'; url: URL };

export interface ResolvedAuthOptions {
  key: KeySource;
  audience: string | null;
  issuer: string | null;
  clockToleranceSec: number;
  jwksTimeoutMs: number;
  jwksCooldownMs: number;
  jwksCacheMaxAgeMs: number;
  tokenCacheEntries: number;
  tokenCacheBytes: number;
  maxInfoBytes: number;
}

export interface AuthOptionSpec {
  key: keyof AuthOptions;
  flag: string;
  env: string;
  kind: 'string' | 'int';
  min?: number;
  max?: number;
  help: string;
  /** null: unset unless given. */
  def: number | null;
}

export const AUTH_OPTION_SPECS: readonly AuthOptionSpec[] = [
  { key: 'jwtSecret', flag: 'jwt-secret', env: 'SHARDCHAT_JWT_SECRET', kind: 'string', help: 'HS256 secret (its UTF-8 bytes as given, at least 32); turns token auth on', def: null },
  { key: 'jwtSecretFile', flag: 'jwt-secret-file', env: 'SHARDCHAT_JWT_SECRET_FILE', kind: 'string', help: 'file holding the HS256 secret bytes (one trailing newline ignored)', def: null },
  { key: 'jwtPublicKeyFile', flag: 'jwt-public-key-file', env: 'SHARDCHAT_JWT_PUBLIC_KEY_FILE', kind: 'string', help: 'PEM (SPKI) public key: RSA -> RS256, P-256 -> ES256, Ed25519 -> EdDSA', def: null },
  { key: 'jwksUrl', flag: 'jwks-url', env: 'SHARDCHAT_JWKS_URL', kind: 'string', help: 'JWKS URL (https, or http on loopback) for RS256/ES256/EdDSA keys', def: null },
  { key: 'jwtAudience', flag: 'jwt-audience', env: 'SHARDCHAT_JWT_AUDIENCE', kind: 'string', help: 'required aud claim', def: null },
  { key: 'jwtIssuer', flag: 'jwt-issuer', env: 'SHARDCHAT_JWT_ISSUER', kind: 'string', help: 'required iss claim', def: null },
  { key: 'jwtClockToleranceSec', flag: 'jwt-clock-tolerance-sec', env: 'SHARDCHAT_JWT_CLOCK_TOLERANCE_SEC', kind: 'int', min: 0, max: 300, help: 'clock skew allowed on exp/nbf', def: 5 },
  { key: 'jwksTimeoutMs', flag: 'jwks-timeout-ms', env: 'SHARDCHAT_JWKS_TIMEOUT_MS', kind: 'int', min: 100, max: 60_000, help: 'JWKS fetch timeout (then 503 unavailable)', def: 5000 },
  { key: 'jwksCooldownMs', flag: 'jwks-cooldown-ms', env: 'SHARDCHAT_JWKS_COOLDOWN_MS', kind: 'int', min: 0, max: 3_600_000, help: 'least time between two JWKS fetches (an unknown kid refetches after it)', def: 30_000 },
  { key: 'jwksCacheMaxAgeMs', flag: 'jwks-cache-max-age-ms', env: 'SHARDCHAT_JWKS_CACHE_MAX_AGE_MS', kind: 'int', min: 1000, max: 86_400_000, help: 'how long fetched JWKS keys are used before a refetch', def: 600_000 },
  { key: 'tokenCacheEntries', flag: 'token-cache-entries', env: 'SHARDCHAT_TOKEN_CACHE_ENTRIES', kind: 'int', min: 0, max: 10_000_000, help: 'verified tokens cached (0 = no cache)', def: 10_000 },
  { key: 'tokenCacheBytes', flag: 'token-cache-bytes', env: 'SHARDCHAT_TOKEN_CACHE_BYTES', kind: 'int', min: 0, max: 1 << 30, help: 'bytes of token strings cached', def: 8 << 20 },
  { key: 'maxInfoBytes', flag: 'max-info-bytes', env: 'SHARDCHAT_MAX_INFO_BYTES', kind: 'int', min: 0, max: 65_536, help: 'largest info claim, in bytes of JSON (bigger: token invalid)', def: DEFAULT_MAX_INFO_BYTES },
];

/** Shortest HS256 secret: the hash's output size (RFC 7518 section 3.2). */
export const MIN_SECRET_BYTES = 32;

const KEY_OPTIONS = ['jwtSecret', 'jwtSecretFile', 'jwtPublicKeyFile', 'jwksUrl'] as const;
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** Validates the auth options: null when token auth is off (no key option given). */
export function resolveAuthOptions(opts: AuthOptions): ResolvedAuthOptions | null {
  const given = KEY_OPTIONS.filter((k) => opts[k] !== undefined);
  for (const s of AUTH_OPTION_SPECS) checkType(s, opts[s.key]);
  if (given.length === 0) {
    for (const k of ['jwtAudience', 'jwtIssuer'] as const) {
      if (opts[k] !== undefined) throw new OptionError(k, `needs a key: set one of ${KEY_OPTIONS.join(', ')}`);
    }
    return null;
  }
  if (given.length > 1) throw new OptionError(given[1]!, `cannot be combined with ${given[0]}: give exactly one key source`);
  const int = (k: keyof AuthOptions): number => (opts[k] as number | undefined) ?? AUTH_OPTION_SPECS.find((s) => s.key === k)!.def!;
  return {
    key: keySource(opts),
    audience: opts.jwtAudience ?? null,
    issuer: opts.jwtIssuer ?? null,
    clockToleranceSec: int('jwtClockToleranceSec'),
    jwksTimeoutMs: int('jwksTimeoutMs'),
    jwksCooldownMs: int('jwksCooldownMs'),
    jwksCacheMaxAgeMs: int('jwksCacheMaxAgeMs'),
    tokenCacheEntries: int('tokenCacheEntries'),
    tokenCacheBytes: int('tokenCacheBytes'),
    maxInfoBytes: int('maxInfoBytes'),
  };
}

function keySource(opts: AuthOptions): KeySource {
  if (opts.jwtSecret !== undefined) {
    const secret = new TextEncoder().encode(opts.jwtSecret);
    if (secret.length < MIN_SECRET_BYTES) throw new OptionError('jwtSecret', `must be at least ${MIN_SECRET_BYTES} bytes, got ${secret.length}`);
    return { kind: 'secret', secret };
  }
  if (opts.jwtSecretFile !== undefined) return { kind: 'secretFile', path: opts.jwtSecretFile };
  if (opts.jwtPublicKeyFile !== undefined) return { kind: 'publicKeyFile', path: opts.jwtPublicKeyFile };
  let url: URL;
  try {
    url = new URL(opts.jwksUrl!);
  } catch {
    throw new OptionError('jwksUrl', `must be a URL, got ${JSON.stringify(opts.jwksUrl)}`);
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK.has(url.hostname))) {
    throw new OptionError('jwksUrl', `must be https (or http on localhost/127.0.0.1/[::1]), got ${JSON.stringify(opts.jwksUrl)}`);
  }
  return { kind: 'jwks', url };
}

function checkType(s: AuthOptionSpec, v: unknown): void {
  if (v !== undefined) checkOptionValue(s.key, s, v);
}

/**
 * Checks one value against a string/int spec, throwing as engine/options.ts does (OptionError,
 * or a RangeError with the same code and option). Shared with the webhook options; when the
 * specs join OPTION_SPECS, engine/options.ts's own check() can take this over.
 */
export function checkOptionValue(option: string, s: { kind: 'string' | 'int'; min?: number; max?: number }, v: unknown): void {
  if (s.kind === 'string') {
    if (typeof v !== 'string' || v.length === 0) throw new OptionError(option, `must be a non-empty string, got ${JSON.stringify(v)}`);
    return;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new OptionError(option, `must be an integer, got ${JSON.stringify(v)}`);
  if (v < s.min! || v > s.max!) {
    const e = new RangeError(`options.${option} must be between ${s.min} and ${s.max}, got ${v}`);
    throw Object.assign(e, { code: 'SHARDCHAT_INVALID_OPTION', option });
  }
}
