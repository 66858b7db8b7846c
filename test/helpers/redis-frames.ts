import type { PublishInput } from '../../workers/store/redis/sequencer.js';

/** A minimal frame for the sequencer: the `seq` key with a uint64 slot at offset 5, then the text. */
export function msg(user: string, text: string): PublishInput {
  const body = Buffer.from(text);
  const f = Buffer.alloc(13 + body.length);
  f.write('\xa3seq', 0, 'latin1');
  f[4] = 0xcf;
  body.copy(f, 13);
  return { user, cid: null, ts: Date.now(), frame: f, seqOffset: 5 };
}
