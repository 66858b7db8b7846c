/**
 * The shard supervisor: starts each shard's task on the pool, watches its heartbeat, and when a
 * shard dies (throws, exits, or stops beating: an endless loop) restarts it with a fresh pair
 * of rings, after a back-off, within a restart budget. What the dead shard published is
 * delivered and what it never handled is answered (the engine's hooks do both), then the
 * memberships the main thread knows of are replayed into the new incarnation.
 *
 * Heartbeat: the shard bumps S_HEARTBEAT once per turn of its loop, which comes round at least
 * every tick (500 ms) even when idle. A shard whose beat has not moved for `stallMs` is stuck:
 * its task is aborted, which makes piscina terminate the worker thread, and it is restarted
 * like a crashed one. Budget: more than `restartBudget` restarts within RESTART_WINDOW_MS and
 * the shard is reported failed (no more restarts; /readyz 503; shardchat_shard_failed 1; its
 * rooms' requests are refused) until the engine is restarted.
 */
import type { Piscina } from 'piscina';
import type { Logger } from 'pino';
import { S_HEARTBEAT, S_UP } from '../metrics/shard-stats.js';
import type { ShardLink } from './link.js';

/** Restarts are counted against the budget over this window. */
export const RESTART_WINDOW_MS = 60_000;
/** Back-off before the 2nd, 3rd, ... restart within the window: 100 ms doubling, at most 5 s. The first is immediate. */
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 5_000;

export interface SupervisorOptions {
  /** A shard whose heartbeat has not moved for this long is terminated and restarted (0 = never). */
  stallMs: number;
  /** Restarts allowed within RESTART_WINDOW_MS before the shard is reported failed. */
  restartBudget: number;
}

export interface SupervisorHooks {
  /** The task payload of a shard incarnation (rings and stats are added here). */
  taskOptions(): Record<string, unknown>;
  /**
   * Why a shard died: 'crash' (restart it), 'store' (its store failed to commit: restart it and
   * answer its unhandled requests `unavailable`), 'fatal' (a store it cannot open at start: the
   * engine fails to start; the shard stays down, reported failed).
   */
  crashCause(err: Error): 'crash' | 'store' | 'fatal';
  /** Delivers everything a (dead) shard published in its outbound ring. */
  deliverAll(link: ShardLink): void;
  /** Answers the records a dead shard left unhandled in its inbound ring (those before `handledUpTo` were answered). */
  failUnhandled(inbound: SharedArrayBuffer, shard: number, handledUpTo: number | null, storeFailed: boolean): void;
  /** Writes the memberships of this shard's rooms into its (new) inbound ring. */
  replay(link: ShardLink): void;
  /** Starts moving this incarnation's output to sockets. */
  pump(link: ShardLink, generation: number): void;
  /** A shard was just restarted while the engine drains: it must be told to drain too. */
  draining(): boolean;
  stopped(): boolean;
}

export class ShardSupervisor {
  private watcher: NodeJS.Timeout | null = null;
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Shards terminated because their heartbeat stopped (all incarnations). */
  stalls = 0;

  constructor(
    private readonly pool: Piscina,
    private readonly links: readonly ShardLink[],
    private readonly opts: SupervisorOptions,
    private readonly log: Logger,
    private readonly hooks: SupervisorHooks,
  ) {}

  /** Starts every shard and the heartbeat watch. */
  startAll(): void {
    for (const link of this.links) this.start(link);
    if (this.opts.stallMs > 0) {
      this.watcher = setInterval(() => this.checkHeartbeats(), Math.max(50, Math.min(1000, this.opts.stallMs >> 2)));
      this.watcher.unref();
    }
  }

