/**
 * A typed event emitter with nothing to leak: `on` returns its own unsubscribe function, and
 * `clear()` drops every listener (the client calls it when it is closed). A listener that throws
 * does not stop the others; its error goes to the `onListenerError` hook.
 */
export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  private readonly listeners = new Map<keyof Events, Set<(e: never) => void>>();

  constructor(private readonly onListenerError: (e: unknown) => void = () => undefined) {}

  on<K extends keyof Events>(name: K, fn: (e: Events[K]) => void): () => void {
    let set = this.listeners.get(name);
    if (!set) { set = new Set(); this.listeners.set(name, set); }
    set.add(fn as (e: never) => void);
    return () => this.off(name, fn);
  }

  off<K extends keyof Events>(name: K, fn: (e: Events[K]) => void): void {
    const set = this.listeners.get(name);
    if (!set) return;
    set.delete(fn as (e: never) => void);
    if (set.size === 0) this.listeners.delete(name);
  }

  emit<K extends keyof Events>(name: K, e: Events[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const fn of [...set]) {
      try { (fn as (x: Events[K]) => void)(e); } catch (err) { this.onListenerError(err); }
    }
  }

  /** Number of listeners still registered (tests check close() leaves 0). */
  get size(): number {
    let n = 0;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }

  clear(): void { this.listeners.clear(); }
}
