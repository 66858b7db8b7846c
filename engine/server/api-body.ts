/**
 * Reading a bounded request body on uWS (the HTTP API's JSON): `onData` chunks are views that
 * uWS reuses after the callback, so each is copied; past `maxBytes` the request is answered 413
 * at once and the rest is ignored. A client that goes away (onAborted) resolves nothing.
 */
import type { HttpResponse } from './uws.js';

export type BodyResult = { ok: true; body: Buffer } | { ok: false; tooLarge: true };

/**
 * Collects the body of `res` (call from the route handler, synchronously, after onAborted is
 * set). `onDone` runs once with the body, or with tooLarge when it passed maxBytes.
 */
export function readBody(res: HttpResponse, maxBytes: number, declaredLength: number, onDone: (r: BodyResult) => void): void {
  if (declaredLength > maxBytes) { onDone({ ok: false, tooLarge: true }); return; }
  const chunks: Buffer[] = [];
  let size = 0;
  let done = false;
  res.onData((chunk, isLast) => {
    if (done) return;
    size += chunk.byteLength;
    if (size > maxBytes) { done = true; onDone({ ok: false, tooLarge: true }); return; }
    chunks.push(Buffer.from(chunk.slice(0)));
    if (isLast) { done = true; onDone({ ok: true, body: Buffer.concat(chunks, size) }); }
  });
}
