/**
 * The hostile mix as a process of its own: `node dist/native-bench/hostile/attacker.js '<json>'`
 * with the MixOptions as JSON; prints the MixResult as one JSON line on stdout. The bounded test
 * runs it as a child so that the engine's process RSS holds the engine and not the attackers.
 */
import { runMix, type MixOptions } from './mix.js';

const arg = process.argv[2];
if (arg === undefined) {
  console.error("usage: attacker.js '{\"port\": 9001, \"durationMs\": 20000}'");
  process.exit(2);
}
const opts = JSON.parse(arg) as MixOptions;
const result = await runMix(opts);
process.stdout.write(`${JSON.stringify(result)}\n`);
