/**
 * A protocol test client: a real WebSocket (`ws`) speaking MessagePack through `@msgpack/msgpack`
 * (deliberately not msgpackr: the wire contract says any MessagePack library is a client).
 *
 * Everything the server sends is checked against the transport rules of PROTOCOL.md as it
 * arrives: a binary message holding exactly one standard MessagePack map, no extension types, no
 * trailing bytes. A breach is recorded in `violations` (tests assert it stays empty) and the
 * offending message is kept in `frames` as `{ t: '__violation', detail }` so it is never silently
 * mistaken for a valid frame.
 */
import WebSocket from 'ws';
import { decode, encode, ExtData } from '@msgpack/msgpack';
import http from 'node:http';
import assert from 'node:assert/strict';

export type Frame = Record<string, unknown>;
export type Pred = (f: Frame) => boolean;

export interface ConnectOptions {
  /** `?user=` value (percent-encoded by the helper). Ignored when `path` is given. */
  user?: string;
  /** Full request path incl. query, e.g. `/ws?user=a%40b`. Default `/ws` (+ `?user=`). */
  path?: string;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

export interface Closed {
  code: number;
  reason: string;
}

interface Waiter {
  pred: Pred;
  what: string;
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

function describe(f: unknown): string {
  try {
    return JSON.stringify(f, (_k, v: unknown) => (v instanceof Uint8Array ? `<bin ${v.length}>` : typeof v === 'bigint' ? `${v}n` : v));
  } catch {
    return String(f);
  }
}

/** Path of the first extension value (or Date, msgpack's timestamp extension) inside `v`, if any. */
function findExt(v: unknown, path = '$', depth = 0): string | null {
  if (v instanceof ExtData) return `${path} (ext type ${v.type})`;
  if (v instanceof Date) return `${path} (timestamp ext)`;
  if (depth > 200 || v === null || typeof v !== 'object' || v instanceof Uint8Array) return null;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = findExt(v[i], `${path}[${i}]`, depth + 1);
      if (p) return p;
    }
    return null;
  }
  if (v instanceof Map) return `${path} (non-string map keys)`;
  for (const [k, x] of Object.entries(v)) {
    const p = findExt(x, `${path}.${k}`, depth + 1);
    if (p) return p;
  }
  return null;
}

export function describeFrames(frames: Frame[], max = 40): string {
  const tail = frames.slice(-max);
  const skipped = frames.length - tail.length;
  const short = (f: Frame): string => {
    const d = describe(f);
    return d.length > 300 ? `${d.slice(0, 300)}...(${d.length} chars)` : d;
  };
  return `${skipped > 0 ? `(${skipped} earlier frames omitted) ` : ''}${tail.map(short).join('\n  ')}`;
}

export class TestClient {
  readonly ws: WebSocket;
  hello: Frame = {};
  /** Every frame received, in order of arrival. */
  readonly frames: Frame[] = [];
  /** Transport-level breaches of the protocol by the server. */
  readonly violations: string[] = [];
  readonly closed: Promise<Closed>;
  closeInfo: Closed | null = null;
  label: string;

  private unconsumed: Frame[] = [];
  private waiters: Waiter[] = [];
  private pendingRefs = new Map<number, Waiter>();
  private nextRef = 1;

