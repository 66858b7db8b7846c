/** Sequence-number checks shared by the integration tests. */
import assert from 'node:assert/strict';

/** "1..5, 9..12" */
export function ranges(seqs: number[]): string {
  const out: string[] = [];
  let i = 0;
  while (i < seqs.length) {
    let j = i;
    while (j + 1 < seqs.length && seqs[j + 1] === seqs[j]! + 1) j++;
    out.push(i === j ? `${seqs[i]}` : `${seqs[i]}..${seqs[j]}`);
    i = j + 1;
  }
  return out.length > 20 ? `${out.slice(0, 20).join(', ')}, ... (${out.length} runs)` : out.join(', ') || '(none)';
}

export function assertContiguous(seqs: number[], from: number, to: number, label: string): void {
  if (seqs.length === to - from + 1 && seqs.every((s, i) => s === from + i)) return;
  const firstBad = seqs.findIndex((s, i) => s !== from + i);
  assert.fail(`${label}: want seqs ${from}..${to} in order exactly once, got ${seqs.length} seqs (${ranges(seqs)}); first mismatch at index ${firstBad}: ${JSON.stringify(seqs.slice(Math.max(0, firstBad - 3), firstBad + 5))}`);
}
