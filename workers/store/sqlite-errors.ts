/** SQLite's error codes as StoreErrors with stable codes (better-sqlite3 puts them in `.code`). */
import { StoreError } from '../../engine/store-dir.js';

export function sqliteError(e: unknown, what: string): unknown {
  if (e instanceof StoreError) return e;
  const code = (e as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return e;
  const msg = `${what}: ${(e as Error).message} (${code})`;
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) return new StoreError('STORE_CORRUPT', msg, { cause: e });
  if (code === 'SQLITE_FULL') return new StoreError('STORE_FULL', msg, { cause: e });
  if (code.startsWith('SQLITE_READONLY') || code.startsWith('SQLITE_CANTOPEN') || code.startsWith('SQLITE_PERM') || code === 'SQLITE_AUTH') {
    return new StoreError('STORE_UNWRITABLE', msg, { cause: e });
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return new StoreError('STORE_BUSY', msg, { cause: e });
  if (code === 'SQLITE_MISUSE' || code.startsWith('SQLITE_CONSTRAINT')) return new StoreError('STORE_MISUSE', msg, { cause: e });
  return new StoreError('STORE_IO', msg, { cause: e });
}
