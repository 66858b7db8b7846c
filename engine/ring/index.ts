export { createRing, initRing, RingReader, RingWriter } from './ring.js';
export type { RingInitOptions } from './ring.js';
export { HEADER_BYTES, MAX_CAPACITY, MIN_CAPACITY, maxRecordBytes, recordSpan, ringByteLength } from './layout.js';
