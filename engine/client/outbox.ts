/**
 * Publishes not yet acknowledged, in the order the app made them: those waiting for the room to
 * be joined (offline) and those sent but not acked. Bounded in entries and bytes; each entry
 * has its own timeout. After a reconnect every unacked entry is sent again with its `cid`, which
 * the engine deduplicates within its window (stored once).
 */
import { QueueFullError, TimeoutError, type ClientError } from './errors.js';

export interface Pending {
  cid: string;
  room: string;
  body: unknown;
  bytes: number;
  /** ref of the pub on the current connection, or -1 while not sent. */
  ref: number;
  resolve: (r: { seq: number }) => void;
  reject: (e: ClientError) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class Outbox {
  private readonly items: Pending[] = [];
  private bytes = 0;

  constructor(private readonly maxCount: number, private readonly maxBytes: number, private readonly timeoutMs: number) {}

  get size(): number { return this.items.length; }
  get byteSize(): number { return this.bytes; }

  /** Adds a publish; throws QueueFullError when it does not fit. */
  add(room: string, cid: string, body: unknown, bytes: number, resolve: Pending['resolve'], reject: Pending['reject']): Pending {
    if (this.items.length >= this.maxCount) throw new QueueFullError(`publish queue holds ${this.maxCount} entries (maxQueue)`);
    if (this.bytes + bytes > this.maxBytes) throw new QueueFullError(`publish queue would exceed ${this.maxBytes} bytes (maxQueueBytes)`);
    const p: Pending = {
      cid, room, body, bytes, ref: -1, resolve, reject,
      timer: setTimeout(() => this.fail(p, new TimeoutError(`publish to ${room} not acknowledged within ${this.timeoutMs} ms`)), this.timeoutMs),
    };
    this.items.push(p);
    this.bytes += bytes;
    return p;
  }

  /** Entries for `room` not yet sent on this connection, oldest first. */
  unsent(room: string): Pending[] {
    return this.items.filter((p) => p.room === room && p.ref < 0);
  }

  has(p: Pending): boolean { return this.items.includes(p); }

  byRef(ref: number): Pending | undefined {
    return this.items.find((p) => p.ref === ref);
  }

  /** The connection is gone: every entry becomes unsent again. */
  unsendAll(): void {
    for (const p of this.items) p.ref = -1;
  }

  done(p: Pending, seq: number): void {
    if (!this.remove(p)) return;
    p.resolve({ seq });
  }

  fail(p: Pending, e: ClientError): void {
    if (!this.remove(p)) return;
    p.reject(e);
  }

  failRoom(room: string, e: () => ClientError): void {
    for (const p of this.items.filter((x) => x.room === room)) this.fail(p, e());
  }

  failAll(e: () => ClientError): void {
    for (const p of [...this.items]) this.fail(p, e());
  }

  private remove(p: Pending): boolean {
    const i = this.items.indexOf(p);
    if (i < 0) return false;
    this.items.splice(i, 1);
    this.bytes -= p.bytes;
    clearTimeout(p.timer);
    return true;
  }
}
