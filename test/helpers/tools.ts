/**
 * Programs from Debian packages that some tests need (spin, cc, redis-server, chromium). On a
 * machine with only Node and npm those tests SKIP with one visible line naming the package; with
 * SHARDCHAT_REQUIRE_TOOLS=1 (CI, where .ci/run installs them) a missing program FAILS the test.
 */
import type { TestContext } from 'node:test';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';


function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false; // missing or not executable: not this one
  }
}

/**
 * The full path of program `name`, found on PATH only (so a PATH without it, as
 * ../shared/tools/new-user-check makes, is a machine without it); null when none is an
 * executable file. An absolute `name` is checked as it is.
 */
export function toolPath(name: string): string | null {
  if (isAbsolute(name)) return isExecutableFile(name) ? name : null;
  const dirs = (process.env.PATH ?? '').split(delimiter).filter((d) => d !== '');
  for (const dir of dirs) {
    const p = join(dir, name);
    if (isExecutableFile(p)) return p;
  }
  return null;
}

/** True when CI asked that a missing program fail the test instead of skipping it. */
export function toolsRequired(): boolean {
  return process.env.SHARDCHAT_REQUIRE_TOOLS === '1';
}

/**
 * The path of `name`, or, when it is missing, skips `t` with "skipped: install <pkg> (Debian
 * package) to <why>" and returns null; with SHARDCHAT_REQUIRE_TOOLS=1 a missing program throws
 * instead, failing the test. A test that gets null must return at once.
 */
export function requireTool(t: TestContext, name: string, pkg: string, why: string): string | null {
  const found = toolPath(name);
  if (found !== null) return found;
  const msg = `skipped: install ${pkg} (Debian package) to ${why}`;
  if (toolsRequired()) {
    throw new Error(`'${name}' is missing and SHARDCHAT_REQUIRE_TOOLS=1: ${msg.replace(/^skipped: /, '')}`);
  }
  t.skip(msg);
  return null;
}
