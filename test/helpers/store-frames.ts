/** Frames whose bytes depend on room and seq, so that a mix-up or a torn write shows. No node:test here: workers import it. */
export function frameOf(room: string, seq: number, size = 24): Uint8Array {
  const b = new Uint8Array(size);
  let h = 2166136261;
  for (const ch of `${room}/${seq}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619);
  for (let i = 0; i < size; i++) { h = Math.imul(h ^ i, 16777619); b[i] = h >>> 24; }
  return b;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The seeded float generator of the client SDK's back-off (mulberry32), under the name the store tests use. */
export { seededRandom as mulberry32 } from '../../engine/client/backoff.js';

/** The frame the kill -9 appender's life `life` writes for (room, seq): a seq reused by a later life would not match. */
export function appenderFrame(life: number, room: string, seq: number): Uint8Array {
  return frameOf(`${room}#${life}`, seq, 16 + ((seq * 131 + life * 17) % 1500));
}
