/**
 * Identity in the default, open mode (docs/PROTOCOL.md, Transport). Pure: no I/O.
 */
import { isValidUser } from './frames.js';

/**
 * One parameter of a query string, percent-decoded: null when absent, false when repeated or
 * badly percent-encoded. A key without `=` has the value ''.
 */
export function queryParam(query: string, key: string): string | null | false {
  let value: string | null = null;
  if (query === '') return null;
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const k = eq < 0 ? part : part.slice(0, eq);
    if (k !== key) continue;
    if (value !== null) return false;
    try {
      value = decodeURIComponent(eq < 0 ? '' : part.slice(eq + 1));
    } catch {
      return false;
    }
  }
  return value;
}

/**
 * The user from `?user=ID`: null when absent, false when invalid (empty, repeated, badly
 * percent-encoded, or bytes outside [A-Za-z0-9_.@-], or longer than 64).
 */
export function parseUserQuery(query: string): string | null | false {
  const user = queryParam(query, 'user');
  if (user === null || user === false) return user;
  return isValidUser(user) ? user : false;
}
