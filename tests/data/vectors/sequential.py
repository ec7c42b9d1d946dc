#!/usr/bin/env python3
"""Reference values for canaryd's sequential tests, computed independently with SciPy.

The construction (docs/judge.md): per interval, s successes out of s + f trials whose
null probability of success is theta0; a discrete half-normal prior (scale 1) on a log
odds ratio delta over 201 points in [0, 4]; the e-value is the prior mixture of the
product of per-interval likelihood ratios, each computed here as a difference of
scipy.stats.binom.logpmf values; the always-valid p-value is the running minimum of
1 / e-value.

Run: python3 tests/data/vectors/sequential.py > tests/data/vectors/sequential.json
"""
import json

import numpy as np
from scipy.special import logsumexp
from scipy.stats import binom

DELTA = np.linspace(0.0, 4.0, 201)
LOG_PRIOR = -0.5 * DELTA**2 - logsumexp(-0.5 * DELTA**2)


def p_values(trials):
    """trials: (successes, failures, theta0) per interval -> p-value after each."""
    acc = np.zeros_like(DELTA)
    p, out = 1.0, []
    for s, f, theta0 in trials:
        if s + f > 0 and 0.0 < theta0 < 1.0:
            odds = theta0 * np.exp(DELTA)
            theta = odds / (odds + 1.0 - theta0)
            acc += binom.logpmf(s, s + f, theta) - binom.logpmf(s, s + f, theta0)
            p = min(p, min(1.0, float(np.exp(-logsumexp(acc + LOG_PRIOR)))))
        out.append(p)
    return out


def two_arm(intervals, margin):
    out = []
    for c_req, c_ev, b_req, b_ev in intervals:
        if c_req <= 0 or b_req <= 0:
            out.append((0, 0, 0.5))
            continue
        rho = c_req / (c_req + b_req)
        out.append((c_ev, b_ev, rho * margin / (rho * margin + 1.0 - rho)))
    return p_values(out)


def main():
    rng = np.random.default_rng(20261123)
    intervals = []
    # 10 intervals at a 10% split, then 10 at 50%, 3000 requests each; canary errors 1.6%,
    # baseline errors 1%; one interval with no canary traffic.
    for share, n in [(0.1, 10), (0.5, 10)]:
        for _ in range(n):
            c = int(rng.binomial(3000, share))
            b = 3000 - c
            intervals.append([c, int(rng.binomial(c, 0.016)), b, int(rng.binomial(b, 0.01))])
    intervals[4] = [0, 0, 3000, 31]
    canary = [[r, e] for r, e, _, _ in intervals]
    cases = [
        {"name": "two-arm, any worse", "kind": "two-arm", "margin": 1.0, "intervals": intervals,
         "pValues": two_arm(intervals, 1.0)},
        {"name": "two-arm, 1.5x margin", "kind": "two-arm", "margin": 1.5, "intervals": intervals,
         "pValues": two_arm(intervals, 1.5)},
        {"name": "bound, errors above 1.2%", "kind": "bound", "p0": 0.012, "intervals": canary,
         "pValues": p_values([(e, r - e, 0.012) for r, e in canary])},
    ]
    print(json.dumps({"generatedBy": "tests/data/vectors/sequential.py", "cases": cases}, indent=1))


if __name__ == "__main__":
    main()
