"""Golden values for src/data/random.ts, an independent Python implementation of the
published algorithms: SplitMix32 seeding (golden-ratio increment, murmur3-style finaliser)
feeding xoshiro128** (Blackman & Vigna). Run: /usr/bin/python3 scripts/golden/data/rng.py
"""
import json

M = 0xFFFFFFFF


def splitmix32(state):
    z = (state + 0x9E3779B9) & M
    nxt = z
    z = ((z ^ (z >> 16)) * 0x85EBCA6B) & M
    z = ((z ^ (z >> 13)) * 0xC2B2AE35) & M
    z ^= z >> 16
    return nxt, z


def rotl(x, k):
    return ((x << k) | (x >> (32 - k))) & M


class Xoshiro128ss:
    def __init__(self, seed):
        st = seed & M
        self.s = []
        for _ in range(4):
            st, v = splitmix32(st)
            self.s.append(v)

    def next(self):
        s = self.s
        result = (rotl((s[1] * 5) & M, 7) * 9) & M
        t = (s[1] << 9) & M
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 11)
        return result


out = {}
for seed in [0, 1, 42, 2**31 - 1]:
    g = Xoshiro128ss(seed)
    out[str(seed)] = [g.next() for _ in range(8)]
with open("test/golden/data/rng.json", "w") as f:
    json.dump({"source": "scripts/golden/data/rng.py", "uint32": out}, f, indent=1)
print("wrote test/golden/data/rng.json")
