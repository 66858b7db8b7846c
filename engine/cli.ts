#!/usr/bin/env -S node --max-semi-space-size=1
/**
 * `shardchat` / `npm start`: serves on port 9001 with defaults. Every option is a flag and an
 * environment variable (`--help`). SIGINT / SIGTERM drain cleanly; the process then exits by
 * itself with code 0 (a drain that hit its deadline is logged as drain_forced; exit 1 only if
 * close() itself failed).
 */
import { createEngine } from './index.js';
import { helpText, optionsFromArgs } from './options.js';

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = optionsFromArgs(process.argv.slice(2), process.env);
  } catch (e) {
    process.stderr.write(`shardchat: ${(e as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  if (parsed.help) { process.stdout.write(`${helpText()}\n`); return; }
  let engine;
  try {
    engine = await createEngine(parsed.options);
    await engine.listen();
  } catch (e) {
    // A StoreError (a bad data dir) names its code: STORE_LOCKED, STORE_CORRUPT, ...
    const code = (e as { code?: unknown }).code;
    process.stderr.write(`shardchat: ${typeof code === 'string' && code.startsWith('STORE_') ? `${code}: ` : ''}${(e as Error).message}\n`);
    process.exitCode = 1;
    if (engine) await engine.close();
    return;
  }
  const running = engine;
  let signals = 0;
  const stop = (signal: string): void => {
    signals++;
    if (signals > 1) { running.log.warn({ event: 'signal_again', signal }, 'already draining'); return; }
    running.log.info({ event: 'signal', signal }, 'draining');
    running.close().then(
      () => { process.removeListener('SIGINT', onInt); process.removeListener('SIGTERM', onTerm); },
      (e: Error) => { running.log.error({ event: 'drain_failed', err: e.message }, 'drain failed'); process.exitCode = 1; },
    );
  };
  const onInt = (): void => stop('SIGINT');
  const onTerm = (): void => stop('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
}

void main();
