/**
 * A real shardchat cluster for tests: one real redis-server (./redis-server.ts, with or without
 * AOF `appendfsync always`) and N engine processes (dist/engine/cli.js) started with `--redis`,
 * each on its own free port on 127.0.0.1 (`--port 0`, the port read from its "listening" log
 * line), its own node id (n0, n1, ...) and its own temporary `--data-dir`. Rate limits are lifted
 * as test/helpers/engine.ts does for in-process engines.
 *
 * Every wait is bounded. Every process started here is killed by its PID after the test (SIGKILL
 * for the engines, redis-server by its helper), and every client opened through `open()` is
 * closed. Without redis-server the test is skipped ("skipped: install redis-server ...").
 */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedis, connectRedis, type RedisServer } from './redis-server.js';
import { TestClient, httpGet } from './client.js';
import type { RedisConnection } from '../../workers/store/redis/connection.js';
import { findPort } from './log-port.js';

export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../engine/cli.js');

/** What the tests lift by default (a test may override any of them through `args`). */
const LIFTED = [
  '--rate-per-sec', '1000000', '--rate-burst', '1000000',
  '--room-create-rate', '1000000', '--room-create-burst', '1000000',
  '--upgrade-rate-per-sec', '0', '--max-buffer-bytes', String(64 << 20),
  '--web', 'false', '--log-level', 'info',
];

/** The last this many characters of a node's stdout / stderr are kept (for failure messages). */
const LOG_TAIL = 64 * 1024;

export interface Exit { code: number | null; signal: NodeJS.Signals | null }

export interface ClusterNode {
  readonly index: number;
  readonly id: string;
  /** 0 until it listens. */
  port: number;
  readonly pid: number;
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  readonly alive: boolean;
  out(): string;
  err(): string;
  /** GET /readyz status (0 when the node does not answer). */
  readyz(): Promise<number>;
  /** Waits until /readyz answers `status` (default 200), polling every 50 ms. */
  waitReady(status?: number, ms?: number): Promise<void>;
  /** Sends `signal` (default SIGTERM); after `deadlineMs` still alive, SIGKILL. Resolves with the exit. */
  stop(signal?: NodeJS.Signals, deadlineMs?: number): Promise<Exit>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<Exit>;
}

export interface ClusterOptions {
  nodes?: number;
  /** Redis with AOF appendfsync always (default: no persistence). */
  aof?: boolean;
  /** Extra CLI arguments for every node (after the defaults, so they win). */
  args?: string[];
  shards?: number;
  /** How long each node may take to listen and answer /readyz 200 (default 30 s: a loaded 2-core machine starts 3 nodes slowly). */
  readyMs?: number;
}

export interface Cluster {
  readonly redis: RedisServer;
  readonly nodes: ClusterNode[];
  /** A connection to Redis for admin commands (CLIENT KILL, INFO), opened on first use, closed after the test. */
  admin(): Promise<RedisConnection>;
  /** `CLIENT KILL TYPE pubsub`: how many connections Redis closed. */
  killPubsub(): Promise<number>;
  /** SIGSTOP / SIGCONT the redis-server process (a hung Redis). */
  pauseRedis(): void;
  resumeRedis(): void;
  /** Starts one more node (index nodes.length) with the cluster's arguments plus `extra`. */
  addNode(extra?: string[]): Promise<ClusterNode>;
  /** A client of `node` (index), closed after the test; its transport must stay free of violations. */
  open(node: number, user: string): Promise<TestClient>;
  /** Waits for /readyz `status` on every live node. */
  waitAllReady(status?: number, ms?: number): Promise<void>;
}


export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_r, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function spawnNode(t: TestContext, index: number, redisUrl: string, shards: number, args: string[]): ClusterNode {
  const id = `n${index}`;
  const dataDir = mkdtempSync(path.join(os.tmpdir(), `shardchat-node-${id}-`));
  const argv = [
    CLI, '--port', '0', '--host', '127.0.0.1', '--redis', redisUrl, '--node-id', id,
    '--shards', String(shards), '--data-dir', dataDir, ...LIFTED, ...args,
  ];
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const keep = (s: string, d: string): string => { const x = s + d; return x.length > LOG_TAIL ? x.slice(-LOG_TAIL) : x; };
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { out = keep(out, d); });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err = keep(err, d); });
  const exited = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const isAlive = (): boolean => child.exitCode === null && child.signalCode === null;
  const node: ClusterNode = {
    index, id, port: 0,
    pid: child.pid ?? -1,
    child, exited,
    get alive() { return isAlive(); },
    out: () => out,
    err: () => err,
    async readyz() {
      if (node.port === 0) return 0;
      try {
        return (await httpGet(node.port, '/readyz', 1000)).status;
      } catch {
        return 0; // not answering (down, or stopped): no status
      }
    },
    async waitReady(status = 200, ms = 15_000) {
      const end = Date.now() + ms;
      let last = -1;
      for (;;) {
        if (!isAlive()) assert.fail(`node ${id} exited (${child.exitCode ?? child.signalCode}) while waiting for /readyz ${status}; stderr: ${err.slice(-2000)} stdout: ${out.slice(-2000)}`);
        last = await node.readyz();
        if (last === status) return;
        if (Date.now() > end) assert.fail(`node ${id}: /readyz ${last}, not ${status}, after ${ms} ms; stderr: ${err.slice(-2000)} stdout: ${out.slice(-2000)}`);
        await sleep(50);
      }
    },
    async stop(signal = 'SIGTERM', deadlineMs = 15_000) {
      if (isAlive() && child.pid !== undefined) process.kill(child.pid, signal);
      let timer: NodeJS.Timeout | undefined;
      const forced = new Promise<void>((r) => { timer = setTimeout(r, deadlineMs); });
      await Promise.race([exited, forced]);
      clearTimeout(timer);
      if (isAlive() && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      return exited;
    },
    kill() { return node.stop('SIGKILL', 5000); },
  };
  t.after(async () => {
    if (isAlive() && child.pid !== undefined) process.kill(child.pid, 'SIGKILL'); // only the PID this test started
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
  });
  return node;
}

