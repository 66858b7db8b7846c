/**
 * Where the load runner's results go (native-bench/README.md, "Results"):
 * - a user's run writes only under native-bench/results/local/ (git-ignored): the full JSON per
 *   run in local/runs/, a copy of the last one as local/latest.json (local/quick-latest.json for
 *   --quick) with its tables as .md, local/sweep.svg and local/sample-scrape.txt;
 * - `--reference` also writes a small, committable summary: results/reference/<stamp>-<mode>/
 *   summary.json (everything but the generator's raw per-run output) and summary.md (the tables,
 *   with the machine described). Only reference runs belong in git.
 */
import { mkdirSync, writeFileSync, copyFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Per-run and median fields a summary keeps (what the tables, intervals and verdicts use). */
const KEEP = new Set(['runId', 'deliveredPerSec', 'sentPerSec', 'offeredPerSec', 'p50ms', 'p99ms', 'serverCpuMsPer1k', 'mainCpuMsPer1k', 'shardCpuMsPer1k',
  'perShardCpuMsPer1k', 'busiestShardShare', 'serverCpuPct', 'genCpuPct', 'otherCpuPct', 'generatorBound', 'kbPerIdleConn', 'cyclesPerSec', 'setupS', 'connections',
  'errors', 'closes', 'missing', 'gaps', 'stalledClosed', 'skipped', 'runs', 'deliveredPerSecRuns', 'errorsSum', 'closesSum', 'missingSum', 'orderSum',
  'maxOtherCpuPct', 'generatorBoundRuns', 'rssBeforeKb', 'rssAfterKb', 'storedMsgs', 'historyFilled', 'bytesPerStoredMsg', 'shardAmbiguous', 'shardAmbiguousRuns']);
const round = (x) => (typeof x === 'number' && !Number.isInteger(x) ? Number(x.toPrecision(4)) : x);
const slim = (o) => Object.fromEntries(Object.entries(o).filter(([k]) => KEEP.has(k)).map(([k, v]) => [k, Array.isArray(v) ? v.map(round) : round(v)]));

/** The run without raw generator output, per-run figures cut to what the verdicts use (they need the runs). */
export function summaryOf(out) {
  return JSON.parse(JSON.stringify(out, (k, v) => {
    if (k === 'runs' && Array.isArray(v) && v.length && typeof v[0] === 'object') return undefined; // raw generator JSON
    if (k === 'table' || k === 'perf') return undefined;
    // per-run figures as columns (one array per field): the same numbers without repeating keys
    if (k === 'derived' && Array.isArray(v)) {
      const rows = v.map(slim);
      const cols = {};
      for (const f of KEEP) if (rows.some((r) => r[f] !== undefined && r[f] !== null && !Array.isArray(r[f]))) cols[f] = rows.map((r) => r[f] ?? null);
      return cols;
    }
    if (k === 'p99msRuns' && Array.isArray(v)) return v.map(round);
    if (k === 'summary' && v && typeof v === 'object') return slim(v);
    if (k === 'firstWarnings') return Array.isArray(v) ? v.slice(0, 2).map((x) => String(x).slice(0, 200)) : v;
    return round(v);
  }));
}

export function resultPaths(benchDir, stamp, mode) {
  const resultsDir = join(benchDir, 'results');
  const local = join(resultsDir, 'local');
  return {
    local,
    run: join(local, 'runs', `${stamp}-${mode}.json`),
    latestBase: join(local, mode === 'quick' ? 'quick-latest' : 'latest'),
    sweepSvg: join(local, 'sweep.svg'),
    scrape: join(local, 'sample-scrape.txt'),
    tmp: join(resultsDir, 'tmp'),
    referenceDir: join(resultsDir, 'reference', `${stamp}-${mode}`),
  };
}

/** Indented down to the arms (one line each below that): small, and still diffable. */
export const compactJson = (v) => {
  const out = [];
  for (const line of JSON.stringify(v, null, 1).split('\n')) {
    if (/^ {6,}/.test(line) && out.length) out[out.length - 1] += line.trim();
    else out.push(line);
  }
  return `${out.join('\n')}\n`;
};

/** Writes a run's files; returns the paths written. */
export function writeResults(paths, out, table, { outFile, reference, machineNote, sweepSvg = null }) {
  const written = [];
  const file = outFile ?? paths.run;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  written.push(file);
  mkdirSync(dirname(paths.latestBase), { recursive: true });
  copyFileSync(file, `${paths.latestBase}.json`);
  writeFileSync(`${paths.latestBase}.md`, `${table}\n`);
  written.push(`${paths.latestBase}.json`, `${paths.latestBase}.md`);
  if (reference) {
    mkdirSync(paths.referenceDir, { recursive: true });
    writeFileSync(join(paths.referenceDir, 'summary.json'), compactJson(summaryOf(out)));
    writeFileSync(join(paths.referenceDir, 'summary.md'), `${machineNote}\n\n${table}\n`);
    written.push(join(paths.referenceDir, 'summary.json'), join(paths.referenceDir, 'summary.md'));
    // the sweep's plot of this run (about 10 KB), next to the table it draws
    if (sweepSvg) { copyFileSync(sweepSvg, join(paths.referenceDir, 'sweep.svg')); written.push(join(paths.referenceDir, 'sweep.svg')); }
  }
  return written;
}
