/**
 * Worker entry for the Checkpointer: workerData { dir, intervalMs, progress? }. Checkpoints every
 * intervalMs until it is sent 'stop', then replies with its counts and exits. With `progress`, it
 * also posts { progress: report } after each checkpoint that copied pages. An error is
 * posted as { error: { code, message } } and ends the worker (the log then grows until the
 * shards' autoCheckpointPages backstop).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { StoreError } from '../../engine/store-dir.js';
import { Checkpointer } from './checkpointer.js';

export interface CheckpointWorkerInput { dir: string; intervalMs: number; progress?: boolean }
export interface CheckpointWorkerReport { checkpoints: number; pagesCheckpointed: number; maxLogPages: number }

const { dir, intervalMs, progress } = workerData as CheckpointWorkerInput;
const report: CheckpointWorkerReport = { checkpoints: 0, pagesCheckpointed: 0, maxLogPages: 0 };
let ck: Checkpointer | null = null;
const fail = (e: unknown): void => {
  clearInterval(timer);
  ck?.close();
  parentPort!.postMessage({ error: { code: e instanceof StoreError ? e.code : 'STORE_IO', message: (e as Error).message } });
  parentPort!.close();
};
const timer = setInterval(() => {
  try {
    ck ??= new Checkpointer(dir);
    const r = ck.checkpoint();
    if (r.busy) return;
    report.checkpoints++;
    report.pagesCheckpointed += r.checkpointedPages;
    report.maxLogPages = Math.max(report.maxLogPages, r.logPages);
    if (progress === true && r.checkpointedPages > 0) parentPort!.postMessage({ progress: { ...report } });
  } catch (e) {
    fail(e);
  }
}, intervalMs);
parentPort!.on('message', (m) => {
  if (m !== 'stop') return;
  clearInterval(timer);
  ck?.close();
  parentPort!.postMessage(report);
  parentPort!.close();
});