  /** Stops watching and restarting (the engine is closing). */
  stop(): void {
    if (this.watcher) { clearInterval(this.watcher); this.watcher = null; }
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private start(link: ShardLink): void {
    const gen = link.generation;
    link.up = true;
    const abort = new AbortController();
    link.abort = abort;
    link.lastBeat = link.stats[S_HEARTBEAT]!;
    link.lastBeatAt = performance.now();
    const task = this.pool.run({
      ...this.hooks.taskOptions(), index: link.index, inbound: link.inbound, outbound: link.outbound, stats: link.statsSab,
    }, { signal: abort.signal });
    link.task = task;
    task.then(
      () => { if (link.generation === gen) link.up = false; },
      (err: Error) => this.onCrash(link, gen, err),
    );
    this.hooks.pump(link, gen);
  }

  private checkHeartbeats(): void {
    if (this.hooks.stopped()) return;
    const now = performance.now();
    for (const link of this.links) {
      if (!link.up || link.stats[S_UP] !== 1) { link.lastBeatAt = now; continue; }
      const beat = link.stats[S_HEARTBEAT]!;
      if (beat !== link.lastBeat) { link.lastBeat = beat; link.lastBeatAt = now; continue; }
      if (now - link.lastBeatAt < this.opts.stallMs) continue;
      this.stalls++;
      link.stalls++;
      this.log.error({ event: 'shard_stalled', shard: link.index, ms: Math.round(now - link.lastBeatAt) }, 'shard stopped beating; terminating it');
      link.stats[S_UP] = 0; // /readyz 503 until the new incarnation runs
      link.abort?.abort(new Error(`shard ${link.index} heartbeat stalled for ${this.opts.stallMs} ms`));
    }
  }

  private onCrash(link: ShardLink, gen: number, err: Error): void {
    if (link.generation !== gen) return;
    link.up = false;
    // A worker that exited never ran its cleanup: mark it down so /readyz is 503 until the new one runs.
    link.stats[S_UP] = 0;
    if (this.hooks.stopped()) return;
    const cause = this.hooks.crashCause(err);
    if (cause === 'fatal') { link.failed = true; link.stop(); return; }
    this.log.error({ event: 'shard_crashed', shard: link.index, err: err.message }, 'shard crashed');
    // Deliver everything the dead shard published, then answer what it never handled.
    this.hooks.deliverAll(link);
    const handledUpTo = link.handledUpTo();
    const oldInbound = link.inbound;
    const oldReader = link.reader;
    link.fresh();
    oldReader.wake(); // ends the old generation's pump
    this.hooks.failUnhandled(oldInbound, link.index, handledUpTo, cause === 'store');
    const now = performance.now();
    link.restartTimes = link.restartTimes.filter((t) => now - t < RESTART_WINDOW_MS);
    if (link.restartTimes.length >= this.opts.restartBudget) {
      link.failed = true;
      link.stop(); // nobody will read its ring again: drop queued control records, take no more
      this.log.error({ event: 'shard_failed', shard: link.index, restarts: link.restartTimes.length, windowMs: RESTART_WINDOW_MS }, 'shard failed: restart budget spent; not restarting it');
      return;
    }
    link.restartTimes.push(now);
    // Replay memberships into the fresh ring now, before any back-off: frames clients send
    // meanwhile queue behind the replay, so the new incarnation sees their rooms joined first
    // (a pub is not answered not_joined, a leave really leaves). Rooms come back with a new
    // epoch (or the stored one), told by a `joined`.
    this.hooks.replay(link);
    const k = link.restartTimes.length;
    const delay = k === 1 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (k - 2));
    if (delay === 0) { this.restart(link); return; }
    this.log.warn({ event: 'shard_backoff', shard: link.index, ms: delay }, 'shard restart delayed');
    const timer = setTimeout(() => { this.timers.delete(timer); if (!this.hooks.stopped()) this.restart(link); }, delay);
    this.timers.add(timer);
  }

  private restart(link: ShardLink): void {
    link.restarts++;
    this.start(link);
    if (this.hooks.draining()) link.drainNow();
    this.log.warn({ event: 'shard_restarted', shard: link.index, restarts: link.restarts }, 'shard restarted');
  }
}
