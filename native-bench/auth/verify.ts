/**
 * Token verification cost on the calling thread (the main thread, once wired in), with and
 * without the verified-token cache, and the cost of a permission check: `npm run bench:auth`.
 *
 * Each arm runs a warm-up, then AUTH_REPS (5) timed loops of AUTH_REP_MS (300 ms) with
 * AUTH_IN_FLIGHT (32) verifications outstanding, interleaved
 * across arms so that load from elsewhere hits them alike; the table gives the median and the
 * min..max of microseconds per operation: wall time, and the main thread's busy time.
 * Figures from a shared machine are noise beyond their order of magnitude: compare arms within
 * one run only.
 */
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { allows, compileRooms, createVerifier, resolveAuthOptions, type Identity, type TokenVerifier } from '../../engine/auth/index.js';

const REPS = Number(process.env.AUTH_REPS ?? 5);
const REP_MS = Number(process.env.AUTH_REP_MS ?? 300);
const IN_FLIGHT = Number(process.env.AUTH_IN_FLIGHT ?? 32);
const SECRET = 'bench-secret-of-at-least-32-bytes-long';

interface Sample { wall: number; main: number }
interface Arm { name: string; op: () => Promise<unknown> | unknown; samples: Sample[] }

/**
 * Runs `op` with IN_FLIGHT calls outstanding for `ms`; returns wall time per operation and the
 * main thread's busy time per operation (event-loop utilisation: jose 6 verifies through
 * WebCrypto, whose work runs on libuv's thread pool, so wall time per op is not main-thread cost).
 */
async function timed(op: Arm['op'], ms: number): Promise<Sample> {
  let n = 0;
  const elu0 = performance.eventLoopUtilization();
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(ms) * 1_000_000n;
  let now = t0;
  const batch = new Array<Promise<unknown> | unknown>(IN_FLIGHT);
  while (now < end) {
    for (let i = 0; i < IN_FLIGHT; i++) batch[i] = op();
    await Promise.all(batch);
    n += IN_FLIGHT;
    now = process.hrtime.bigint();
  }
  const elu = performance.eventLoopUtilization(elu0);
  return { wall: Number(now - t0) / 1000 / n, main: (elu.active * 1000) / n };
}

async function verifier(opts: Parameters<typeof resolveAuthOptions>[0]): Promise<TokenVerifier> {
  return createVerifier(resolveAuthOptions(opts)!);
}

async function main(): Promise<void> {
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const claims = { sub: 'user-12345', exp, rooms: [{ match: 'team-42:*', allow: ['join', 'pub', 'hist'] }], info: { name: 'Alice' } };
  const hsToken = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(SECRET));
  const dir = mkdtempSync(path.join(tmpdir(), 'shardchat-bench-auth-'));
  try {
    const keys: Record<string, { file: string; token: string }> = {};
    for (const alg of ['ES256', 'RS256', 'EdDSA'] as const) {
      const kp = await generateKeyPair(alg, alg === 'EdDSA' ? { crv: 'Ed25519' } : {});
      const file = path.join(dir, `${alg}.pem`);
      writeFileSync(file, await exportSPKI(kp.publicKey));
      keys[alg] = { file, token: await new SignJWT(claims).setProtectedHeader({ alg }).sign(kp.privateKey) };
    }
    const hsCold = await verifier({ jwtSecret: SECRET, tokenCacheEntries: 0 });
    const hsCached = await verifier({ jwtSecret: SECRET });
    const arms: Arm[] = [
      { name: 'HS256 verify, no cache', op: () => hsCold.verify(hsToken), samples: [] },
      { name: 'HS256 verify, cache hit', op: () => hsCached.verify(hsToken), samples: [] },
    ];
    for (const alg of ['ES256', 'RS256', 'EdDSA'] as const) {
      const cold = await verifier({ jwtPublicKeyFile: keys[alg]!.file, tokenCacheEntries: 0 });
      const warm = await verifier({ jwtPublicKeyFile: keys[alg]!.file });
      arms.push({ name: `${alg} verify, no cache`, op: () => cold.verify(keys[alg]!.token), samples: [] });
      arms.push({ name: `${alg} verify, cache hit`, op: () => warm.verify(keys[alg]!.token), samples: [] });
    }
    const few: Identity = { user: 'u', exp, rooms: compileRooms(claims.rooms), info: null, infoBytes: null };
    const many: Identity = { user: 'u', exp, rooms: compileRooms(Array.from({ length: 256 }, (_, i) => ({ match: `p${i}:*`, allow: ['join'] }))), info: null, infoBytes: null };
    let sink = 0;
    arms.push({ name: 'allows(), 1 pattern', op: () => { if (allows(few, 'pub', 'team-42:general')) sink++; }, samples: [] });
    arms.push({ name: 'allows(), 256 prefixes', op: () => { if (allows(many, 'join', 'p255:room')) sink++; }, samples: [] });
    for (const a of arms) await timed(a.op, 100);
    for (let r = 0; r < REPS; r++) {
      for (const a of arms) a.samples.push(await timed(a.op, REP_MS));
      process.stderr.write(`rep ${r + 1}/${REPS}\n`);
    }
    console.log(`node ${process.version}, ${REPS} x ${REP_MS} ms per arm, ${IN_FLIGHT} in flight (sink ${sink > 0})`);
    console.log(`${'arm'.padEnd(28)} ${'wall us/op'.padStart(10)} ${'min..max'.padStart(14)} ${'main us/op'.padStart(10)} ${'min..max'.padStart(14)}`);
    const col = (xs: number[]): string => {
      const s = [...xs].sort((x, y) => x - y);
      return `${s[Math.floor(s.length / 2)]!.toFixed(2).padStart(10)} ${`${s[0]!.toFixed(2)}..${s[s.length - 1]!.toFixed(2)}`.padStart(14)}`;
    };
    for (const a of arms) console.log(`${a.name.padEnd(28)} ${col(a.samples.map((x) => x.wall))} ${col(a.samples.map((x) => x.main))}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
