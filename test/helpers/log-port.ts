/** The first positive `port` field anywhere in a parsed JSON log line (the engine's `listening` event). */
export function findPort(v: unknown): number | undefined {
  if (v === null || typeof v !== 'object') return undefined;
  for (const [k, x] of Object.entries(v)) {
    if (k === 'port' && typeof x === 'number' && x > 0) return x;
    const inner = findPort(x);
    if (inner !== undefined) return inner;
  }
  return undefined;
}
