/**
 * Identity in the default, open mode (docs/PROTOCOL.md, Transport). Pure: no I/O.
 */
import { isValidUser } from './frames.js';

/**
 * The user from `?user=ID`: null when absent, false when invalid (empty, repeated, badly
 * percent-encoded, or bytes outside [A-Za-z0-9_.@-], or longer than 64).
 */
export function parseUserQuery(query: string): string | null | false {
  let user: string | null = null;
  if (query === '') return null;
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    if (k !== 'user') continue;
    if (user !== null) return false;
    let v: string;
    try {
      v = decodeURIComponent(eq < 0 ? '' : part.slice(eq + 1));
    } catch {
      return false;
    }
    if (!isValidUser(v)) return false;
    user = v;
  }
  return user;
}
