/**
 * Pump: keeps `window` pubs in flight on one connection, `limit` acks in total, or until stopped
 * or the connection closes. A retryable error (`overloaded`; more with `retry`) is retried after
 * its retryAfterMs as a new send; every reply is recorded. Each body is { p: label, n } with n
 * the send order. Shared by the protocol-guarantees suite and the cluster failure tests.
 */
import assert from 'node:assert/strict';
import type { TestClient, Frame } from './client.js';

export interface Ack { n: number; seq: number; afterClose: boolean }

export class Pump {
  readonly acks: Ack[] = [];
  readonly errs: Frame[] = [];
  /** Requests that got no reply because the connection closed (or timed out). */
  readonly unanswered: { n: number; afterClose: boolean }[] = [];
  sent = 0;
  /** Called synchronously on every ack (after it is recorded). */
  onAck: ((a: Ack) => void) | null = null;
  /** Error codes resent after retryAfterMs. */
  retry = new Set(['overloaded']);
  private inflight = 0;
  private stopped = false;
  private waiters: (() => void)[] = [];
  private timers = new Set<NodeJS.Timeout>();

  constructor(
    readonly c: TestClient,
    readonly room: string,
    readonly label: string,
    readonly window: number,
    readonly limit = Infinity,
    readonly flags: { closing: boolean } = { closing: false },
  ) {}

  start(): this {
    for (let i = 0; i < this.window; i++) this.one();
    return this;
  }

  private full(): boolean {
    return this.acks.length + this.inflight >= this.limit;
  }

  private one(): void {
    if (this.stopped || this.full() || !this.c.isOpen) {
      this.check();
      return;
    }
    const n = this.sent++;
    const afterClose = this.flags.closing;
    this.inflight++;
    this.c.request({ t: 'pub', room: this.room, body: { p: this.label, n } }, 15_000).then(
      (r) => {
        this.inflight--;
        if (r.t === 'ack') {
          const a = { n, seq: r.seq as number, afterClose };
          this.acks.push(a);
          this.onAck?.(a);
          this.one();
        } else {
          this.errs.push({ ...r, n, afterClose });
          if (this.retry.has(r.code as string)) {
            // resend later: a new request, a new place in the send order
            const tm = setTimeout(() => {
              this.timers.delete(tm);
              this.one();
            }, Math.max(1, Number(r.retryAfterMs) || 5));
            this.timers.add(tm);
          } else this.one();
        }
        this.check();
      },
      () => {
        this.inflight--;
        this.unanswered.push({ n, afterClose });
        this.check();
      },
    );
  }

  private check(): void {
    if (this.inflight === 0 && this.timers.size === 0 && (this.stopped || this.acks.length >= this.limit || !this.c.isOpen)) {
      for (const w of this.waiters.splice(0)) w();
    }
  }

  /** Resolves when nothing is in flight any more (after stop(), the limit, or the close). */
  done(): Promise<void> {
    return new Promise((r) => {
      this.waiters.push(r);
      this.check();
    });
  }

  stop(): Promise<void> {
    this.stopped = true;
    for (const tm of this.timers) clearTimeout(tm);
    this.timers.clear();
    return this.done();
  }

  /**
   * TCP keeps a connection's frames in order: a request followed by one that was answered was read
   * by the engine, so it must have been answered too (guarantee 2: nothing is dropped silently).
   * Only a tail of requests still in flight when the connection closed may go unanswered.
   */
  assertUnansweredIsATail(): void {
    const answered = [...this.acks.map((a) => a.n), ...this.errs.map((e) => e.n as number)];
    const maxAnswered = Math.max(-1, ...answered);
    const dropped = this.unanswered.filter((u) => u.n < maxAnswered);
    assert.deepEqual(dropped.map((u) => u.n), [], `${this.label}: requests read by the engine but never answered (request #${maxAnswered} was answered after them)`);
  }

  maxAckedSeq(): number {
    return this.acks.reduce((m, a) => Math.max(m, a.seq), 0);
  }

  /** One connection's pubs get seqs in the order the connection sent them. */
  assertSendOrder(): void {
    const bySend = [...this.acks].sort((x, y) => x.n - y.n).map((a) => a.seq);
    for (let i = 1; i < bySend.length; i++) {
      assert.ok(bySend[i]! > bySend[i - 1]!, `${this.label}: pub #${i} got seq ${bySend[i]} after seq ${bySend[i - 1]} (send order broken)`);
    }
  }
}

export function sumAcks(pumps: Pump[]): number {
  return pumps.reduce((s, p) => s + p.acks.length, 0);
}
