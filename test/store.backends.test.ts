/**
 * The store suite (test/helpers/store-suite.ts) against each backend: memory, and sqlite on real
 * files in a temporary directory (reopened from the same files for the durable cases).
 */
import { guardHandles } from './helpers/leaks.js';
import { storeSuite } from './helpers/store-suite.js';
import { tempDir } from './helpers/tmpdir.js';
import { MemoryStore, SqliteStore, type Store } from '../workers/store/index.js';

guardHandles();

storeSuite('memory', (t, limits = {}) => {
  const store = new MemoryStore(limits);
  t.after(() => store.close());
  return { store };
});

storeSuite('sqlite', (t, limits = {}) => {
  const dir = tempDir(t);
  const opened: Store[] = [];
  const open = (l: typeof limits): Store => {
    const s = new SqliteStore({ dir, ...l });
    opened.push(s);
    return s;
  };
  t.after(() => { for (const s of opened) s.close(); });
  const store = open(limits);
  return { store, reopen: (l = limits) => { store.close(); return open(l); } };
});
