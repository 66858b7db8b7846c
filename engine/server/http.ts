/**
 * The engine's HTTP side routes: GET /healthz (the process answers), GET /readyz (not draining
 * and every shard up), and GET /metrics (Prometheus text), either on the main app or on its own
 * listener (metricsPort >= 0). It knows the engine only through its host; the engine's listen()
 * decides which routes go on the main app, and its drain closes the metrics listener here.
 */
import { EngineError } from '../errors.js';
import { S_STORE_HEALTHY, S_UP } from '../metrics/shard-stats.js';
import type { ShardLink } from './link.js';
import type { TemplatedApp, UwsModule, us_listen_socket } from './uws.js';

/** What the side routes need of the engine. */
export interface HttpHost {
  links(): readonly ShardLink[];
  draining(): boolean;
  /** The /metrics body and its content type (the engine's EngineMetrics). */
  metrics(): { text(): Promise<string>; readonly contentType: string };
}

export class HttpSideRoutes {
  private metricsSocket: us_listen_socket | null = null;
  private metricsApp: TemplatedApp | null = null;

  constructor(private readonly uws: UwsModule, private readonly host: HttpHost) {}

  /** Port of the separate /metrics listener, or -1 when there is none (/metrics on the main port, or off). */
  get metricsPort(): number {
    return this.metricsSocket ? this.uws.us_socket_local_port(this.metricsSocket) : -1;
  }

  /**
   * GET /healthz and GET /readyz (503 while draining, while any shard is down or failed, or while
   * any shard's store is unhealthy: in cluster mode, Redis not answering or pub/sub not delivering).
   */
  routeHealth(app: TemplatedApp): void {
    app.get('/healthz', (res) => { res.writeStatus('200 OK').writeHeader('content-type', 'text/plain').end('ok'); });
    app.get('/readyz', (res) => {
      const ready = !this.host.draining() && this.host.links().every((l) => l.up && l.stats[S_UP] === 1 && l.stats[S_STORE_HEALTHY] === 1);
      res.writeStatus(ready ? '200 OK' : '503 Service Unavailable').writeHeader('content-type', 'text/plain').end(ready ? 'ready' : 'not ready');
    });
  }

  /** GET /metrics; a scrape whose client went away is not answered. */
  routeMetrics(app: TemplatedApp): void {
    app.get('/metrics', (res) => {
      let aborted = false;
      res.onAborted(() => { aborted = true; });
      const metrics = this.host.metrics();
      metrics.text().then(
        (text) => { if (!aborted) res.cork(() => { res.writeHeader('content-type', metrics.contentType).end(text); }); },
        (e: Error) => { if (!aborted) res.cork(() => { res.writeStatus('500 Internal Server Error').end(e.message); }); },
      );
    });
  }

  /** Serves /metrics (and 404 for anything else) on its own listener; resolves when bound. */
  async listenMetrics(host: string, port: number): Promise<void> {
    const app = this.uws.App();
    this.metricsApp = app;
    this.routeMetrics(app);
    app.any('/*', (res) => { res.writeStatus('404 Not Found').end('not found'); });
    await new Promise<void>((resolve, reject) => {
      app.listen(host, port, (ls) => {
        if (!ls) { reject(new EngineError('SHARDCHAT_LISTEN_FAILED', `cannot listen for metrics on ${host}:${port}`)); return; }
        this.metricsSocket = ls;
        resolve();
      });
    });
  }

  /**
   * Stops accepting on the metrics listener and hands back its app (null if there is none), whose
   * open sockets the drain closes before its deadline.
   */
  closeMetrics(): TemplatedApp | null {
    if (this.metricsSocket) { this.uws.us_listen_socket_close(this.metricsSocket); this.metricsSocket = null; }
    const app = this.metricsApp;
    this.metricsApp = null;
    return app;
  }
}
