/**
 * The two kinds of connection the hostile mix opens: a minimal protocol client over `ws` (frames
 * are MessagePack maps; replies are matched to requests by `ref`), and a raw TCP socket that
 * upgrades and then writes the start of a frame it never finishes.
 */
import net from 'node:net';
import WebSocket from 'ws';
import { decode, encode } from '@msgpack/msgpack';

export type Frame = Record<string, unknown>;

interface Pending { resolve: (f: Frame) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }

/** One anonymous (or named) WebSocket connection speaking shardchat v1. */
export class Conn {
  hello: Frame = {};
  /** Close code once closed (1006 when the socket dropped without a close frame). */
  closeCode = 0;
  private readonly pending = new Map<number, Pending>();
  private nextRef = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return;
      const f = decode(data) as Frame;
      const ref = f.ref;
      if (typeof ref !== 'number') return; // a broadcast (msg, presence): the mix does not need them
      const p = this.pending.get(ref);
      if (p === undefined) return;
      this.pending.delete(ref);
      clearTimeout(p.timer);
      p.resolve(f);
    });
    ws.on('close', (code: number) => {
      this.closeCode = code;
      for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(new Error(`closed ${code}`)); }
      this.pending.clear();
    });
    ws.on('error', () => undefined); // the close event follows and carries what the mix counts
  }

  /** Connects and resolves once `hello` arrived; rejects on close, error or timeout. */
  static open(port: number, user?: string, timeoutMs = 10_000): Promise<Conn> {
    const q = user === undefined ? '' : `?user=${encodeURIComponent(user)}`;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws${q}`, { perMessageDeflate: false, maxPayload: 64 << 20 });
    const c = new Conn(ws);
    return new Promise<Conn>((resolve, reject) => {
      const timer = setTimeout(() => { ws.terminate(); reject(new Error('no hello in time')); }, timeoutMs);
      const fail = (why: string): void => { clearTimeout(timer); reject(new Error(why)); };
      ws.once('unexpected-response', (_req, res) => { fail(`upgrade refused: HTTP ${res.statusCode}`); ws.terminate(); });
      ws.once('close', (code: number) => fail(`closed ${code} before hello`));
      ws.once('message', (data: Buffer) => {
        clearTimeout(timer);
        c.hello = decode(data) as Frame;
        resolve(c);
      });
    });
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends `frame` with a fresh ref; resolves with the reply carrying it (an `err` included). */
  request(frame: Frame, timeoutMs = 10_000): Promise<Frame> {
    const ref = this.nextRef++;
    return new Promise<Frame>((resolve, reject) => {
      if (!this.open) { reject(new Error('not open')); return; }
      const timer = setTimeout(() => { this.pending.delete(ref); reject(new Error(`no reply to ${String(frame.t)} in ${timeoutMs} ms`)); }, timeoutMs);
      this.pending.set(ref, { resolve, reject, timer });
      this.ws.send(encode({ ...frame, ref }));
    });
  }

  /** Closes (1000) and resolves once the socket is gone, terminating it after `graceMs`. */
  close(graceMs = 2000): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.ws.terminate(), graceMs);
      this.ws.once('close', () => { clearTimeout(timer); resolve(); });
      if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
      else this.ws.close(1000);
    });
  }
}

/** A raw socket that upgraded and sent `sendBytes` of a binary frame announcing `announce` bytes. */
export interface PartialFrame {
  socket: net.Socket;
  /** True once the server closed or reset it. */
  closedByServer: boolean;
}

/** One zero-filled payload shared by every partial frame (masked with key 0, so sent as is). */
let zeros: Buffer | null = null;

export function partialFrame(port: number, announce: number, sendBytes: number, timeoutMs = 10_000): Promise<PartialFrame> {
  if (zeros === null || zeros.length < sendBytes) zeros = Buffer.alloc(sendBytes);
  const body = zeros.subarray(0, sendBytes);
  return new Promise<PartialFrame>((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const out: PartialFrame = { socket, closedByServer: false };
    let head = '';
    let upgraded = false;
    const timer = setTimeout(() => { socket.destroy(); reject(new Error('partial frame: no upgrade in time')); }, timeoutMs);
    socket.on('error', () => undefined); // a reset by the server shows as close
    socket.on('close', () => { out.closedByServer = true; if (!upgraded) { clearTimeout(timer); reject(new Error('closed before the upgrade')); } });
    socket.on('data', (chunk: Buffer) => {
      if (upgraded) return; // hello and, once the server gives up, a close frame
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      upgraded = true;
      clearTimeout(timer);
      if (!head.startsWith('HTTP/1.1 101')) { socket.destroy(); reject(new Error(`partial frame: ${head.split('\r\n')[0]}`)); return; }
      const h = Buffer.alloc(14);
      h[0] = 0x82; // FIN, binary
      h[1] = 0x80 | 127; // masked, 64-bit length
      h.writeUInt32BE(Math.floor(announce / 2 ** 32), 2);
      h.writeUInt32BE(announce >>> 0, 6);
      h.writeUInt32BE(0, 10); // mask key 0: the payload goes out as is
      socket.write(h);
      socket.write(body);
      resolve(out);
    });
    socket.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  });
}