async function listening(node: ClusterNode, ms: number): Promise<number> {
  const end = Date.now() + ms;
  for (;;) {
    for (const line of node.out().split('\n')) {
      if (!line.includes('"listening"')) continue;
      try {
        const port = findPort(JSON.parse(line));
        if (port !== undefined) return port;
      } catch {
        // a line cut by the tail window: look at the next one
      }
    }
    if (!node.alive) assert.fail(`node ${node.id} exited (${node.child.exitCode ?? node.child.signalCode}) before listening; stderr: ${node.err().slice(-3000)} stdout: ${node.out().slice(-2000)}`);
    if (Date.now() > end) assert.fail(`node ${node.id}: no "listening" line within ${ms} ms; stderr: ${node.err().slice(-3000)} stdout: ${node.out().slice(-2000)}`);
    await sleep(20);
  }
}

/**
 * Starts Redis and `nodes` engine processes and waits for /readyz 200 on each; null when
 * redis-server is not installed (the test was skipped and must return).
 */
export async function startCluster(t: TestContext, opts: ClusterOptions = {}): Promise<Cluster | null> {
  const redis = await startRedis(t, { aof: opts.aof === true });
  if (redis === null) return null;
  const shards = opts.shards ?? 2;
  const args = opts.args ?? [];
  const readyMs = opts.readyMs ?? 30_000;
  const nodes: ClusterNode[] = [];
  let admin: RedisConnection | null = null;

  const addNode = async (extra: string[] = []): Promise<ClusterNode> => {
    const node = spawnNode(t, nodes.length, redis.url, shards, [...args, ...extra]);
    nodes.push(node);
    node.port = await listening(node, readyMs);
    await node.waitReady(200, readyMs);
    return node;
  };
  // Started one after the other's spawn but waited for together: the machine has few cores.
  const n = opts.nodes ?? 3;
  const spawned = Array.from({ length: n }, () => {
    const node = spawnNode(t, nodes.length, redis.url, shards, args);
    nodes.push(node);
    return node;
  });
  await Promise.all(spawned.map(async (node) => {
    node.port = await listening(node, readyMs);
    await node.waitReady(200, readyMs);
  }));

  const signalRedis = (sig: NodeJS.Signals): void => {
    assert.ok(redis.pid > 0, 'redis-server is running');
    process.kill(redis.pid, sig);
  };
  let paused = false;
  t.after(() => {
    if (paused && redis.pid > 0) process.kill(redis.pid, 'SIGCONT'); // so its SIGKILL'd exit is reaped promptly
  });

  const getAdmin = async (): Promise<RedisConnection> => {
    if (admin === null) admin = await connectRedis(t, redis.url, { commandTimeoutMs: 2000 });
    return admin;
  };
  return {
    redis,
    nodes,
    admin: getAdmin,
    async killPubsub() {
      const a = await getAdmin();
      return (await a.call(['CLIENT', 'KILL', 'TYPE', 'pubsub'], 'test')) as number;
    },
    pauseRedis() { signalRedis('SIGSTOP'); paused = true; },
    resumeRedis() { signalRedis('SIGCONT'); paused = false; },
    addNode,
    async open(i: number, user: string) {
      const node = nodes[i % nodes.length]!;
      assert.ok(node.port > 0 && node.alive, `node ${node.id} is up`);
      const c = await TestClient.connect(node.port, { user });
      c.label = `${user}@${node.id}`;
      t.after(async () => {
        await c.close();
        assert.deepEqual(c.violations, [], `protocol violations seen by ${c.label}`);
      });
      return c;
    },
    async waitAllReady(status = 200, ms = 15_000) {
      await Promise.all(nodes.filter((x) => x.alive).map((x) => x.waitReady(status, ms)));
    },
  };
}

/** Redis INFO as a map of field -> value. */
export async function redisInfo(conn: RedisConnection, section = 'all'): Promise<Map<string, string>> {
  const r = await conn.call(['INFO', section], 'test');
  const text = Buffer.isBuffer(r) ? r.toString('utf8') : String(r);
  const m = new Map<string, string>();
  for (const line of text.split('\r\n')) {
    const k = line.indexOf(':');
    if (k > 0 && !line.startsWith('#')) m.set(line.slice(0, k), line.slice(k + 1));
  }
  return m;
}
