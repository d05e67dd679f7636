/**
 * Small seeded PRNG for data order and augmentation (no libtorch in the data layer).
 *
 * `Rng` is SplitMix32-seeded xoshiro128**: 32-bit state words, exact integer arithmetic, so a
 * seed gives the same stream on every machine. Augmentation randomness is derived per pair from
 * (seed, epoch, position) with `rngFor`, which makes it independent of worker timing and lets a
 * resumed run reproduce the same crops and flips.
 */

function splitmix32(state: number): [number, number] {
  let z = (state + 0x9e3779b9) | 0;
  const next = z;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  z ^= z >>> 16;
  return [next, z >>> 0];
}

export class Rng {
  private s: Uint32Array;
  constructor(seed: number) {
    this.s = new Uint32Array(4);
    let st = seed | 0;
    for (let i = 0; i < 4; i++) {
      const [n, v] = splitmix32(st);
      st = n;
      this.s[i] = v;
    }
    if (this.s[0] === 0 && this.s[1] === 0 && this.s[2] === 0 && this.s[3] === 0) this.s[0] = 1;
  }

  /** Uniform integer in [0, 2^32). */
  nextUint32(): number {
    const s = this.s;
    const s0 = s[0]!, s1 = s[1]!, s2 = s[2]!, s3 = s[3]!;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = (s1 << 9) >>> 0;
    let n2 = (s2 ^ s0) >>> 0;
    let n3 = (s3 ^ s1) >>> 0;
    const n1 = (s1 ^ n2) >>> 0;
    const n0 = (s0 ^ n3) >>> 0;
    n2 = (n2 ^ t) >>> 0;
    n3 = rotl(n3, 11);
    s[0] = n0; s[1] = n1; s[2] = n2; s[3] = n3;
    return r;
  }

  /** Uniform float in [0, 1). */
  random(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [low, high) (high > low), without modulo bias. */
  int(low: number, high: number): number {
    const range = high - low;
    if (!(range >= 1) || range > 4294967296) throw new Error(`Rng.int: need low < high, got [${low}, ${high})`);
    if (range === 1) return low;
    const limit = 4294967296 - (4294967296 % range);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return low + (x % range);
    }
  }

  /** Fisher-Yates shuffle of `a` in place; returns `a`. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      const t = a[i]!;
      a[i] = a[j]!;
      a[j] = t;
    }
    return a;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** 32-bit hash of a list of integers (murmur3-style mixing). */
export function hashInts(...xs: number[]): number {
  let h = 0x811c9dc5 | 0;
  for (const x of xs) {
    let k = Math.imul(x | 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    // also mix the high part of numbers beyond 32 bits
    const hi = Math.floor(x / 4294967296) | 0;
    h = (Math.imul(h ^ hi, 0x85ebca6b) + 0x165667b1) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** 32-bit hash of a string (FNV-1a over UTF-16 code units, then mixed). */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return hashInts(h);
}

/** The generator for one item at a position: same (seed, ...key) → same stream. */
export function rngFor(seed: number, ...key: number[]): Rng {
  return new Rng(hashInts(seed, ...key));
}
