/**
 * Room permissions from a token's `rooms` claim, compiled once per token into a matcher that
 * answers `allows(identity, action, room)` in O(number of patterns) with no allocation. Pure.
 *
 * A pattern is an exact room name, or a prefix ending in `*` (`team-42:*` matches every room that
 * starts with `team-42:`; `*` alone matches every room). A room matched by several entries gets
 * the union of their actions. Without a `rooms` claim every room and action is allowed.
 */
import { MAX_ROOM_BYTES, isValidRoom } from '../protocol/frames.js';

export const ACTIONS = ['join', 'pub', 'hist', 'who', 'read'] as const;
export type RoomAction = typeof ACTIONS[number];

/** Bit of each action in a compiled mask. */
export const ACTION_BIT: Readonly<Record<RoomAction, number>> = { join: 1, pub: 2, hist: 4, who: 8, read: 16 };

/** Most entries a `rooms` claim may hold (a token is a credential, not an access-control list). */
export const MAX_ROOM_PATTERNS = 256;

export interface RoomMatcher {
  /** Exact room name -> action mask. */
  readonly exact: ReadonlyMap<string, number>;
  /** Prefix patterns (without their `*`) and their masks, in claim order. */
  readonly prefixes: readonly string[];
  readonly prefixMasks: readonly number[];
}

/** Why a `rooms` claim is refused (the token is then `invalid`). */
export class RoomsClaimError extends Error {
  constructor(message: string) {
    super(`rooms claim ${message}`);
    this.name = 'RoomsClaimError';
  }
}

const ROOM_CHARS = /^[A-Za-z0-9_.:@-]*$/;

/** Compiles a `rooms` claim; throws RoomsClaimError naming the first bad entry. */
export function compileRooms(claim: unknown): RoomMatcher {
  if (!Array.isArray(claim)) throw new RoomsClaimError('must be an array');
  if (claim.length > MAX_ROOM_PATTERNS) throw new RoomsClaimError(`has ${claim.length} entries, more than ${MAX_ROOM_PATTERNS}`);
  const exact = new Map<string, number>();
  const prefixIndex = new Map<string, number>();
  const prefixes: string[] = [];
  const prefixMasks: number[] = [];
  claim.forEach((entry: unknown, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new RoomsClaimError(`[${i}] must be an object {match, allow}`);
    const { match, allow } = entry as { match?: unknown; allow?: unknown };
    if (typeof match !== 'string') throw new RoomsClaimError(`[${i}].match must be a string`);
    const mask = compileAllow(allow, i);
    if (match.endsWith('*')) {
      const prefix = match.slice(0, -1);
      if (prefix.length >= MAX_ROOM_BYTES || !ROOM_CHARS.test(prefix)) {
        throw new RoomsClaimError(`[${i}].match ${JSON.stringify(match)} is not a room prefix ending in *`);
      }
      const at = prefixIndex.get(prefix);
      if (at === undefined) {
        prefixIndex.set(prefix, prefixes.length);
        prefixes.push(prefix);
        prefixMasks.push(mask);
      } else {
        prefixMasks[at]! |= mask;
      }
    } else {
      if (!isValidRoom(match)) throw new RoomsClaimError(`[${i}].match ${JSON.stringify(match)} is not a room name or a prefix ending in *`);
      exact.set(match, (exact.get(match) ?? 0) | mask);
    }
  });
  return { exact, prefixes, prefixMasks };
}

function compileAllow(allow: unknown, i: number): number {
  if (!Array.isArray(allow)) throw new RoomsClaimError(`[${i}].allow must be an array of ${ACTIONS.join('|')}`);
  let mask = 0;
  for (const a of allow) {
    const bit = typeof a === 'string' && Object.hasOwn(ACTION_BIT, a) ? ACTION_BIT[a as RoomAction] : 0;
    if (bit === 0) throw new RoomsClaimError(`[${i}].allow has ${JSON.stringify(a)}, not one of ${ACTIONS.join('|')}`);
    mask |= bit;
  }
  return mask;
}

/** The actions (as a mask) a matcher grants on `room`; `null` (no claim) grants everything. */
export function roomMask(rooms: RoomMatcher | null, room: string): number {
  if (rooms === null) return 31;
  let mask = rooms.exact.get(room) ?? 0;
  const { prefixes, prefixMasks } = rooms;
  for (let i = 0; i < prefixes.length; i++) {
    if (room.startsWith(prefixes[i]!)) mask |= prefixMasks[i]!;
  }
  return mask;
}

/** True when the identity may do `action` in `room`. `leave` needs no permission. */
export function allows(identity: { readonly rooms: RoomMatcher | null }, action: RoomAction, room: string): boolean {
  return (roomMask(identity.rooms, room) & ACTION_BIT[action]) !== 0;
}
