# Wilson score intervals computed independently of the closed form used in src/eval/stats.ts:
# the interval is {p : |k/n − p| ≤ z·√(p(1−p)/n)} (inverting the score test), found here by
# bisection on each side of k/n. z = Φ⁻¹(0.975) from the inverse error function via bisection too.
# Run with Debian's python: /usr/bin/python3 scripts/golden/eval/wilson.py
import json, math, os

def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))

def bisect(f, lo, hi, iters=200):
    flo = f(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        fm = f(mid)
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return (lo + hi) / 2

z = bisect(lambda x: phi(x) - 0.975, 0.0, 5.0)

def wilson(k, n):
    p = k / n
    g = lambda q: abs(p - q) - z * math.sqrt(q * (1 - q) / n)  # ≤ 0 inside the interval
    lower = 0.0 if k == 0 else bisect(g, 0.0, p)
    upper = 1.0 if k == n else bisect(g, p, 1.0)
    return [lower, upper]

cases = [(2, 3), (0, 5), (5, 5), (7, 10), (31, 50), (640, 1000), (1, 1)]
out = {"z": z, "cases": [{"k": k, "n": n, "interval": wilson(k, n)} for k, n in cases]}
path = os.path.join(os.path.dirname(__file__), "../../../test/golden/eval/wilson.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print(json.dumps(out))
