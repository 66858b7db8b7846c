/**
 * Handle-leak guard for a test file: call `guardHandles()` at the top of a file. It records the
 * file's active resources before its first test and, after its last one, fails if any handle
 * (timer, socket, worker, message port...) is still open. A test that leaks is a failing test.
 */
import { after, before } from 'node:test';
import assert from 'node:assert/strict';

function counts(): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) m.set(r, (m.get(r) ?? 0) + 1);
  return m;
}

export async function settle(ms = 50): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Resources still open now, beyond `base` (name -> extra count). */
export function extraResources(base: Map<string, number>): Record<string, number> {
  const extra: Record<string, number> = {};
  for (const [k, v] of counts()) {
    const d = v - (base.get(k) ?? 0);
    if (d > 0) extra[k] = d;
  }
  return extra;
}

export function snapshotResources(): Map<string, number> {
  return counts();
}

export function guardHandles(): void {
  let base = new Map<string, number>();
  before(() => { base = counts(); });
  after(async () => {
    // Closing handles finish on the next turns of the loop; give them a bounded moment.
    let extra: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      extra = extraResources(base);
      // The test runner's own after-hook timer is one 'Timeout'; ignore exactly that one.
      if (extra['Timeout'] === 1) delete extra['Timeout'];
      if (Object.keys(extra).length === 0) return;
      await settle(50);
    }
    assert.deepEqual(extra, {}, 'handles left open by this test file');
  });
}
