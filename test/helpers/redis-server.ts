/**
 * A real redis-server per test: started on a free port on 127.0.0.1, in its own temporary
 * directory, stopped by its PID after the test. Without persistence by default (`--save ""
 * --appendonly no`); `aof: true` turns on AOF with `appendfsync always` so a restart keeps every
 * acknowledged write. `restart()` stops the process and starts a new one on the same port and
 * directory (what a crashed or restarted Redis looks like to its clients).
 */
import type { TestContext } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { requireTool } from './tools.js';
import { RedisConnection, type RedisConnectionOptions } from '../../workers/store/redis/connection.js';

export interface RedisServerOptions {
  /** AOF with appendfsync always (default: no persistence at all). */
  aof?: boolean;
}

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  /** SIGKILL (default) or SIGTERM, then start again on the same port and directory. */
  restart(signal?: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** Stops the process and waits for its exit. Safe to call twice. */
  stop(signal?: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** Starts it again after stop(). */
  start(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  if (addr === null || typeof addr === 'string') throw new Error('no port from listen(0)');
  return addr.port;
}

const READY = /Ready to accept connections/;
const BIND_FAILED = /Address already in use|Could not create server TCP listening socket/;

function launch(bin: string, port: number, dir: string, aof: boolean): Promise<ChildProcess> {
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
    '--appendonly', aof ? 'yes' : 'no', '--appendfsync', 'always', '--daemonize', 'no',
    '--loglevel', 'notice', '--logfile', '',
  ];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`redis-server on port ${port} not ready within 10 s:\n${out}`)), 10_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (READY.test(out)) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.stdout?.resume(); // keep draining its log so it never blocks on a full pipe
        child.stderr?.resume();
        child.off('exit', onExit);
        resolve(child);
      } else if (BIND_FAILED.test(out)) {
        fail(Object.assign(new Error(`redis-server could not bind port ${port}`), { code: 'EADDRINUSE' }));
      }
    };
    const onExit = (code: number | null): void => fail(new Error(`redis-server exited (${code}) before ready:\n${out}`));
    function fail(err: Error): void {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      if (child.exitCode === null) child.kill('SIGKILL');
      reject(err);
    }
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Starts a redis-server for this test, or skips the test (returns null) when the Debian package
 * is not installed (a failure with SHARDCHAT_REQUIRE_TOOLS=1).
 */
export async function startRedis(t: TestContext, opts: RedisServerOptions = {}): Promise<RedisServer | null> {
  const bin = requireTool(t, 'redis-server', 'redis-server', 'test cluster mode');
  if (bin === null) return null;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'shardchat-redis-'));
  const aof = opts.aof === true;
  let port = 0;
  let child: ChildProcess | null = null;
  // Another process may take the free port between our probe and redis-server's bind: retry.
  for (let attempt = 0; child === null; attempt++) {
    port = await freePort();
    try {
      child = await launch(bin, port, dir, aof);
    } catch (err) {
      if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt >= 4) throw err;
    }
  }
  let current: ChildProcess | null = child;
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() { return current?.pid ?? -1; },
    async stop(signal = 'SIGKILL') {
      const c = current;
      if (c === null) return;
      current = null;
      c.kill(signal);
      await exited(c);
    },
    async start() {
      if (current !== null) return;
      current = await launch(bin, port, dir, aof);
    },
    async restart(signal = 'SIGKILL') {
      await server.stop(signal);
      await server.start();
    },
  };
  t.after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return server;
}

/** A connected store connection to `url`, closed after the test. */
export async function connectRedis(t: TestContext, url: string, opts: Partial<RedisConnectionOptions> = {}): Promise<RedisConnection> {
  const conn = new RedisConnection({ url, ...opts });
  t.after(() => conn.close());
  await conn.connect();
  return conn;
}
