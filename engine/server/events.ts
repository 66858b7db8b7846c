/**
 * Webhook events from the shards (docs/API.md, "As built"): decodes one OUT_EVENT record body
 * (a MessagePack map written by workers/events.ts) into the WebhookEvent the sender takes. Runs
 * only when webhooks are on.
 */
import { unpack } from 'msgpackr';
import type { WebhookEvent } from './webhooks.js';

const TYPES = new Set(['message.published', 'room.occupied', 'room.vacated', 'member.joined', 'member.left']);

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : NaN);

/**
 * The event in `body` (a view of the ring: copied before decoding, as msgpackr cannot read
 * strings from a SharedArrayBuffer view) for `room`; throws when it is not one.
 */
export function eventFromShard(room: string, body: Uint8Array): WebhookEvent {
  const e = unpack(Buffer.from(body)) as Record<string, unknown>;
  if (e === null || typeof e !== 'object' || typeof e.type !== 'string' || !TYPES.has(e.type)) throw new TypeError('not a shard event');
  const ev: Record<string, unknown> = { ...e, room, ts: num(e.ts) };
  if (e.seq !== undefined) ev.seq = num(e.seq);
  return ev as unknown as WebhookEvent;
}
