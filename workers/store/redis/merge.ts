/**
 * Recovery merge (after centrifuge's MergePublications): a node subscribes to the room first,
 * buffers what arrives live, reads history, then merges the two by seq. Messages present in both
 * are kept once; the result is what the member needs, in order, from `afterSeq`. Pure.
 */

export interface Seqd { readonly seq: number }

export interface MergeResult<T extends Seqd> {
  /** afterSeq+1 .. n, contiguous, each seq once. */
  readonly messages: T[];
  /** The last seq of `messages` (afterSeq when empty). */
  readonly lastSeq: number;
  /** First missing seq when the two inputs together leave a hole (then `messages` stops before it). */
  readonly gapAt: number | null;
}

/**
 * `history`: ascending, as read; `live`: buffered in arrival order (any order, duplicates allowed).
 * Both may include seqs at or before `afterSeq`; those are dropped.
 */
export function mergeBySeq<T extends Seqd>(afterSeq: number, history: readonly T[], live: readonly T[]): MergeResult<T> {
  const bySeq = new Map<number, T>();
  for (const m of history) if (m.seq > afterSeq && !bySeq.has(m.seq)) bySeq.set(m.seq, m);
  for (const m of live) if (m.seq > afterSeq && !bySeq.has(m.seq)) bySeq.set(m.seq, m);
  const messages: T[] = [];
  let next = afterSeq + 1;
  for (let m = bySeq.get(next); m !== undefined; m = bySeq.get(next)) {
    messages.push(m);
    next++;
  }
  const gapAt = messages.length < bySeq.size ? next : null;
  return { messages, lastSeq: next - 1, gapAt };
}
