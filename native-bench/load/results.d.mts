// Types of results.mjs, for the tests that import it.
export interface ResultPaths { local: string; run: string; latestBase: string; sweepSvg: string; scrape: string; tmp: string; referenceDir: string }
export function resultPaths(benchDir: string, stamp: string, mode: string): ResultPaths;
export function summaryOf(out: unknown): Record<string, unknown>;
export function compactJson(v: unknown): string;
export function writeResults(paths: ResultPaths, out: unknown, table: string,
  opts: { outFile?: string | null; reference: boolean; machineNote?: string; sweepSvg?: string | null }): string[];
