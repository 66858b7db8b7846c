/**
 * Tests that need a Debian program (spin, redis-server, chromium) find it here. Missing, the test
 * is skipped with "skipped: install <pkg> (Debian package) to <why>", unless
 * SHARDCHAT_REQUIRE_TOOLS=1 (CI), where a missing program fails the test.
 */
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';

/** The program's path on PATH or in /usr/bin, /usr/sbin; null if none is executable. */
export function toolPath(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter((d) => d !== ''), '/usr/bin', '/usr/sbin'];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      if (!statSync(p).isFile()) continue;
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      continue; // not there, or not executable: try the next directory
    }
  }
  return null;
}

/** The program's path, or null after t.skip(); throws when SHARDCHAT_REQUIRE_TOOLS=1 and it is missing. */
export function requireTool(t: TestContext, name: string, pkg: string, why: string): string | null {
  const p = toolPath(name);
  if (p !== null) return p;
  const msg = `skipped: install ${pkg} (Debian package) to ${why}`;
  if (process.env.SHARDCHAT_REQUIRE_TOOLS === '1') throw new Error(`${name} is required (SHARDCHAT_REQUIRE_TOOLS=1): ${msg}`);
  t.skip(msg);
  return null;
}
