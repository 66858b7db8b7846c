/**
 * The sequencer: one script per inbound batch of one room assigns seqs, dedupes cids, appends
 * to the room's stream and publishes each message on the room's channel, atomically (scripts.ts
 * PUBLISH). What the shard awaits per batch: `publish()` per room of the batch, all issued in
 * the same tick so node-redis writes them as one pipeline.
 */
import type { RedisConnection, Reply } from './connection.js';
import { newEpochCandidate } from './epoch.js';
import { RedisProtocolError } from './errors.js';
import { cidKey, cursorKey, metaKey, redactKey, roomChannel, streamKey } from './keys.js';
import { PUBLISH } from './scripts.js';

export interface PublishInput {
  readonly user: string;
  /** Client id for dedupe, or null. */
  readonly cid: string | null;
  readonly ts: number;
  /** The encoded `msg` frame; its seq placeholder (wire.ts) is at `seqOffset`, or -1 for none. */
  readonly frame: Uint8Array;
  readonly seqOffset: number;
}

export interface PublishOutcome {
  readonly seq: number;
  /** True when `cid` repeated a message of the window: `seq` is the original's; nothing was added. */
  readonly duplicate: boolean;
}

export interface PublishResult {
  readonly epoch: string;
  /** True when this call created the room's epoch (a new room, or a Redis that lost its data). */
  readonly newEpoch: boolean;
  readonly outcomes: PublishOutcome[];
}

export interface SequencerLimits {
  /** Messages a room's stream keeps (XADD MAXLEN ~, so at least this many). */
  historyLimit: number;
  cidWindowMs: number;
  cidWindowMessages: number;
  /** Keys of a room expire this long after its last publish or read; 0 = never. */
  roomTtlMs: number;
  /** Messages in one script call at most (a larger batch is split). */
  maxBatch: number;
}

export const DEFAULT_SEQUENCER_LIMITS: SequencerLimits = {
  historyLimit: 1000, cidWindowMs: 10 * 60_000, cidWindowMessages: 1000, roomTtlMs: 0, maxBatch: 256,
};

function num(r: Reply | undefined, what: string): number {
  if (typeof r === 'number') return r;
  if (Buffer.isBuffer(r)) {
    const n = Number(r.toString('latin1'));
    if (Number.isFinite(n)) return n;
  }
  throw new RedisProtocolError(`publish script: ${what} is not a number`);
}

export class RedisSequencer {
  constructor(private readonly conn: RedisConnection, private readonly limits: SequencerLimits = DEFAULT_SEQUENCER_LIMITS) {}

  /** Sequences `msgs` (in order) in `room`. Throws RedisUnavailableError when Redis cannot answer in time. */
  async publish(room: string, msgs: readonly PublishInput[]): Promise<PublishResult> {
    if (msgs.length === 0) throw new RangeError('publish: no messages');
    const parts: Promise<Reply>[] = [];
    for (let i = 0; i < msgs.length; i += this.limits.maxBatch) parts.push(this.call(room, msgs.slice(i, i + this.limits.maxBatch)));
    const replies = await Promise.all(parts);
    let epoch = '';
    let newEpoch = false;
    const outcomes: PublishOutcome[] = [];
    for (const r of replies) {
      if (!Array.isArray(r) || r.length < 2 || !Buffer.isBuffer(r[0])) throw new RedisProtocolError('publish script: bad reply');
      const e = r[0].toString('latin1');
      // Split batches run in order on one connection; an epoch change between them means Redis
      // lost the room in between: report the last one, the shard resets the room.
      epoch = e;
      newEpoch ||= num(r[1], 'new-epoch flag') === 1;
      for (let j = 2; j + 1 < r.length; j += 2) outcomes.push({ seq: num(r[j], 'seq'), duplicate: num(r[j + 1], 'dup flag') === 1 });
    }
    if (outcomes.length !== msgs.length) throw new RedisProtocolError(`publish script: ${outcomes.length} outcomes for ${msgs.length} messages`);
    return { epoch, newEpoch, outcomes };
  }

  private call(room: string, msgs: readonly PublishInput[]): Promise<Reply> {
    const meta = metaKey(room);
    const keys: string[] = [meta, streamKey(room), cursorKey(room)];
    const args: (string | Buffer)[] = [
      newEpochCandidate(), String(this.limits.historyLimit), String(this.limits.cidWindowMs),
      String(this.limits.cidWindowMessages), roomChannel(room), String(this.limits.roomTtlMs), String(msgs.length),
    ];
    for (const m of msgs) {
      keys.push(m.cid === null ? meta : cidKey(room, m.user, m.cid));
      if (m.seqOffset !== -1 && (m.seqOffset < 0 || m.seqOffset + 8 > m.frame.length)) throw new RangeError(`publish: seqOffset ${m.seqOffset} outside the frame`);
      args.push(m.user, m.cid ?? '', String(m.ts), Buffer.from(m.frame.buffer, m.frame.byteOffset, m.frame.byteLength), String(m.seqOffset));
    }
    keys.push(redactKey(room)); // last: the script refreshes its TTL with the room's
    return PUBLISH.run(this.conn, keys, args, `publish to ${room}`);
  }
}
