// Types of stats.mjs, for the tests that import it.
export interface Pair { runId: number; b: number; a: number; ratio: number }
export interface Interval { point: number; lo: number | null; hi: number | null; n: number }
export interface Verdict { verdict: 'met' | 'not met' | 'inconclusive' | 'generator-bound' | 'not measured'; runsNeeded: number | null; tooFew?: boolean }
export const MIN_PAIRS: number;
export function rng(seed: number): () => number;
export function median(xs: number[]): number | null;
export function pairByRunId(b: { runId: number; value: number | null }[], a: { runId: number; value: number | null }[]): Pair[];
export function pairedRatioInterval(pairs: Pair[], opts?: { iters?: number; seed?: number }): Interval | null;
export function verdictOf(ci: Interval | null, limit: number, dir: '>=' | '<=', opts?: { generatorBound?: boolean }): Verdict;
export function runsNeeded(ci: Interval, limit: number): number | null;
export function shuffled<T>(xs: T[], seed: number): T[];
export function fmtInterval(ci: Interval | null, unit?: string): string;
