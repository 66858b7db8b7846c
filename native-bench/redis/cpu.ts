/**
 * Redis CPU per published message: the cluster-mode Lua path (sequence + dedupe + XADD MAXLEN ~
 * + PUBLISH in one script) against a bare PUBLISH of the same bytes, each with one subscriber on
 * the channel (a node). Reads redis-server's own CPU (INFO cpu, main thread) before and after each
 * arm, so the client's cost is excluded. Starts its own redis-server on a free 127.0.0.1 port
 * and stops it. Bounded: --messages N (default 20000) per arm, --batch B messages per script call.
 *
 *   npm run build && node dist/native-bench/redis/cpu.js --messages 20000 --batch 1
 *
 * On a shared machine, a figure is only comparable with the other arm of the same run.
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createClient } from 'redis';
import { RedisConnection } from '../../workers/store/redis/connection.js';
import { RedisSequencer, type PublishInput } from '../../workers/store/redis/sequencer.js';
import { roomChannel } from '../../workers/store/redis/keys.js';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i < 0 ? def : Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < 1 || v > 1_000_000) throw new RangeError(`--${name} must be an integer 1..1000000`);
  return v;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const a = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  if (a === null || typeof a === 'string') throw new Error('no port');
  return a.port;
}

async function cpuMs(c: RedisConnection): Promise<number> {
  const info = (await c.call(['INFO', 'cpu'], 'bench')) as Buffer;
  const get = (k: string): number => Number(new RegExp(`${k}:([0-9.]+)`).exec(info.toString())?.[1] ?? NaN);
  return (get('used_cpu_user_main_thread') + get('used_cpu_sys_main_thread')) * 1000;
}

async function main(): Promise<void> {
  const messages = arg('messages', 20_000);
  const batch = arg('batch', 1);
  const port = await freePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  try {
    const url = `redis://127.0.0.1:${port}`;
    const conn = new RedisConnection({ url, commandTimeoutMs: 10_000 });
    for (let i = 0; ; i++) {
      try { await conn.connect(); break; } catch (err) { if (i > 50) throw err; }
    }
    const sub = createClient({ url });
    await sub.connect();
    let received = 0;
    await sub.subscribe(roomChannel('bench'), () => { received++; }, true);
    const frame = Buffer.alloc(128, 0x61);
    frame.write('\xa3seq', 0, 'latin1');
    frame[4] = 0xcf;
    const seq = new RedisSequencer(conn);
    const input: PublishInput = { user: 'ann', cid: null, ts: Date.now(), frame, seqOffset: 5 };
    const inflight = 64;

    async function arm(name: string, one: () => Promise<unknown>, perCall: number): Promise<void> {
      received = 0;
      const before = await cpuMs(conn);
      const t0 = performance.now();
      let sent = 0;
      await Promise.all(Array.from({ length: inflight }, async () => {
        while (sent < messages) { sent += perCall; await one(); }
      }));
      while (received < sent) await new Promise((r) => setTimeout(r, 5));
      const cpu = (await cpuMs(conn)) - before;
      const wall = performance.now() - t0;
      console.log(`${name.padEnd(28)} ${String(sent).padStart(8)} msgs  redis cpu ${(cpu * 1000 / sent).toFixed(2).padStart(6)} us/msg  wall ${(sent / wall * 1000).toFixed(0).padStart(7)} msgs/s`);
    }

    const msgs = Array.from({ length: batch }, () => input);
    await arm('bare PUBLISH', () => conn.call(['PUBLISH', roomChannel('bench'), frame], 'bench'), 1);
    await arm(`Lua sequencer, batch ${batch}`, () => seq.publish('bench', msgs), batch);
    await sub.unsubscribe();
    sub.destroy();
    conn.close();
  } finally {
    redis.kill('SIGKILL');
  }
}

main().catch((err: unknown) => { console.error(err); process.exitCode = 1; });
