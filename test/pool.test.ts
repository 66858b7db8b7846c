import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { guardHandles } from './helpers/leaks.js';
import { BufferPool, DEFAULT_CLASSES, PoolError, geometricClasses } from '../engine/pool/index.js';
import type { PoolErrorCode } from '../engine/pool/index.js';

guardHandles();

function throwsPool(fn: () => unknown, code: PoolErrorCode): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PoolError, `expected PoolError, got ${String(e)}`);
    assert.ok(e instanceof Error);
    assert.equal(e.code, code);
    assert.equal(e.name, 'PoolError');
    return true;
  });
}

describe('BufferPool class selection', () => {
  it('hands out the smallest class >= size, each over its own ArrayBuffer', () => {
    const pool = new BufferPool();
    assert.deepEqual(pool.classes, DEFAULT_CLASSES);
    const cases: [number, number][] = [
      [0, 64], [1, 64], [64, 64], [65, 256], [256, 256], [257, 1024], [1000, 1024], [4096, 4096],
      [4097, 16384], [65536, 65536], [65537, 262144], [1048576, 1048576],
    ];
    for (const [size, cls] of cases) {
      const b = pool.acquire(size);
      assert.ok(b instanceof Uint8Array);
      assert.equal(b.byteLength, cls, `acquire(${size})`);
      assert.equal(b.byteOffset, 0);
      assert.equal(b.buffer.byteLength, cls);
      assert.ok(b.buffer instanceof ArrayBuffer);
      assert.equal(pool.classSizeFor(size), cls);
      pool.release(b);
    }
  });

  it('honours custom classes', () => {
    const pool = new BufferPool({ classes: [10, 100, 1000] });
    assert.equal(pool.acquire(5).byteLength, 10);
    assert.equal(pool.acquire(11).byteLength, 100);
    assert.equal(pool.acquire(1000).byteLength, 1000);
    assert.equal(pool.maxSize, 1000);
  });

  it('rejects a size above the largest class, naming the limit, and bad sizes', () => {
    const pool = new BufferPool({ classes: [64, 1024] });
    assert.throws(() => pool.acquire(1025), (e: unknown) => e instanceof RangeError && /1024/.test(e.message));
    for (const bad of [-1, 1.5, NaN, Infinity]) {
      assert.throws(() => pool.acquire(bad), RangeError, `acquire(${bad})`);
    }
    assert.equal(pool.stats().inUse, 0);
    assert.equal(pool.stats().acquires, 0);
  });
});

describe('BufferPool never hands a buffer out twice', () => {
  it('buffers in use are all distinct ArrayBuffers; release and reacquire reuses a pooled one', () => {
    const pool = new BufferPool();
    const held: Uint8Array[] = [];
    for (let i = 0; i < 500; i++) held.push(pool.acquire(100 + (i % 3) * 300));
    assert.equal(new Set(held.map((b) => b.buffer)).size, held.length);
    assert.equal(pool.stats().inUse, 500);

    const first = held[0]!;
    pool.release(first);
    const again = pool.acquire(first.byteLength);
    assert.equal(again.buffer, first.buffer, 'a released buffer is reused');
    assert.equal(again, first, 'the same view is handed back');
    held[0] = again;
    // Still all distinct.
    assert.equal(new Set(held.map((b) => b.buffer)).size, held.length);
    for (const b of held) pool.release(b);
    assert.equal(pool.stats().inUse, 0);
  });

  it('a randomised acquire/release sequence never has two holders of one buffer', () => {
    const pool = new BufferPool({ classes: [16, 64, 256], maxPooledPerClass: 8 });
    const held = new Map<ArrayBufferLike, Uint8Array>();
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (let step = 0; step < 20000; step++) {
      if (held.size > 0 && rnd(2) === 0) {
        const keys = [...held.keys()];
        const k = keys[rnd(keys.length)]!;
        pool.release(held.get(k)!);
        held.delete(k);
      } else {
        const b = pool.acquire(rnd(257));
        assert.ok(!held.has(b.buffer), 'buffer handed out while in use');
        held.set(b.buffer, b);
      }
      if (step % 997 === 0) {
        const s = pool.stats();
        assert.equal(s.inUse, held.size);
        assert.ok(s.perClass.every((c) => c.free <= 8));
      }
    }
    for (const b of held.values()) pool.release(b);
    assert.equal(pool.stats().inUse, 0);
  });
});

