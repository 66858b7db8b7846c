/**
 * Serves the chat page (dist/web, built by scripts/build-web.mjs) at GET / and GET /assets/*.
 * The files are read once, when the engine starts listening, and held in memory: a fixed set
 * (what the build wrote, at most MAX_FILES of at most MAX_FILE_BYTES each), so a request never
 * touches the disk and no path from a request ever reaches the file system.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HttpResponse, TemplatedApp } from './uws.js';

const MAX_FILES = 64;
const MAX_FILE_BYTES = 4 << 20;
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.map': 'application/json',
};
// The page talks only to its own origin; inline scripts and styles are not needed.
const CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** dist/web next to this module once compiled (dist/engine/server -> dist/web). */
export const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../web');

interface File { body: Uint8Array; type: string }

function load(dir: string): Map<string, File> | null {
  if (!existsSync(path.join(dir, 'index.html'))) return null;
  const files = new Map<string, File>();
  files.set('/', { body: readFileSync(path.join(dir, 'index.html')), type: TYPES['.html']! });
  const assets = path.join(dir, 'assets');
  if (existsSync(assets)) {
    for (const name of readdirSync(assets).slice(0, MAX_FILES)) {
      const full = path.join(assets, name);
      const type = TYPES[path.extname(name)];
      if (!type || !statSync(full).isFile() || statSync(full).size > MAX_FILE_BYTES) continue;
      files.set(`/assets/${name}`, { body: readFileSync(full), type });
    }
  }
  return files;
}

// `connection: close`: the engine's drain does not close idle keep-alive HTTP sockets, and a
// browser keeps the page's connections open, which held the process ~10 s after SIGTERM (until
// uWS's HTTP idle timeout). Three small files per page load do not need keep-alive.
function reply(res: HttpResponse, f: File): void {
  res.cork(() => {
    res.writeStatus('200 OK')
      .writeHeader('content-type', f.type)
      .writeHeader('cache-control', 'no-cache')
      .writeHeader('x-content-type-options', 'nosniff')
      .writeHeader('content-security-policy', CSP)
      .writeHeader('connection', 'close')
      .end(f.body);
  });
}

/** Adds the page's routes to `app`; call before the 404 catch-all. */
export function routeStatic(app: TemplatedApp, dir: string = WEB_DIR): void {
  const files = load(dir);
  const missing = (res: HttpResponse): void => {
    res.writeStatus('503 Service Unavailable').writeHeader('content-type', 'text/plain')
      .end('the chat page is not built: run `npm run build` (it bundles web/ into dist/web)');
  };
  app.get('/', (res) => { const f = files?.get('/'); if (f) reply(res, f); else missing(res); });
  app.get('/assets/*', (res, req) => {
    const f = files?.get(req.getUrl());
    if (f) reply(res, f);
    else res.writeStatus('404 Not Found').writeHeader('content-type', 'text/plain').end('not found');
  });
}
