/**
 * The webhook signature (docs/API.md, "Verifying a webhook"): `X-Shardchat-Signature:
 * t=<unix seconds>,v1=<hex of HMAC-SHA256(secret, t + "." + body)>`. Pure: no I/O. Receivers
 * use `verifySignature`; it compares in constant time and refuses stale timestamps, which is
 * what stops a captured request from being replayed later.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'X-Shardchat-Signature';
/** Default tolerance of `verifySignature`: 5 minutes either side of the receiver's clock. */
export const DEFAULT_TOLERANCE_SEC = 300;

function mac(secret: string | Uint8Array, tSec: number, body: string | Uint8Array): Buffer {
  return createHmac('sha256', secret).update(`${tSec}.`).update(body).digest();
}

/** The header value for `body` signed at `tSec`. */
export function signBody(secret: string | Uint8Array, body: string | Uint8Array, tSec: number): string {
  return `t=${tSec},v1=${mac(secret, tSec, body).toString('hex')}`;
}

export type SignatureCheck =
  | { ok: true; t: number }
  | { ok: false; reason: 'missing' | 'malformed' | 'stale' | 'mismatch' };

/**
 * Checks a webhook request: `header` is the X-Shardchat-Signature value, `body` the raw bytes
 * received (not a re-serialised parse of them). Several `v1=` entries are allowed (any may
 * match), so a sender may sign with an old and a new secret while rotating.
 */
export function verifySignature(
  secret: string | Uint8Array, header: string | null | undefined, body: string | Uint8Array,
  toleranceSec = DEFAULT_TOLERANCE_SEC, nowSec = Math.floor(Date.now() / 1000),
): SignatureCheck {
  if (header === null || header === undefined || header === '') return { ok: false, reason: 'missing' };
  let t = -1;
  const sigs: Buffer[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (eq < 0) return { ok: false, reason: 'malformed' };
    if (k === 't') {
      if (t !== -1 || !/^\d{1,12}$/.test(v)) return { ok: false, reason: 'malformed' };
      t = Number(v);
    } else if (k === 'v1') {
      if (!/^[0-9a-fA-F]{64}$/.test(v)) return { ok: false, reason: 'malformed' };
      sigs.push(Buffer.from(v, 'hex'));
    }
    // Other schemes (v0, v2...) are ignored, so a sender can add one without breaking receivers.
  }
  if (t === -1 || sigs.length === 0) return { ok: false, reason: 'malformed' };
  if (Math.abs(nowSec - t) > toleranceSec) return { ok: false, reason: 'stale' };
  const want = mac(secret, t, body);
  let match = false;
  // Every entry is compared (no early exit), each in constant time.
  for (const s of sigs) match = timingSafeEqual(s, want) || match;
  return match ? { ok: true, t } : { ok: false, reason: 'mismatch' };
}