describe('BufferPool rejects foreign buffers', () => {
  it('a buffer of the right size made elsewhere is POOL_FOREIGN', () => {
    const pool = new BufferPool();
    const mine = pool.acquire(64);
    throwsPool(() => pool.release(new Uint8Array(64)), 'POOL_FOREIGN');
    throwsPool(() => pool.release(new Uint8Array(new ArrayBuffer(64))), 'POOL_FOREIGN');
    throwsPool(() => pool.release(Buffer.alloc(64)), 'POOL_FOREIGN');
    throwsPool(() => pool.release(new Uint8Array(new SharedArrayBuffer(64))), 'POOL_FOREIGN');
    // A copy of a pooled buffer is not the pooled buffer.
    throwsPool(() => pool.release(mine.slice()), 'POOL_FOREIGN');
    // Not a Uint8Array at all.
    throwsPool(() => pool.release({} as Uint8Array), 'POOL_FOREIGN');
    throwsPool(() => pool.release(new Int32Array(mine.buffer) as unknown as Uint8Array), 'POOL_FOREIGN');
    assert.equal(pool.stats().inUse, 1);
    assert.equal(pool.stats().releases, 0);
    pool.release(mine);
  });

  it('a subarray of a pooled buffer is POOL_FOREIGN and changes nothing', () => {
    const pool = new BufferPool();
    const b = pool.acquire(1000);
    throwsPool(() => pool.release(b.subarray(0, 100)), 'POOL_FOREIGN');
    throwsPool(() => pool.release(b.subarray(1)), 'POOL_FOREIGN');
    throwsPool(() => pool.release(new Uint8Array(b.buffer, 4, 8)), 'POOL_FOREIGN');
    assert.equal(pool.stats().inUse, 1);
    assert.equal(pool.owns(b), true);
    assert.equal(pool.owns(b.subarray(1)), false);
    pool.release(b);
    assert.equal(pool.owns(b), false);
    // A full-length subarray is the same memory: accepted as the buffer itself.
    const c = pool.acquire(1000);
    pool.release(c.subarray(0));
    assert.equal(pool.stats().inUse, 0);
  });

  it("another pool's buffer is POOL_FOREIGN", () => {
    const a = new BufferPool();
    const b = new BufferPool();
    const x = a.acquire(64);
    throwsPool(() => b.release(x), 'POOL_FOREIGN');
    a.release(x);
    throwsPool(() => b.release(x), 'POOL_FOREIGN');
  });
});

describe('BufferPool rejects double release', () => {
  it('throws POOL_DOUBLE_RELEASE and does not pool the buffer twice', () => {
    const pool = new BufferPool();
    const b = pool.acquire(64);
    pool.release(b);
    throwsPool(() => pool.release(b), 'POOL_DOUBLE_RELEASE');
    throwsPool(() => pool.release(b), 'POOL_DOUBLE_RELEASE');
    const s = pool.stats();
    assert.equal(s.free, 1);
    assert.equal(s.releases, 1);
    const x = pool.acquire(64);
    const y = pool.acquire(64);
    assert.notEqual(x.buffer, y.buffer);
    pool.release(x);
    pool.release(y);
  });

  it('is detected after the buffer was dropped (maxPooledPerClass 0, clear())', () => {
    const none = new BufferPool({ maxPooledPerClass: 0 });
    const b = none.acquire(10);
    none.release(b);
    throwsPool(() => none.release(b), 'POOL_DOUBLE_RELEASE');
    assert.equal(none.stats().free, 0);

    const pool = new BufferPool();
    const c = pool.acquire(10);
    pool.release(c);
    pool.clear();
    throwsPool(() => pool.release(c), 'POOL_DOUBLE_RELEASE');
    assert.notEqual(pool.acquire(10).buffer, c.buffer, 'a cleared buffer is not handed out again');
  });

  it('a released-then-reacquired buffer can be released once more', () => {
    const pool = new BufferPool();
    const b = pool.acquire(64);
    pool.release(b);
    const again = pool.acquire(64);
    assert.equal(again, b);
    pool.release(again);
    throwsPool(() => pool.release(b), 'POOL_DOUBLE_RELEASE');
  });
});

