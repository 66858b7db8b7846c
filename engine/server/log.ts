/**
 * The engine's logger: pino, JSON lines on stdout by default (one object per lifecycle event,
 * never a message body). `pretty` turns each line into `time LEVEL msg key=value ...` for a
 * person at a terminal, without a transport thread.
 */
import { pino, type Logger } from 'pino';
import type { LogLevel } from '../options.js';

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'msg', 'name', 'pid', 'hostname']);

/** One JSON log line as a readable line. */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 23) : '';
  const level = LEVEL_NAMES[o.level as number] ?? String(o.level);
  const fields = Object.entries(o).filter(([k]) => !SKIP.has(k)).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return `${time} ${level.padEnd(5)} ${String(o.msg ?? '')}${fields.length ? ' ' + fields.join(' ') : ''}\n`;
}

export function createLogger(level: LogLevel, pretty: boolean): Logger {
  const opts = { level, base: { name: 'shardchat' } };
  if (!pretty) return pino(opts);
  return pino(opts, { write: (line: string) => { process.stdout.write(prettyLine(line)); } });
}
