/**
 * Programs from Debian packages that some tests need (spin, redis-server, chromium, ...). A
 * missing program skips the test with "skipped: install <pkg> (Debian package) to <why>", unless
 * SHARDCHAT_REQUIRE_TOOLS=1 (CI), where it is a failure.
 */
import type { TestContext } from 'node:test';
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false; // absent or not executable: try the next directory
  }
}

/** The program's path, searched in PATH and then /usr/bin, /usr/sbin; null when absent. */
export function toolPath(name: string): string | null {
  if (name.includes('/')) return executable(name) ? name : null;
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter((d) => d !== ''), '/usr/bin', '/usr/sbin'];
  for (const d of dirs) {
    const p = path.join(d, name);
    if (executable(p)) return p;
  }
  return null;
}

export function requireTool(t: TestContext, name: string, pkg: string, why: string): string | null {
  const p = toolPath(name);
  if (p !== null) return p;
  const msg = `skipped: install ${pkg} (Debian package) to ${why}`;
  if (process.env.SHARDCHAT_REQUIRE_TOOLS === '1') throw new Error(`${name} not found (SHARDCHAT_REQUIRE_TOOLS=1): ${msg.replace(/^skipped: /, '')}`);
  t.skip(msg);
  return null;
}