describe('BufferPool limits and stats', () => {
  it('keeps at most maxPooledPerClass free buffers per class', () => {
    const pool = new BufferPool({ classes: [64, 256], maxPooledPerClass: 3 });
    const small = Array.from({ length: 5 }, () => pool.acquire(64));
    const big = Array.from({ length: 2 }, () => pool.acquire(200));
    for (const b of small) pool.release(b);
    for (const b of big) pool.release(b);
    const s = pool.stats();
    assert.equal(s.free, 5);
    assert.deepEqual(s.perClass.map((c) => [c.size, c.free, c.dropped]), [[64, 3, 2], [256, 2, 0]]);
    // The kept ones are reused before anything new is made.
    const again = Array.from({ length: 3 }, () => pool.acquire(1));
    assert.equal(pool.stats().allocated, 7);
    for (const b of again) assert.ok(small.includes(b));
    pool.acquire(1);
    assert.equal(pool.stats().allocated, 8);
  });

  it('counts exactly', () => {
    const pool = new BufferPool({ classes: [64, 1024, 4096], maxPooledPerClass: 2 });
    assert.deepEqual(pool.stats(), {
      inUse: 0, free: 0, allocated: 0, acquires: 0, releases: 0, dropped: 0, inUseBytes: 0, freeBytes: 0,
      perClass: [64, 1024, 4096].map((size) => ({
        size, inUse: 0, free: 0, allocated: 0, acquires: 0, releases: 0, dropped: 0,
      })),
    });
    const a = pool.acquire(10);     // 64: alloc
    const b = pool.acquire(64);     // 64: alloc
    const c = pool.acquire(65);     // 1024: alloc
    const d = pool.acquire(4000);   // 4096: alloc
    pool.release(a);                // 64 free 1
    const e = pool.acquire(1);      // 64: reuse a
    assert.equal(e, a);
    pool.release(b);
    pool.release(e);                // 64 free 2
    pool.release(c);                // 1024 free 1
    const f = pool.acquire(3);      // 64 reuse
    const g = pool.acquire(3);      // 64 reuse
    const h = pool.acquire(3);      // 64 alloc (free list empty)
    pool.release(f);
    pool.release(g);
    pool.release(h);                // 64: third one dropped (max 2)
    throwsPool(() => pool.release(h), 'POOL_DOUBLE_RELEASE');
    throwsPool(() => pool.release(new Uint8Array(64)), 'POOL_FOREIGN');
    const s = pool.stats();
    assert.deepEqual(s, {
      inUse: 1, free: 3, allocated: 5, acquires: 8, releases: 7, dropped: 1,
      inUseBytes: 4096, freeBytes: 2 * 64 + 1024,
      perClass: [
        { size: 64, inUse: 0, free: 2, allocated: 3, acquires: 6, releases: 6, dropped: 1 },
        { size: 1024, inUse: 0, free: 1, allocated: 1, acquires: 1, releases: 1, dropped: 0 },
        { size: 4096, inUse: 1, free: 0, allocated: 1, acquires: 1, releases: 0, dropped: 0 },
      ],
    });
    assert.equal(pool.inUse, 1);
    pool.clear();
    const t = pool.stats();
    assert.equal(t.free, 0);
    assert.equal(t.freeBytes, 0);
    assert.equal(t.inUse, 1);
    assert.equal(t.allocated, 5);
    pool.release(d);
    assert.equal(pool.stats().inUse, 0);
    assert.equal(pool.stats().free, 1);
  });

  it('a transferred (detached) buffer may be released and is not pooled', () => {
    const pool = new BufferPool();
    const b = pool.acquire(64);
    structuredClone(b.buffer, { transfer: [b.buffer] });
    assert.equal(b.byteLength, 0);
    pool.release(b);
    const s = pool.stats();
    assert.equal(s.inUse, 0);
    assert.equal(s.free, 0);
    assert.equal(s.dropped, 1);
    throwsPool(() => pool.release(b), 'POOL_DOUBLE_RELEASE');
    assert.equal(pool.acquire(64).byteLength, 64);
  });
});

