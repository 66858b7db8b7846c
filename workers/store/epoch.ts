/** A room epoch: a new one each time a store creates a room, never reused. */
import { randomBytes } from 'node:crypto';

export function newEpoch(): string {
  return Date.now().toString(36) + randomBytes(6).toString('base64url');
}
