/**
 * The webhook sender (docs/API.md, "Webhooks"): events are queued (bounded in entries and
 * bytes), sent in batches (by count and time) as one signed JSON POST at a time, retried with
 * jittered exponential back-off for a bounded time, then dropped and counted. Nothing here
 * knows of uWS or the shards: the engine calls `emit()`; `stats()` feeds the metrics module.
 */
import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { SIGNATURE_HEADER, signBody } from './webhook-signature.js';
import { resolveWebhookOptions, type ResolvedWebhookOptions, type WebhookOptions } from './webhook-options.js';

export { verifySignature, signBody, SIGNATURE_HEADER, type SignatureCheck } from './webhook-signature.js';
export { WEBHOOK_OPTION_SPECS, resolveWebhookOptions, type WebhookOptions, type ResolvedWebhookOptions } from './webhook-options.js';

export type WebhookEvent =
  | { type: 'message.published'; room: string; epoch: string; seq: number; ts: number; from: string; body: unknown }
  | { type: 'room.occupied' | 'room.vacated'; room: string; ts: number }
  | { type: 'member.joined' | 'member.left'; room: string; user: string; conn: string; ts: number; info?: Record<string, unknown> };

export type DropReason = 'overflow' | 'expired' | 'rejected' | 'shutdown';

export interface WebhookStats {
  queued: number;
  queuedBytes: number;
  inFlight: number;
  enqueued: number;
  delivered: number;
  batches: number;
  attempts: number;
  failedAttempts: number;
  dropped: Record<DropReason, number>;
}

interface Item { json: string; bytes: number; at: number }
type Outcome = 'ok' | 'retry' | 'reject';

/** JSON with bytes as {"$base64": "..."} and bigints as numbers (or strings when unsafe). */
function replacer(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key];
  if (raw instanceof Uint8Array) return { $base64: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64') };
  if (typeof raw === 'bigint') return Number.isSafeInteger(Number(raw)) ? Number(raw) : raw.toString();
  return value;
}

export class WebhookSender {
  readonly options: ResolvedWebhookOptions;
  private readonly url: URL;
  private readonly agent: http.Agent;
  private readonly nonce = randomBytes(6).toString('base64url');
  private queue: Item[] = [];
  private head = 0;
  private queuedBytes = 0;
  /** True while run() waits for a batch to fill (an emit may cut that short, not a back-off). */
  private batchWait = false;
  private next = 0;
  private running = false;
  private closing = false;
  private deadline = Infinity;
  private inFlight = 0;
  private timer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;
  private req: http.ClientRequest | null = null;
  private idle: Promise<void> = Promise.resolve();
  private readonly counters = { enqueued: 0, delivered: 0, batches: 0, attempts: 0, failedAttempts: 0 };
  private readonly dropped: Record<DropReason, number> = { overflow: 0, expired: 0, rejected: 0, shutdown: 0 };

  constructor(opts: WebhookOptions, private readonly onDrop?: (reason: DropReason, events: number, detail: string) => void) {
    this.options = resolveWebhookOptions(opts);
    this.url = new URL(this.options.url);
    const Agent = this.url.protocol === 'https:' ? https.Agent : http.Agent;
    this.agent = new Agent({ keepAlive: true, maxSockets: 1 });
  }

  /**
   * Queues an event. Returns false when it was dropped (queue full, or closing), counted in
   * `dropped`. Throws TypeError for an event that cannot be serialised as JSON.
   */
  emit(event: WebhookEvent): boolean {
    if (this.closing) return this.drop('shutdown', 1, 'emit after close()');
    const id = event.type === 'message.published'
      ? `${event.room}:${event.epoch}:${event.seq}`
      : `${event.type}:${this.nonce}:${(this.next++).toString(36)}`;
    let json: string;
    try {
      json = JSON.stringify({ id, ...event }, replacer);
    } catch (e) {
      throw new TypeError(`webhook event ${event.type} cannot be serialised as JSON: ${(e as Error).message}`);
    }
    const bytes = Buffer.byteLength(json);
    const o = this.options;
    if (this.queue.length - this.head >= o.queueEntries || this.queuedBytes + bytes > o.queueBytes) {
      return this.drop('overflow', 1, `queue full (${o.queueEntries} events / ${o.queueBytes} bytes)`);
    }
    this.queue.push({ json, bytes, at: Date.now() });
    this.queuedBytes += bytes;
    this.counters.enqueued++;
    if (!this.running) {
      this.running = true;
      this.idle = this.run();
    } else if (this.batchWait && this.queue.length - this.head >= o.batchMax) {
      this.interrupt();
    }
    return true;
  }

  stats(): WebhookStats {
    return {
      queued: this.queue.length - this.head, queuedBytes: this.queuedBytes, inFlight: this.inFlight,
      ...this.counters, dropped: { ...this.dropped },
    };
  }