describe('BufferPool option validation names the option', () => {
  const bad: [unknown, RegExp][] = [
    [{ classes: [] }, /`classes`/],
    [{ classes: 'x' }, /`classes`/],
    [{ classes: [64, 64] }, /`classes`.*ascending/],
    [{ classes: [256, 64] }, /`classes`.*ascending/],
    [{ classes: [0] }, /`classes`\[0\]/],
    [{ classes: [64, 1.5] }, /`classes`\[1\]/],
    [{ classes: [64, -3] }, /`classes`\[1\]/],
    [{ classes: [2 ** 31] }, /`classes`\[0\]/],
    [{ classes: ['64'] }, /`classes`\[0\]/],
    [{ maxPooledPerClass: -1 }, /`maxPooledPerClass`/],
    [{ maxPooledPerClass: 1.5 }, /`maxPooledPerClass`/],
    [{ maxPooledPerClass: NaN }, /`maxPooledPerClass`/],
    [{ maxPooledPerClass: '3' }, /`maxPooledPerClass`/],
    [{ maxPooled: 3 }, /unknown option `maxPooled`/],
  ];
  for (const [opts, re] of bad) {
    it(`rejects ${JSON.stringify(opts)}`, () => {
      assert.throws(() => new BufferPool(opts as never), (e: unknown) => e instanceof Error && re.test(e.message));
    });
  }

  it('accepts the defaults and explicit good values', () => {
    assert.equal(new BufferPool().maxPooledPerClass, 256);
    assert.equal(new BufferPool({ maxPooledPerClass: 0 }).maxPooledPerClass, 0);
    assert.deepEqual(new BufferPool({ classes: [1, 2, 3] }).classes, [1, 2, 3]);
    assert.throws(() => new BufferPool(null as never), TypeError);
  });
});

describe('BufferPool free lists bounded in bytes (issue 10, item 3)', () => {
  it('keeps at most maxPooledBytes free, dropping releases beyond it', () => {
    const pool = new BufferPool({ classes: [1024, 4096], maxPooledPerClass: 1000, maxPooledBytes: 10_000 });
    const bufs = Array.from({ length: 5 }, () => pool.acquire(4096));
    assert.equal(pool.inUseBytes, 5 * 4096);
    for (const b of bufs) pool.release(b);
    // Two 4096 B buffers fit in 10,000 B; the other three go to the GC.
    assert.equal(pool.freeBytes, 8192);
    assert.equal(pool.stats().dropped, 3);
    assert.equal(pool.inUseBytes, 0);
  });

  it('trim(keepBytes) gives free buffers back, largest classes first', () => {
    const pool = new BufferPool({ classes: [64, 1024, 65536], maxPooledPerClass: 100 });
    const bufs = [...Array.from({ length: 4 }, () => pool.acquire(64)), ...Array.from({ length: 3 }, () => pool.acquire(65536))];
    for (const b of bufs) pool.release(b);
    assert.equal(pool.freeBytes, 4 * 64 + 3 * 65536);
    assert.equal(pool.trim(70_000), 2 * 65536);
    assert.equal(pool.freeBytes, 4 * 64 + 65536);
    assert.equal(pool.trim(0), 4 * 64 + 65536);
    assert.equal(pool.freeBytes, 0);
    assert.equal(pool.stats().free, 0);
    // A trimmed pool still hands out and takes back buffers.
    pool.release(pool.acquire(100));
    assert.equal(pool.freeBytes, 1024);
  });

  it('rejects a bad maxPooledBytes', () => {
    for (const v of [-1, 1.5, NaN, '3']) {
      assert.throws(() => new BufferPool({ maxPooledBytes: v as never }), /`maxPooledBytes`/);
    }
  });

  it('geometricClasses rounds a size up by at most 1/perOctave, where the default classes round up to 4x', () => {
    const classes = geometricClasses(64, 2 << 20, 8);
    assert.ok(classes[classes.length - 1]! >= 2 << 20);
    const pool = new BufferPool({ classes });
    for (let n = 65; n <= 2 << 20; n = Math.ceil(n * 1.37)) {
      assert.ok(pool.classSizeFor(n) <= n * 1.125 + 8, `${n} B gets a ${pool.classSizeFor(n)} B class`);
    }
    assert.equal(new BufferPool().classSizeFor(1025), 4096, 'the default classes: a 1,025 B frame holds 4 KiB');
    assert.ok(pool.classSizeFor(1025) <= 1160);
  });
});
