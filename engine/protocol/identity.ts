/**
 * Identity in the default, open mode (docs/PROTOCOL.md, Transport). Pure: no I/O.
 */
import { isValidUser } from './frames.js';

/** Ids the engine gives connections without `?user=` (`anon-<conn>`): no client may claim one. */
export const ANON_PREFIX = 'anon-';

/** The user from a query: `user` null when absent, or `error` saying why the query is refused. */
export type UserQuery = { user: string | null; error?: undefined } | { user?: undefined; error: string };

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
 * The user from `?user=ID`. Refused (with the reason, for the HTTP 400 body): repeated, badly
 * percent-encoded, empty, longer than 64 bytes or bytes outside [A-Za-z0-9_.@-], or an id in
 * the anonymous namespace (`anon-...`), which would take over an anonymous connection's
 * presence and read cursors.
 */
export function checkUserQuery(query: string): UserQuery {
  const v = queryParam(query, 'user');
  if (v === null) return { user: null };
  if (v === false) return { error: 'invalid user: given more than once, or badly percent-encoded' };
  if (!isValidUser(v)) return { error: 'invalid user: must be 1..64 bytes of [A-Za-z0-9_.@-]' };
  if (v.startsWith(ANON_PREFIX)) return { error: `invalid user: ids starting with "${ANON_PREFIX}" are reserved for anonymous connections (connect without ?user= to be one)` };
  return { user: v };
}

/** checkUserQuery without the reason: the user, null when absent, false when refused. */
export function parseUserQuery(query: string): string | null | false {
  const r = checkUserQuery(query);
  return r.error === undefined ? r.user : false;
}
