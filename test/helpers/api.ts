/**
 * POST /api/v1/<method> on 127.0.0.1 (docs/API.md): the status and the JSON body. `key` null
 * sends no Authorization header; `raw` replaces the JSON of `body` as the request body.
 */
import http from 'node:http';

export interface ApiReply { status: number; body: Record<string, unknown> }

export function apiPost(port: number, method: string, body: unknown, key: string | null, raw?: string): Promise<ApiReply> {
  const data = raw ?? JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { connection: 'close', 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) };
    if (key !== null) headers.authorization = `Bearer ${key}`;
    const req = http.request({ host: '127.0.0.1', port, path: `/api/v1/${method}`, method: 'POST', agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        res.socket?.destroy();
        try { resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> }); } catch (e) { reject(e); }
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE' || e.code === 'ECONNRESET') return; reject(e); });
    req.end(data);
  });
}
