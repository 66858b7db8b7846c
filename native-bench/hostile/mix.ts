/**
 * The hostile mix of issue 10: for `durationMs`, many anonymous connections attack an engine's
 * memory while one normal client chats in its own room at a steady rate. Every loop stops by
 * itself at the deadline (and history pushes also at `pushBudgetBytes`); nothing here knows the
 * engine's internals: it speaks the protocol and reports what it saw. The caller samples the
 * server (RSS, shard heap, restarts) meanwhile.
 *
 *   partial   sockets that announce a 16 MiB frame, send `partialSendBytes` of it, then stay silent
 *   flood     connect, join `maxRooms` new rooms (as many as hello allows), close, reconnect
 *   push      connect, join a few of its rooms, publish max-size bodies until the bucket is empty
 *   churn     a new anonymous user joins a long-lived room, sets a read cursor, leaves
 *   hist      join a pushed room, pull `hist` limit 500 until the bucket is empty
 *   who       join the churn room (many present users), pull `who` until the bucket is empty
 */
import { Conn, partialFrame, type Frame, type PartialFrame } from './wire.js';

export interface MixOptions {
  port: number;
  durationMs: number;
  partialSockets?: number;
  partialAnnounce?: number;
  partialSendBytes?: number;
  floodConns?: number;
  pushConns?: number;
  /**
   * Body bytes the push loops stop at, over all of them: checked before each connection's burst,
   * so the total acked may pass it by up to one burst per loop (46 x ~64 KiB each).
   */
  pushBudgetBytes?: number;
  /** Rooms each push loop spreads its bodies over. */
  pushRooms?: number;
  churnConns?: number;
  histConns?: number;
  whoConns?: number;
  /** The normal client publishes one small message every this many ms. */
  normalIntervalMs?: number;
  /** Prefix of every room name, so two runs against one engine do not share rooms. */
  tag?: string;
}

/**
 * `answered`: replies of any kind, `err` included (the engine saw the request); `replies`: the
 * successful ones; `items`: body bytes acked (push), messages pulled (hist), users listed (who).
 */
export interface LoopStats { cycles: number; answered: number; replies: number; items: number; errors: Record<string, number> }

export interface NormalStats {
  sent: number; acked: number; lost: number; errors: Record<string, number>;
  /** Requests re-sent after `overloaded` / `rate_limited`, as the protocol tells a client to. */
  retries: number;
  p50Ms: number; p99Ms: number; maxMs: number; reconnects: number;
}

export interface MixResult {
  durationMs: number;
  normal: NormalStats;
  partial: { opened: number; closedByServer: number; failed: number };
  flood: LoopStats; push: LoopStats; churn: LoopStats; hist: LoopStats; who: LoopStats;
}

const newStats = (): LoopStats => ({ cycles: 0, answered: 0, replies: 0, items: 0, errors: {} });
const count = (m: Record<string, number>, k: string): void => { m[k] = (m[k] ?? 0) + 1; };
const errKey = (e: unknown): string => (e instanceof Error ? e.message.replace(/\d+ ms/, 'N ms') : String(e)).slice(0, 60);