  private constructor(ws: WebSocket, label: string) {
    this.ws = ws;
    this.label = label;
    this.closed = new Promise<Closed>((resolve) => {
      // A transport error (a bad frame from the server, a reset) comes before its 1006 close: say which.
      let lastError: string | null = null;
      ws.on('error', (e: Error) => { lastError = e.message; });
      ws.on('close', (code: number, reason: Buffer) => {
        const info = { code, reason: reason.toString() };
        this.closeInfo = info;
        this.failAll(`connection closed (code ${code}${info.reason ? ` "${info.reason}"` : ''}${lastError === null ? '' : `, after error: ${lastError}`})`);
        resolve(info);
      });
    });
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => this.onMessage(data, isBinary));
  }

  /** Opens `ws://127.0.0.1:port/ws...` and resolves once the `hello` frame (which must come first) has arrived. */
  static connect(port: number, opts: ConnectOptions = {}): Promise<TestClient> {
    const path = opts.path ?? (opts.user !== undefined ? `/ws?user=${encodeURIComponent(opts.user)}` : '/ws');
    const timeoutMs = opts.timeoutMs ?? 3000;
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, {
      perMessageDeflate: false,
      headers: opts.headers,
      maxPayload: 256 * 1024 * 1024,
    });
    const client = new TestClient(ws, opts.user ?? path);
    return new Promise<TestClient>((resolve, reject) => {
      let done = false;
      const finish = (err: Error | null): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) {
          ws.terminate();
          reject(err);
        } else resolve(client);
      };
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for hello on ${path}`)), timeoutMs);
      ws.on('error', (e: Error) => finish(new Error(`connect ${path} failed: ${e.message}`)));
      ws.on('unexpected-response', (req: http.ClientRequest, res: http.IncomingMessage) => {
        res.resume();
        req.destroy();
        finish(new Error(`connect ${path}: upgrade refused with HTTP ${res.statusCode}`));
      });
      void client.closed.then((c) => finish(new Error(`connect ${path}: closed with ${c.code} before hello`)));
      const first = (f: Frame): void => {
        if (f.t === 'hello') {
          client.hello = f;
          finish(null);
        } else finish(new Error(`connect ${path}: first frame was not hello but ${describe(f)}`));
      };
      client.firstFrameHook = first;
    });
  }

  private firstFrameHook: ((f: Frame) => void) | null = null;

  private violation(detail: string): Frame {
    this.violations.push(detail);
    return { t: '__violation', detail };
  }

  private parse(data: WebSocket.RawData, isBinary: boolean): Frame {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (!isBinary) return this.violation(`server sent a text message: ${bytes.toString('utf8').slice(0, 200)}`);
    let v: unknown;
    try {
      // A plain Uint8Array view, so decoded `bin` values are Uint8Array (not Buffer) as in any client.
      v = decode(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    } catch (e) {
      return this.violation(`undecodable server message (${(e as Error).message}): ${bytes.toString('hex').slice(0, 200)}`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array || v instanceof Map) {
      return this.violation(`server message is not a map: ${describe(v)}`);
    }
    const ext = findExt(v);
    if (ext) return this.violation(`server message uses an extension type at ${ext}: ${describe(v)}`);
    return v as Frame;
  }

  private onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    const frame = this.parse(data, isBinary);
    this.frames.push(frame);
    if (this.firstFrameHook) {
      const h = this.firstFrameHook;
      this.firstFrameHook = null;
      h(frame);
      if (frame.t === 'hello') return;
    }
    const ref = frame.ref;
    if (typeof ref === 'number' && this.pendingRefs.has(ref)) {
      const w = this.pendingRefs.get(ref)!;
      this.pendingRefs.delete(ref);
      clearTimeout(w.timer);
      w.resolve(frame);
      return;
    }
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i]!;
      if (w.pred(frame)) {
        this.waiters.splice(i, 1);
        clearTimeout(w.timer);
        w.resolve(frame);
        return;
      }
    }
    this.unconsumed.push(frame);
  }

  private failAll(why: string): void {
    const ws = [...this.waiters, ...this.pendingRefs.values()];
    this.waiters = [];
    this.pendingRefs.clear();
    for (const w of ws) {
      clearTimeout(w.timer);
      w.reject(new Error(`[${this.label}] ${why} while waiting for ${w.what}; last frames:\n  ${describeFrames(this.frames, 10)}`));
    }
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Encodes `frame` with @msgpack/msgpack and sends it as one binary message. */
  send(frame: unknown): void {
    this.ws.send(encode(frame), { binary: true });
  }

  /** Sends bytes as a binary message, or a string as a text message. */
  sendRaw(data: Uint8Array | string): void {
    if (typeof data === 'string') this.ws.send(data, { binary: false });
    else this.ws.send(data, { binary: true });
  }

  /** Allocates the ref the next `request` will use (auto-incremented). */
  takeRef(): number {
    return this.nextRef++;
  }

  /**
   * Sends `frame` with a fresh `ref` and resolves with the reply that carries that ref (an `err`
   * included). Rejects on timeout or if the connection closes first.
   */
  request(frame: Frame, timeoutMs = 3000): Promise<Frame> {
    const ref = this.takeRef();
    const what = `reply to ref ${ref} ${describe(frame)}`;
    const p = new Promise<Frame>((resolve, reject) => {
      if (!this.isOpen) {
        reject(new Error(`[${this.label}] connection not open, cannot send ${what}`));
        return;
      }
      const timer = setTimeout(() => {
        this.pendingRefs.delete(ref);
        reject(new Error(`[${this.label}] timed out after ${timeoutMs} ms waiting for ${what}; last frames:\n  ${describeFrames(this.frames, 10)}`));
      }, timeoutMs);
      this.pendingRefs.set(ref, { pred: () => false, what, resolve, reject, timer });
    });
    if (this.isOpen) this.send({ ...frame, ref });
    return p;
  }

  /**
   * Resolves with the first not-yet-consumed received frame matching `pred` (frames received
   * before the call are searched first, so nothing is missed) and consumes it.
   */
  next(pred: Pred, timeoutMs = 3000, what = pred.toString()): Promise<Frame> {
    const i = this.unconsumed.findIndex(pred);
    if (i >= 0) {
      const [f] = this.unconsumed.splice(i, 1);
      return Promise.resolve(f!);
    }
    if (this.closeInfo) {
      return Promise.reject(new Error(`[${this.label}] connection closed (code ${this.closeInfo.code}) while waiting for ${what}; last frames:\n  ${describeFrames(this.frames, 10)}`));
    }
    return new Promise<Frame>((resolve, reject) => {
      const w: Waiter = {
        pred,
        what,
        resolve,
        reject,
        timer: setTimeout(() => {
          const k = this.waiters.indexOf(w);
          if (k >= 0) this.waiters.splice(k, 1);
          reject(new Error(`[${this.label}] timed out after ${timeoutMs} ms waiting for ${what}; last frames:\n  ${describeFrames(this.frames, 10)}`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** Like `next`, for a frame of type `t` (and room, when given). */
  nextOf(t: string, room?: string, timeoutMs = 3000): Promise<Frame> {
    return this.next((f) => f.t === t && (room === undefined || f.room === room), timeoutMs, `a '${t}' frame${room !== undefined ? ` for room ${room}` : ''}`);
  }

  /** Received frames of type `t` (and room, when given), consumed or not. */
  framesOf(t: string, room?: string): Frame[] {
    return this.frames.filter((f) => f.t === t && (room === undefined || f.room === room));
  }

  /** Waits for the connection to close, with a bound. */
  async waitClosed(timeoutMs = 3000): Promise<Closed> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<never>((_r, reject) => {
      timer = setTimeout(() => reject(new Error(`[${this.label}] timed out after ${timeoutMs} ms waiting for the connection to close; last frames:\n  ${describeFrames(this.frames, 10)}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.closed, t]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes with 1000 and waits for the close to finish (terminates after a bound). */
  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    else this.ws.terminate();
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<void>((r) => {
      timer = setTimeout(() => {
        this.ws.terminate();
        r();
      }, 2000);
    });
    await Promise.race([this.closed, t]);
    clearTimeout(timer);
    await this.closed;
  }

  /** Drops the TCP connection without a close frame. */
  terminate(): void {
    this.ws.terminate();
  }
}

