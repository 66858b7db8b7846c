/**
 * Webhook options: names, CLI flags, environment variables, defaults and validation, naming the
 * option. Pure. engine/options.ts appends WEBHOOK_OPTION_SPECS to its list (docs/API.md).
 */
import { checkOptionValue } from '../auth/options.js';
import { OptionError } from '../errors.js';

export interface WebhookOptions {
  url: string;
  secret: string;
  batchMax?: number;
  batchMaxBytes?: number;
  batchMs?: number;
  queueEntries?: number;
  queueBytes?: number;
  timeoutMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  retryForMs?: number;
  closeTimeoutMs?: number;
}
export type ResolvedWebhookOptions = Required<WebhookOptions>;

export interface WebhookOptionSpec {
  key: keyof WebhookOptions;
  /** The engine option's name (EngineOptions key). */
  engineKey: string;
  flag: string;
  env: string;
  kind: 'string' | 'int';
  min?: number;
  max?: number;
  help: string;
  def: number | null;
}

const int = (key: keyof WebhookOptions, flag: string, min: number, max: number, def: number, help: string): WebhookOptionSpec => ({
  key, engineKey: `webhook${key[0]!.toUpperCase()}${key.slice(1)}`, flag: `webhook-${flag}`,
  env: `SHARDCHAT_WEBHOOK_${flag.toUpperCase().replaceAll('-', '_')}`, kind: 'int', min, max, def, help,
});

export const WEBHOOK_OPTION_SPECS: readonly WebhookOptionSpec[] = [
  { key: 'url', engineKey: 'webhookUrl', flag: 'webhook-url', env: 'SHARDCHAT_WEBHOOK_URL', kind: 'string', help: 'POST events here (http or https); turns webhooks on', def: null },
  { key: 'secret', engineKey: 'webhookSecret', flag: 'webhook-secret', env: 'SHARDCHAT_WEBHOOK_SECRET', kind: 'string', help: 'HMAC-SHA256 key of X-Shardchat-Signature (at least 16 bytes)', def: null },
  int('batchMax', 'batch-max', 1, 10_000, 100, 'events per POST at most'),
  int('batchMaxBytes', 'batch-max-bytes', 1024, 16 << 20, 1 << 20, 'bytes of events per POST at most (one bigger event goes alone)'),
  int('batchMs', 'batch-ms', 0, 60_000, 200, 'how long the first queued event waits for others'),
  int('queueEntries', 'queue-entries', 1, 10_000_000, 10_000, 'events queued at most (more: dropped and counted)'),
  int('queueBytes', 'queue-bytes', 1024, 1 << 30, 16 << 20, 'bytes of events queued at most (more: dropped and counted)'),
  int('timeoutMs', 'timeout-ms', 100, 120_000, 10_000, 'answer deadline of one POST (then retried)'),
  int('retryBaseMs', 'retry-base-ms', 10, 60_000, 1000, 'first retry after 0.5..1 x this; doubles each time'),
  int('retryMaxMs', 'retry-max-ms', 10, 3_600_000, 30_000, 'longest wait between two retries'),
  int('retryForMs', 'retry-for-ms', 0, 86_400_000, 120_000, 'give a batch up (dropped, counted) after this'),
  int('closeTimeoutMs', 'close-timeout-ms', 0, 3_600_000, 5000, 'on shutdown, time to send what is queued'),
];

/** Shortest webhook secret accepted. */
export const MIN_WEBHOOK_SECRET_BYTES = 16;

export function resolveWebhookOptions(opts: WebhookOptions): ResolvedWebhookOptions {
  if (opts === null || typeof opts !== 'object') throw new OptionError('webhook', 'options must be an object');
  const out: Record<string, unknown> = {};
  for (const s of WEBHOOK_OPTION_SPECS) {
    const v = (opts as unknown as Record<string, unknown>)[s.key];
    if (v === undefined) {
      if (s.def === null) throw new OptionError(s.engineKey, 'is required for webhooks');
      out[s.key] = s.def;
    } else {
      checkOptionValue(s.engineKey, s, v);
      out[s.key] = v;
    }
  }
  const r = out as ResolvedWebhookOptions;
  let url: URL;
  try {
    url = new URL(r.url);
  } catch {
    throw new OptionError('webhookUrl', `must be a URL, got ${JSON.stringify(r.url)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new OptionError('webhookUrl', `must be http or https, got ${JSON.stringify(r.url)}`);
  if (Buffer.byteLength(r.secret) < MIN_WEBHOOK_SECRET_BYTES) throw new OptionError('webhookSecret', `must be at least ${MIN_WEBHOOK_SECRET_BYTES} bytes`);
  if (r.retryMaxMs < r.retryBaseMs) throw new OptionError('webhookRetryMaxMs', `must be at least webhookRetryBaseMs (${r.retryBaseMs}), got ${r.retryMaxMs}`);
  return r;
}