/** A reply's outcome: its `t`, or `err:<code>`. */
function outcome(f: Frame): string {
  return f.t === 'err' || f.t === 'failed' ? `${String(f.t)}:${String(f.code)}` : String(f.t);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

/** Runs `cycle` again and again until the deadline; a failing cycle is counted and retried. */
async function loop(until: number, s: LoopStats, cycle: () => Promise<void>): Promise<void> {
  while (Date.now() < until) {
    try {
      await cycle();
    } catch (e) {
      count(s.errors, errKey(e));
      await new Promise((r) => setTimeout(r, 20)); // a refused connect: do not spin on it
    }
    s.cycles++;
  }
}

/** Sends `frames` pipelined and tallies the replies; returns them. */
async function burst(c: Conn, frames: Frame[], s: LoopStats): Promise<Frame[]> {
  const replies = await Promise.all(frames.map((f) => c.request(f).catch((e: unknown) => ({ t: 'failed', code: errKey(e) }))));
  for (const r of replies) {
    if (r.t !== 'failed') s.answered++;
    if (r.t === 'err' || r.t === 'failed') count(s.errors, outcome(r));
    else s.replies++;
  }
  return replies;
}

function limitsOf(c: Conn): { maxRooms: number; burst: number; maxFrame: number } {
  const l = (c.hello.limits ?? {}) as Record<string, number>;
  return { maxRooms: l.maxRooms ?? 100, burst: l.burst ?? 50, maxFrame: l.maxFrame ?? 65536 };
}

export async function runMix(o: MixOptions): Promise<MixResult> {
  const t0 = Date.now();
  const until = t0 + o.durationMs;
  const tag = o.tag ?? `h${t0.toString(36)}`;
  const res: MixResult = {
    durationMs: 0,
    normal: { sent: 0, acked: 0, lost: 0, errors: {}, retries: 0, p50Ms: 0, p99Ms: 0, maxMs: 0, reconnects: 0 },
    partial: { opened: 0, closedByServer: 0, failed: 0 },
    flood: newStats(), push: newStats(), churn: newStats(), hist: newStats(), who: newStats(),
  };
  const pushRooms = o.pushRooms ?? 40;
  const pushConns = o.pushConns ?? 4;
  const budget = o.pushBudgetBytes ?? 256 << 20;
  const churnRoom = (i: number): string => `${tag}-churn-${i % 2}`;
  const pushRoom = (w: number, i: number): string => `${tag}-push-${w}-${i % pushRooms}`;
  const tasks: Promise<void>[] = [];

  // Partial huge frames: opened once, held open until the end.
  const partials: PartialFrame[] = [];
  const partialsOpened = (async () => {
    for (let i = 0; i < (o.partialSockets ?? 6) && Date.now() < until; i++) {
      try {
        partials.push(await partialFrame(o.port, o.partialAnnounce ?? 16 << 20, o.partialSendBytes ?? 12 << 20));
        res.partial.opened++;
      } catch {
        res.partial.failed++; // refused or closed at once: counted, nothing held
      }
    }
  })();
  tasks.push(partialsOpened);

  for (let w = 0; w < (o.floodConns ?? 8); w++) {
    let cycle = 0;
    tasks.push(loop(until, res.flood, async () => {
      const c = await Conn.open(o.port);
      const { maxRooms } = limitsOf(c);
      const n = cycle++;
      await burst(c, Array.from({ length: maxRooms }, (_, i) => ({ t: 'join', room: `${tag}-flood-${w}-${n}-${i}` })), res.flood);
      await c.close();
    }));
  }

  for (let w = 0; w < pushConns; w++) {
    let next = 0;
    tasks.push(loop(until, res.push, async () => {
      if (res.push.items >= budget) { await new Promise((r) => setTimeout(r, 100)); return; }
      const c = await Conn.open(o.port);
      const { burst: tokens, maxFrame } = limitsOf(c);
      const rooms = Array.from({ length: 4 }, () => pushRoom(w, next++));
      await burst(c, rooms.map((room) => ({ t: 'join', room })), res.push);
      // The largest body whose pub frame fits in maxFrame (bin32 header + the frame's other fields).
      const body = new Uint8Array(maxFrame - 96);
      const pubs = Array.from({ length: Math.max(0, tokens - rooms.length) }, (_, i) => ({ t: 'pub', room: rooms[i % rooms.length]!, body }));
      const replies = await burst(c, pubs, res.push);
      for (const r of replies) if (r.t === 'ack') res.push.items += body.byteLength;
      await c.close();
    }));
  }

  for (let w = 0; w < (o.churnConns ?? 4); w++) {
    tasks.push(loop(until, res.churn, async () => {
      const c = await Conn.open(o.port);
      const room = churnRoom(res.churn.cycles + w);
      const [j] = await burst(c, [{ t: 'join', room }], res.churn);
      const seq = typeof j?.seq === 'number' && j.seq > 0 ? j.seq : 1;
      await burst(c, [{ t: 'read', room, seq }], res.churn);
      await c.close();
    }));
  }

  for (let w = 0; w < (o.histConns ?? 2); w++) {
    tasks.push(loop(until, res.hist, async () => {
      const c = await Conn.open(o.port);
      const room = pushRoom(w % pushConns, res.hist.cycles);
      await burst(c, [{ t: 'join', room }], res.hist);
      const replies = await burst(c, Array.from({ length: limitsOf(c).burst - 1 }, () => ({ t: 'hist', room, limit: 500 })), res.hist);
      for (const r of replies) if (r.t === 'hist') res.hist.items += (r.msgs as unknown[]).length;
      await c.close();
    }));
  }

  for (let w = 0; w < (o.whoConns ?? 2); w++) {
    tasks.push(loop(until, res.who, async () => {
      const c = await Conn.open(o.port);
      const room = churnRoom(w);
      await burst(c, [{ t: 'join', room }], res.who);
      const replies = await burst(c, Array.from({ length: limitsOf(c).burst - 1 }, () => ({ t: 'who', room })), res.who);
      for (const r of replies) if (r.t === 'who') res.who.items += (r.users as unknown[]).length;
      await c.close();
    }));
  }

  tasks.push(normalClient(o, until, `${tag}-normal`, res.normal));
  await Promise.all(tasks);
  for (const p of partials) {
    if (p.closedByServer) res.partial.closedByServer++;
    p.socket.destroy();
  }
  res.durationMs = Date.now() - t0;
  return res;
}

/** One named user chatting in its own room: every pub must be acked; latency from send to ack. */
async function normalClient(o: MixOptions, until: number, room: string, s: NormalStats): Promise<void> {
  const lat: number[] = [];
  const inflight: Promise<void>[] = [];
  let c: Conn | null = null;
  const connect = async (): Promise<Conn> => {
    const n = await Conn.open(o.port, 'normal-user');
    const j = await n.request({ t: 'join', room });
    if (j.t !== 'joined') throw new Error(`normal client's join: ${outcome(j)}`);
    return n;
  };
  const interval = o.normalIntervalMs ?? 200;
  for (let next = Date.now(); next < until; next += interval) {
    const wait = next - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    try {
      if (c === null || !c.open) {
        if (c !== null) s.reconnects++;
        c = await connect();
      }
    } catch (e) {
      count(s.errors, `connect: ${errKey(e)}`);
      continue;
    }
    s.sent++;
    inflight.push(publish(c, room, s, lat));
  }
  await Promise.all(inflight);
  await (c as Conn | null)?.close();
  s.lost = s.sent - s.acked;
  lat.sort((a, b) => a - b);
  s.p50Ms = percentile(lat, 0.5);
  s.p99Ms = percentile(lat, 0.99);
  s.maxMs = lat.length === 0 ? 0 : lat[lat.length - 1]!;
}

/**
 * One pub as a well-behaved client sends it: `overloaded` and `rate_limited` are retried after
 * `retryAfterMs` (at least 10 ms) for up to 10 s; the latency runs from the first send to the ack.
 */
async function publish(c: Conn, room: string, s: NormalStats, lat: number[]): Promise<void> {
  const t = performance.now();
  const frame = { t: 'pub', room, body: { text: `steady ${s.sent}` } };
  try {
    for (;;) {
      const r = await c.request(frame, 10_000);
      if (r.t === 'ack') { s.acked++; lat.push(performance.now() - t); return; }
      const code = String(r.code);
      if ((code !== 'overloaded' && code !== 'rate_limited') || performance.now() - t > 10_000) { count(s.errors, outcome(r)); return; }
      s.retries++;
      const after = typeof r.retryAfterMs === 'number' ? r.retryAfterMs : 10;
      await new Promise((res) => setTimeout(res, Math.max(10, after)));
    }
  } catch (e) {
    count(s.errors, errKey(e));
  }
}
