/**
 * The engine's shutdown (drain): refuse new work, let every shard handle what it has queued and
 * deliver its output (until drainTimeoutMs), stop the shards' supervision, close every
 * connection with 1001 (at once or spread over drainSpreadMs), close the listeners and, shortly
 * before the deadline, whatever sockets are still open, then stop the workers and release the
 * data directory. The sequence lives here; the state it acts on is the engine's, reached
 * through its host.
 */
import type { Logger } from 'pino';
import { CLOSE_GOING_AWAY } from '../errors.js';
import type { ShardLink } from './link.js';
import type { TemplatedApp, WebSocket } from './uws.js';

/**
 * Sockets still open this long before the drain deadline (idle HTTP keep-alives such as a
 * Prometheus scraper, WebSocket peers that never answered the 1001) are closed then, so the
 * process can exit within the deadline.
 */
const SOCKET_CLOSE_MARGIN_MS = 100;
/** A drain spread over drainSpreadMs closes one slice of the connections this often. */
const DRAIN_SLICE_MS = 10;

/** What the drain needs of the engine, in the order it uses it. */
export interface DrainHost<C extends { closed: boolean }> {
  readonly log: Logger;
  readonly links: readonly ShardLink[];
  readonly conns: ReadonlyMap<number, WebSocket<C>>;
  readonly drainTimeoutMs: number;
  readonly drainSpreadMs: number;
  /** Resolves once every shard ran (a failed start is ignored by the drain). */
  readonly started: Promise<void>;
  /** From now on: new upgrades get 503, requests and server publishes `shutting_down`. */
  beginDrain(): void;
  /** Delivers everything a shard has published in its outbound ring. */
  deliverAll(link: ShardLink): void;
  /** The shards drained (or the deadline passed): stop routing, supervising, sweeping. */
  stopShards(): void;
  /** After the 1001s: closes the listen sockets; returns the apps whose sockets must close by the deadline. */
  closeListeners(): TemplatedApp[];
  /** Stops the event-loop delay monitor. */
  stopLoopDelay(): void;
  /** Rejects the server publishes no shard will answer now. */
  rejectPending(): void;
  /** Stops the worker pool (resolves when its threads are gone). */
  destroyPool(): Promise<void>;
  /** Every shard has stopped and closed its store: release the data directory, drop the app. */
  stopped(): void;
}

/**
 * Drains and stops (see the module comment). Resolves when nothing of the engine is left
 * running; the engine calls it once (its close() keeps the promise).
 */
export async function drain<C extends { closed: boolean }>(host: DrainHost<C>): Promise<void> {
  const started = performance.now();
  const { links, log } = host;
  host.beginDrain();
  log.info({ event: 'drain_started', connections: host.conns.size }, 'drain started');
  await host.started.catch(() => undefined);
  for (const l of links) l.drainNow();
  const deadline = started + host.drainTimeoutMs;
  // Deliver as the shards drain (the pumps do too; this also catches a shard whose task has
  // already resolved after writing OUT_DRAINED), until every shard has answered IN_DRAIN.
  for (;;) {
    for (const l of links) host.deliverAll(l);
    if (links.every((l) => l.drained || l.failed) || performance.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const forced = !links.every((l) => l.drained || l.failed);
  host.stopShards();
  await closeAll(host.conns, host.drainSpreadMs, deadline);
  closeLeftoverSockets(host.closeListeners(), deadline);
  host.stopLoopDelay();
  for (const l of links) l.reader.wake();
  host.rejectPending();
  await host.destroyPool();
  await Promise.allSettled(links.map((l) => l.task));
  for (const l of links) l.stop();
  host.stopped();
  const ms = Math.round(performance.now() - started);
  if (forced) log.warn({ event: 'drain_forced', ms }, 'drain deadline passed; stopped what was left');
  log.info({ event: 'drain_finished', ms, forced }, 'drain finished');
}

/**
 * Closes every connection with 1001: at once, or spread over drainSpreadMs (in slices every
 * DRAIN_SLICE_MS, finishing before the deadline) so that clients do not all reconnect in one
 * instant.
 */
async function closeAll<C extends { closed: boolean }>(conns: ReadonlyMap<number, WebSocket<C>>, spreadMs: number, deadline: number): Promise<void> {
  const all = [...conns.values()];
  const window = Math.min(spreadMs, deadline - SOCKET_CLOSE_MARGIN_MS - performance.now());
  const slices = window > DRAIN_SLICE_MS ? Math.floor(window / DRAIN_SLICE_MS) : 1;
  const per = Math.ceil(all.length / slices);
  for (let i = 0; i < all.length; i += per) {
    if (i > 0) await new Promise((r) => setTimeout(r, DRAIN_SLICE_MS));
    for (const ws of all.slice(i, i + per)) if (!ws.getUserData().closed) ws.end(CLOSE_GOING_AWAY, 'server shutting down');
  }
}

/**
 * uWS keeps an idle keep-alive HTTP socket (and a WebSocket whose peer never answers the close)
 * open for its own timeouts, about 10 s, which holds the process beyond the drain deadline.
 * app.close() closes every socket of an app; it runs shortly before the deadline, by an unref'd
 * timer: a process with nothing else left exits at once, and the drain does not wait for it.
 */
function closeLeftoverSockets(apps: TemplatedApp[], deadline: number): void {
  if (apps.length === 0) return;
  // App.close() is in uWS 20.30 (the one this package depends on) but not in its typings.
  const close = (a: TemplatedApp): void => { (a as TemplatedApp & { close?: () => void }).close?.(); };
  const timer = setTimeout(() => { for (const a of apps) close(a); }, Math.max(0, deadline - SOCKET_CLOSE_MARGIN_MS - performance.now()));
  timer.unref();
}