export interface UpgradeResult {
  /** HTTP status of the upgrade answer (101 when it was accepted), or 0 when no HTTP answer came. */
  status: number;
  /** Socket error code (e.g. ECONNREFUSED) when the connection failed. */
  error?: string;
}

/** Attempts a WebSocket upgrade and reports how it was answered; an accepted socket is dropped at once. */
export function tryUpgrade(port: number, path: string, headers?: Record<string, string>, timeoutMs = 3000): Promise<UpgradeResult> {
  return new Promise<UpgradeResult>((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { perMessageDeflate: false, headers });
    let done = false;
    const finish = (r: UpgradeResult | Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for the upgrade answer on ${path}`)), timeoutMs);
    ws.on('upgrade', () => finish({ status: 101 }));
    ws.on('open', () => finish({ status: 101 }));
    ws.on('unexpected-response', (req: http.ClientRequest, res: http.IncomingMessage) => {
      res.resume();
      req.destroy();
      finish({ status: res.statusCode ?? 0 });
    });
    ws.on('error', (e: NodeJS.ErrnoException) => finish({ status: 0, error: e.code ?? e.message }));
  });
}

export interface HttpResult {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** GET http://127.0.0.1:port/path on a fresh socket that is closed afterwards. Rejects on socket errors (err.code kept). */
export function httpGet(port: number, path: string, timeoutMs = 3000): Promise<HttpResult> {
  return new Promise<HttpResult>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        res.socket?.destroy();
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers });
      });
      res.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`timed out after ${timeoutMs} ms waiting for GET ${path}`));
    }, timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Named as the brief asks: `http(port, path)` -> { status, body }. */
export { httpGet as http };

/** Polls `cond` every 10 ms until it is true; rejects with `what` after `timeoutMs`. For state that has no frame to wait on. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * `joined.members`: "distinct users present". PROTOCOL.md does not say whether that is the list of
 * user ids (as in `who.users`) or their number, so both readings are checked strictly.
 */
export function assertMembers(joined: Frame, users: string[], label = 'joined.members'): void {
  const m = joined.members;
  if (Array.isArray(m)) {
    assert.deepEqual([...(m as string[])].sort(), [...users].sort(), `${label} (list of distinct users)`);
  } else {
    assert.equal(typeof m, 'number', `${label} is a list of users or their count: ${describe(joined)}`);
    assert.equal(m, new Set(users).size, `${label} (count of distinct users): ${describe(joined)}`);
  }
}

/** Encoded size of a frame in bytes. */
export function encodedSize(frame: unknown): number {
  return encode(frame).length;
}

export { encode, decode, ExtData };
