/**
 * A raw-TCP WebSocket client for tests that need what a well-behaved library will not do: stop
 * reading, never answer pings, write half a frame and drop the socket, reset the connection,
 * give up in the middle of the HTTP upgrade. It speaks just enough RFC 6455: the upgrade
 * request, masked client frames, and a parser for the server's (unmasked) frames. Binary
 * payloads are decoded with @msgpack/msgpack (not the engine's code) and checked to be one map.
 */
import net from 'node:net';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { decode, encode } from '@msgpack/msgpack';

export type Frame = Record<string, unknown>;

export const OP_CONT = 0x0;
export const OP_TEXT = 0x1;
export const OP_BINARY = 0x2;
export const OP_CLOSE = 0x8;
export const OP_PING = 0x9;
export const OP_PONG = 0xa;

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const ACCEPT = createHash('sha1').update(KEY + WS_GUID).digest('base64');

let maskCounter = 0x9e3779b9;
/** A cheap, deterministic mask source (masks need not be secret in tests). */
function nextMask(out: Buffer, at: number): void {
  maskCounter = (Math.imul(maskCounter ^ (maskCounter >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
  out.writeUInt32BE(maskCounter, at);
}

/** One client WebSocket frame (masked unless told otherwise). */
export function wsFrame(opcode: number, payload: Uint8Array, opts: { fin?: boolean; mask?: boolean } = {}): Buffer {
  const fin = opts.fin ?? true;
  const mask = opts.mask ?? true;
  const n = payload.byteLength;
  const lenBytes = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const head = 2 + lenBytes + (mask ? 4 : 0);
  const out = Buffer.allocUnsafe(head + n);
  out[0] = (fin ? 0x80 : 0) | opcode;
  const m = mask ? 0x80 : 0;
  if (lenBytes === 0) out[1] = m | n;
  else if (lenBytes === 2) { out[1] = m | 126; out.writeUInt16BE(n, 2); }
  else { out[1] = m | 127; out.writeUInt32BE(Math.floor(n / 2 ** 32), 2); out.writeUInt32BE(n >>> 0, 6); }
  if (!mask) {
    out.set(payload, head);
    return out;
  }
  const mk = 2 + lenBytes;
  nextMask(out, mk);
  for (let i = 0; i < n; i++) out[head + i] = payload[i]! ^ out[mk + (i & 3)]!;
  return out;
}

/** A close frame payload: code (u16) and reason. */
export function closePayload(code: number, reason = ''): Buffer {
  const r = Buffer.from(reason, 'utf8');
  const b = Buffer.allocUnsafe(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

/** The HTTP upgrade request for `path`. */
export function upgradeRequest(port: number, path: string, extraHeaders = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`;
}

export interface ServerFrame {
  opcode: number;
  payload: Buffer;
}

/** Incremental parser of server frames; flags protocol breaches (masked server frames, bad control frames). */
export class FrameParser {
  private buf: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private fragOpcode = -1;
  readonly errors: string[] = [];

  push(chunk: Buffer, out: (f: ServerFrame) => void): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      const b = this.buf;
      if (b.length < 2) return;
      const fin = (b[0]! & 0x80) !== 0;
      const opcode = b[0]! & 0x0f;
      const masked = (b[1]! & 0x80) !== 0;
      let len = b[1]! & 0x7f;
      let p = 2;
      if (len === 126) { if (b.length < 4) return; len = b.readUInt16BE(2); p = 4; }
      else if (len === 127) { if (b.length < 10) return; len = b.readUInt32BE(2) * 2 ** 32 + b.readUInt32BE(6); p = 10; }
      if (masked) { this.errors.push('server frame is masked'); p += 4; }
      if (b.length < p + len) return;
      const payload = b.subarray(p, p + len);
      this.buf = b.subarray(p + len);
      if (opcode >= 0x8) {
        if (!fin || len > 125) this.errors.push(`bad control frame opcode ${opcode} fin ${fin} len ${len}`);
        out({ opcode, payload });
        continue;
      }
      if (opcode === OP_CONT) {
        if (this.fragOpcode < 0) { this.errors.push('continuation without a start'); continue; }
        this.fragments.push(payload);
        if (fin) {
          out({ opcode: this.fragOpcode, payload: Buffer.concat(this.fragments) });
          this.fragments = [];
          this.fragOpcode = -1;
        }
        continue;
      }
      if (this.fragOpcode >= 0) this.errors.push('new data frame inside a fragmented message');
      if (fin) out({ opcode, payload });
      else { this.fragOpcode = opcode; this.fragments = [payload]; }
    }
  }
}

export interface UpgradeAnswer {
  socket: net.Socket;
  /** HTTP status of the answer (101 = upgraded). */
  status: number;
  head: string;
  /** Bytes after the HTTP head (the start of the WebSocket stream). */
  rest: Buffer;
}

/** Opens a TCP connection, sends the upgrade request, resolves with the HTTP answer (the socket stays open). */
export function rawUpgrade(port: number, path: string, timeoutMs = 5000): Promise<UpgradeAnswer> {
  return new Promise<UpgradeAnswer>((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    let acc: Buffer = Buffer.alloc(0);
    let done = false;
    const timer = setTimeout(() => finish(new Error(`raw upgrade ${path}: no HTTP answer within ${timeoutMs} ms`)), timeoutMs);
    const finish = (r: UpgradeAnswer | Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onErr);
      socket.off('close', onClose);
      if (r instanceof Error) { socket.destroy(); reject(r); } else resolve(r);
    };
    const onData = (c: Buffer): void => {
      acc = acc.length === 0 ? c : Buffer.concat([acc, c]);
      const i = acc.indexOf('\r\n\r\n');
      if (i < 0) return;
      const head = acc.subarray(0, i).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
      if (!m) { finish(new Error(`raw upgrade ${path}: not an HTTP answer: ${JSON.stringify(head.slice(0, 80))}`)); return; }
      const status = Number(m[1]);
      if (status === 101 && !head.toLowerCase().includes(`sec-websocket-accept: ${ACCEPT.toLowerCase()}`)) {
        finish(new Error(`raw upgrade ${path}: 101 without the right Sec-WebSocket-Accept: ${head}`));
        return;
      }
      socket.pause();
      finish({ socket, status, head, rest: acc.subarray(i + 4) });
    };
    const onErr = (e: Error): void => finish(new Error(`raw upgrade ${path}: ${e.message}`));
    const onClose = (): void => finish(new Error(`raw upgrade ${path}: socket closed before an HTTP answer (${acc.length} bytes: ${JSON.stringify(acc.toString('latin1').slice(0, 80))})`));
    socket.on('data', onData);
    socket.on('error', onErr);
    socket.on('close', onClose);
    socket.write(upgradeRequest(port, path));
  });
}

export interface RawOptions {
  user?: string;
  path?: string;
  /** Answer pings with pongs (default true). */
  answerPings?: boolean;
  /** Keep decoded frames until consumed by next() (default true). */
  keep?: boolean;
  timeoutMs?: number;
}

interface Waiter {
  pred: (f: Frame) => boolean;
  what: string;
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** A WebSocket connection over a raw socket. `connect` resolves after the 101 (not after hello). */
export class RawClient {
  readonly socket: net.Socket;
  readonly parser = new FrameParser();
  /** Transport-level breaches by the server (bad frames, undecodable or non-map payloads, text). */
  readonly violations: string[] = [];
  /** The server's close frame, once one arrived. */
  closeFrame: { code: number; reason: string } | null = null;
  /** Resolves when the socket is fully closed. */
  readonly ended: Promise<void>;
  socketClosed = false;
  pings = 0;
  framesIn = 0;
  /** Called for every decoded frame (before waiters). */
  onFrame: ((f: Frame) => void) | null = null;
  private readonly answerPings: boolean;
  private readonly keep: boolean;
  private unconsumed: Frame[] = [];
  private waiters: Waiter[] = [];
  private closeWaiters: (() => void)[] = [];
  private sentClose = false;

  private constructor(up: UpgradeAnswer, opts: RawOptions) {
    this.socket = up.socket;
    this.answerPings = opts.answerPings ?? true;
    this.keep = opts.keep ?? true;
    this.ended = new Promise<void>((resolve) => {
      this.socket.on('close', () => {
        this.socketClosed = true;
        this.failAll('socket closed');
        for (const w of this.closeWaiters.splice(0)) w();
        resolve();
      });
    });
    this.socket.on('error', () => { /* a reset is an expected end here; 'close' follows */ });
    this.socket.on('data', (c: Buffer) => this.parser.push(c, (f) => this.onServerFrame(f)));
    if (up.rest.length > 0) this.parser.push(up.rest, (f) => this.onServerFrame(f));
    this.socket.resume();
  }

  static async connect(port: number, opts: RawOptions = {}): Promise<RawClient> {
    const path = opts.path ?? (opts.user !== undefined ? `/ws?user=${encodeURIComponent(opts.user)}` : '/ws');
    const up = await rawUpgrade(port, path, opts.timeoutMs ?? 5000);
    if (up.status !== 101) {
      up.socket.destroy();
      throw Object.assign(new Error(`raw upgrade ${path}: HTTP ${up.status}`), { status: up.status });
    }
    return new RawClient(up, opts);
  }

  private onServerFrame(f: ServerFrame): void {
    this.framesIn++;
    switch (f.opcode) {
      case OP_PING:
        this.pings++;
        if (this.answerPings && !this.socket.destroyed) this.socket.write(wsFrame(OP_PONG, f.payload));
        return;
      case OP_PONG:
        return;
      case OP_CLOSE: {
        const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
        this.closeFrame = { code, reason: f.payload.subarray(2).toString('utf8') };
        if (!this.sentClose && !this.socket.destroyed) {
          this.sentClose = true;
          this.socket.write(wsFrame(OP_CLOSE, f.payload.subarray(0, 2)));
        }
        this.socket.end();
        this.failAll(`close frame ${code}`);
        return;
      }
      case OP_TEXT:
        this.violations.push(`server sent a text message: ${f.payload.toString('utf8').slice(0, 100)}`);
        return;
      case OP_BINARY: {
        let v: unknown;
        try {
          v = decode(f.payload);
        } catch (e) {
          this.violations.push(`undecodable server message: ${(e as Error).message}`);
          return;
        }
        if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) {
          this.violations.push(`server message is not a map: ${String(v)}`);
          return;
        }
        const fr = v as Frame;
        this.onFrame?.(fr);
        for (let i = 0; i < this.waiters.length; i++) {
          const w = this.waiters[i]!;
          if (w.pred(fr)) {
            this.waiters.splice(i, 1);
            clearTimeout(w.timer);
            w.resolve(fr);
            return;
          }
        }
        if (this.keep) this.unconsumed.push(fr);
        return;
      }
      default:
        this.violations.push(`server frame with opcode ${f.opcode}`);
    }
  }

  private failAll(why: string): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error(`${why} while waiting for ${w.what}`));
    }
  }

  /** The first unconsumed frame matching pred (received before or after the call). */
  next(pred: (f: Frame) => boolean, timeoutMs = 5000, what = 'a frame'): Promise<Frame> {
    const i = this.unconsumed.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.unconsumed.splice(i, 1)[0]!);
    if (this.socketClosed || this.closeFrame) return Promise.reject(new Error(`connection closed while waiting for ${what}`));
    return new Promise<Frame>((resolve, reject) => {
      const w: Waiter = {
        pred, what, resolve, reject,
        timer: setTimeout(() => {
          const k = this.waiters.indexOf(w);
          if (k >= 0) this.waiters.splice(k, 1);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** One MessagePack-encoded binary message. */
  send(frame: unknown): void {
    this.socket.write(wsFrame(OP_BINARY, encode(frame)));
  }

  /** Bytes as one binary (or other opcode) message. */
  sendPayload(payload: Uint8Array, opcode = OP_BINARY): void {
    this.socket.write(wsFrame(opcode, payload));
  }

  writeRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Clean close: sends a close frame, waits (bounded) for the server's close and the socket end. */
  async close(code = 1000, timeoutMs = 3000): Promise<void> {
    if (this.socketClosed) return;
    if (!this.sentClose && !this.socket.destroyed) {
      this.sentClose = true;
      this.socket.write(wsFrame(OP_CLOSE, closePayload(code)));
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.ended,
      new Promise<void>((r) => { timer = setTimeout(() => { this.socket.destroy(); r(); }, timeoutMs); }),
    ]);
    clearTimeout(timer);
    await this.ended;
  }

  /** Drops the socket (FIN, or RST when unread data is pending). */
  destroy(): void {
    this.socket.destroy();
  }

  /** Drops the socket with a TCP RST. */
  reset(): void {
    if (typeof this.socket.resetAndDestroy === 'function') this.socket.resetAndDestroy();
    else this.socket.destroy();
  }

  /** Resolves when the socket closed, or rejects after timeoutMs. */
  async waitEnded(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.ended,
        new Promise<never>((_r, reject) => { timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs); }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Number of threads of this process (Linux /proc/self/task), or -1 where unavailable. */
export function threadCount(): number {
  try {
    return readdirSync('/proc/self/task').length;
  } catch {
    return -1;
  }
}

/** Number of open file descriptors of this process (Linux /proc/self/fd), or -1 where unavailable. */
export function fdCount(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return -1;
  }
}
