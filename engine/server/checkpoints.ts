/**
 * The engine's WAL checkpoint thread (store 'sqlite', checkpointIntervalMs > 0): one worker
 * (workers/store/checkpoint-worker.ts) that runs PASSIVE checkpoints of the shared database, so
 * that copying the log into the database file, and its fsync, happen off the shards' commits.
 * The shards then open the store with a high autoCheckpointPages (CHECKPOINT_BACKSTOP_PAGES) as
 * a backstop only. It starts once every shard has opened the store (the file exists then) and
 * stops after the shards did. A failure is logged once and not retried: the shards' backstop
 * keeps the log bounded (docs/LIMITS.md). The main thread itself never opens the database.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';

/** The shards' own automatic checkpoint while the thread runs: 16384 pages (64 MiB of log at 4 KiB pages). */
export const CHECKPOINT_BACKSTOP_PAGES = 16384;
/** Without the thread: SQLite's default. */
export const CHECKPOINT_DEFAULT_PAGES = 1000;
const STOP_TIMEOUT_MS = 2000;

/** What the thread has done (its progress reports), for /metrics. */
export interface CheckpointStats {
  /** Checkpoints that copied pages, and the pages they copied. */
  checkpoints: number;
  pages: number;
  /** The longest log (pages) a checkpoint found. */
  maxLogPages: number;
  /** 1 once the thread has stopped on an error (the shards' backstop checkpoints then). */
  failed: number;
}

export class CheckpointThread {
  private worker: Worker | null = null;
  readonly stats: CheckpointStats = { checkpoints: 0, pages: 0, maxLogPages: 0, failed: 0 };

  constructor(private readonly dir: string, private readonly intervalMs: number, private readonly log: Logger) {}

  start(): void {
    if (this.worker !== null || this.intervalMs <= 0) return;
    const w = new Worker(new URL('../../workers/store/checkpoint-worker.js', import.meta.url), {
      workerData: { dir: this.dir, intervalMs: this.intervalMs, progress: true },
    });
    this.worker = w;
    w.on('message', (m: { error?: { code: string; message: string }; progress?: { checkpoints: number; pagesCheckpointed: number; maxLogPages: number } }) => {
      if (m.progress !== undefined) {
        this.stats.checkpoints = m.progress.checkpoints;
        this.stats.pages = m.progress.pagesCheckpointed;
        this.stats.maxLogPages = m.progress.maxLogPages;
      }
      if (m.error !== undefined) {
        this.stats.failed = 1;
        this.log.warn({ event: 'checkpoint_thread_failed', code: m.error.code, err: m.error.message },
          'WAL checkpoint thread stopped; the shards checkpoint in their commits now');
      }
    });
    w.on('error', (err) => { this.stats.failed = 1; this.log.warn({ event: 'checkpoint_thread_failed', err: err.message }, 'WAL checkpoint thread crashed'); });
    w.on('exit', () => { if (this.worker === w) this.worker = null; });
  }

  /** Stops the thread (it closes its connection); resolves once it has exited. Safe to call twice. */
  async stop(): Promise<void> {
    const w = this.worker;
    if (w === null) return;
    this.worker = null;
    const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    w.postMessage('stop');
    const timer = setTimeout(() => { void w.terminate(); }, STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
}
