// Types of scale.mjs, for the tests that import it.
export interface Cost { mainUs: number; shardUs: number; rooms: number; busiestShare?: number }
export interface Derived { perSec: number; bottleneck: string; bounds: Record<string, number> }
export function deriveScale(cost: Cost, shards: number, cores: number): Derived | null;
export function scaleTable(cost: Cost, maxN: number, hereCores: number, measured?: Record<number, number>): string[];
