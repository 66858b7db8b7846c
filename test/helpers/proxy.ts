/**
 * A TCP proxy in front of an engine, for forcing real network drops on a client: `cut()` destroys
 * every proxied connection (the client sees 1006), and while `blocked` new connections are
 * refused at once. Listens on 127.0.0.1 port 0; closed after the test.
 */
import net from 'node:net';
import type { TestContext } from 'node:test';

export class Proxy {
  blocked = false;
  /** While true, what the engine sends is dropped (the client hears nothing, e.g. a lost ack). */
  muted = false;
  accepted = 0;
  private readonly sockets = new Set<net.Socket>();
  private constructor(private readonly server: net.Server, public target: number) {}

  static async start(t: TestContext, target: number): Promise<Proxy> {
    const server = net.createServer();
    const p = new Proxy(server, target);
    server.on('connection', (s) => p.onConnection(s));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => p.close());
    return p;
  }

  get port(): number { return (this.server.address() as net.AddressInfo).port; }

  private onConnection(s: net.Socket): void {
    if (this.blocked) { s.destroy(); return; }
    this.accepted++;
    const up = net.connect(this.target, '127.0.0.1');
    this.sockets.add(s); this.sockets.add(up);
    const drop = (): void => { s.destroy(); up.destroy(); this.sockets.delete(s); this.sockets.delete(up); };
    s.on('error', drop); up.on('error', drop); s.on('close', drop); up.on('close', drop);
    s.pipe(up);
    up.on('data', (d: Buffer) => { if (!this.muted) s.write(d); });
  }

  /** Drops every proxied connection now. */
  cut(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.blocked = true;
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