  /**
   * Stops taking events and sends what is queued, within `deadlineMs` (default the option
   * closeTimeoutMs); what is left then is dropped ('shutdown') and the request in flight is
   * aborted. Resolves when no timer, request or socket of this sender is left. Safe to call twice.
   */
  async close(deadlineMs = this.options.closeTimeoutMs): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.deadline = Date.now() + deadlineMs;
      const t = setTimeout(() => { this.deadline = 0; this.req?.destroy(new Error('webhook close deadline')); this.interrupt(); }, deadlineMs);
      this.interrupt();
      try {
        await this.idle;
      } finally {
        clearTimeout(t);
        this.agent.destroy();
      }
    }
    await this.idle;
  }

  private async run(): Promise<void> {
    const o = this.options;
    while (this.queue.length > this.head) {
      const waitMs = this.queue[this.head]!.at + o.batchMs - Date.now();
      if (!this.closing && this.queue.length - this.head < o.batchMax && waitMs > 0) {
        this.batchWait = true;
        await this.sleep(waitMs);
        this.batchWait = false;
        continue;
      }
      await this.deliver(this.take());
    }
    this.running = false;
  }

  /** Takes the next batch: up to batchMax events and batchMaxBytes (always at least one). */
  private take(): Item[] {
    const o = this.options;
    const batch: Item[] = [];
    let bytes = 0;
    while (this.head < this.queue.length && batch.length < o.batchMax) {
      const it = this.queue[this.head]!;
      if (batch.length > 0 && bytes + it.bytes > o.batchMaxBytes) break;
      batch.push(it);
      bytes += it.bytes;
      this.head++;
    }
    this.queuedBytes -= bytes;
    if (this.head === this.queue.length) { this.queue = []; this.head = 0; } else if (this.head > 1024 && this.head * 2 > this.queue.length) { this.queue = this.queue.slice(this.head); this.head = 0; }
    return batch;
  }

  private async deliver(batch: Item[]): Promise<void> {
    const o = this.options;
    const body = `{"events":[${batch.map((b) => b.json).join(',')}]}`;
    const started = Date.now();
    this.inFlight = batch.length;
    try {
      for (let attempt = 0; ; attempt++) {
        if (Date.now() >= this.deadline) { this.drop('shutdown', batch.length, 'close deadline passed'); return; }
        const outcome = await this.post(body);
        if (outcome === 'ok') {
          this.counters.delivered += batch.length;
          this.counters.batches++;
          return;
        }
        this.counters.failedAttempts++;
        if (outcome === 'reject') { this.drop('rejected', batch.length, 'receiver answered 4xx'); return; }
        // Equal jitter: half the exponential step fixed, half random, so retries spread out
        // but the first one still comes within retryBaseMs.
        const step = Math.min(o.retryMaxMs, o.retryBaseMs * 2 ** attempt);
        const delay = step / 2 + Math.random() * (step / 2);
        if (Date.now() + delay - started > o.retryForMs) { this.drop('expired', batch.length, `undelivered after ${o.retryForMs} ms`); return; }
        await this.sleep(this.closing ? Math.min(delay, Math.max(0, this.deadline - Date.now())) : delay);
      }
    } finally {
      this.inFlight = 0;
    }
  }

  private post(body: string): Promise<Outcome> {
    this.counters.attempts++;
    const payload = Buffer.from(body);
    const signature = signBody(this.options.secret, payload, Math.floor(Date.now() / 1000));
    const request = this.url.protocol === 'https:' ? https.request : http.request;
    return new Promise<Outcome>((resolve) => {
      const req = request(this.url, {
        method: 'POST', agent: this.agent, timeout: this.options.timeoutMs,
        headers: {
          'content-type': 'application/json', 'content-length': payload.length,
          'user-agent': 'shardchat-webhooks', [SIGNATURE_HEADER]: signature,
        },
      }, (res) => {
        const status = res.statusCode ?? 0;
        const outcome: Outcome = status >= 200 && status < 300 ? 'ok' : status === 408 || status === 429 || status >= 500 ? 'retry' : 'reject';
        res.resume();
        res.on('end', () => resolve(outcome));
        // A response cut short is a failure, whatever its status said (the first resolve wins).
        res.on('close', () => resolve(res.complete ? outcome : 'retry'));
        res.on('error', () => resolve('retry'));
      });
      this.req = req;
      req.on('timeout', () => req.destroy(new Error(`no answer in ${this.options.timeoutMs} ms`)));
      req.on('error', () => resolve('retry'));
      req.on('close', () => { if (this.req === req) this.req = null; });
      req.end(payload);
    });
  }

  /** A timer the close() path can cut short; never left behind. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = () => {
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = null;
        this.wake = null;
        resolve();
      };
      this.timer = setTimeout(this.wake, ms);
    });
  }

  private interrupt(): void {
    this.wake?.();
  }

  private drop(reason: DropReason, events: number, detail: string): false {
    this.dropped[reason] += events;
    this.onDrop?.(reason, events, detail);
    return false;
  }
}
