/** A new epoch candidate: 12 random base-36 characters (the protocol allows 8 to 20 ASCII). */
import { randomBytes } from 'node:crypto';

export function newEpochCandidate(): string {
  const b = randomBytes(12);
  let s = '';
  for (let i = 0; i < 12; i++) s += (b[i]! % 36).toString(36);
  return s;
}
