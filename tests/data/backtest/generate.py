#!/usr/bin/env python3
"""Writes the recorded backtest scenarios in this folder (deterministic: fixed seed).

Each scenario is 40 intervals of 30 s at 100 requests/s in all, split between canary and
baseline by the traffic weight the policy would have set: 10% for the first 10 intervals
(the step's 5 minutes), 50% after. Where the policy holds the first step longer (a failed
check restarts its 5 minutes; an interval without data cannot end it), `first_step` says for
how many intervals, so that the data is what the policy would have seen: a backtest marks an
interval recorded at another weight than its own (SPLIT). `low-traffic` is 70 intervals in
which the canary gets 2 requests each. Run again with `python3 tests/data/backtest/generate.py`.
"""
import json
import math
import random
from pathlib import Path

BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
# Share of requests at or below each bound for a healthy service (p99 in (0.25, 0.5]).
HEALTHY = [0.55, 0.85, 0.985, 0.997, 0.9995, 1.0]
SLOW = [0.50, 0.78, 0.93, 0.955, 0.99, 1.0]  # ~4.5% slower than 500 ms: p99 near 1 s


def binomial(rng, n, p):
    if n * p > 50:
        return max(0, min(n, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    return sum(1 for _ in range(n) if rng.random() < p)


def histogram(rng, n, shape):
    counts, left, prev = {}, n, 0.0
    cumulative = 0
    for bound, share in zip(BUCKETS, shape):
        step = (share - prev) / max(1e-12, 1 - prev)
        got = binomial(rng, left, step) if step < 1 else left
        cumulative += got
        left -= got
        prev = share
        counts[f"{bound:g}"] = cumulative
    counts["+Inf"] = n
    return counts


def arm(rng, requests, error_rate, shape, memory):
    return {
        "requests": requests,
        "errors": binomial(rng, requests, error_rate),
        "latency": histogram(rng, requests, shape),
        "memory": [round(rng.gauss(memory, memory * 0.02)) for _ in range(2)],
    }


def scenario(name, seed, canary_error=0.01, canary_shape=HEALTHY, canary_traffic=True, gap=(), length=40,
             canary_fixed=None, first_step=10):
    rng = random.Random(seed)
    intervals = []
    for i in range(length):
        weight = 0.10 if i < first_step else 0.50
        if canary_fixed is not None:
            canary_requests = canary_fixed
        else:
            canary_requests = binomial(rng, 3000, weight) if canary_traffic else 0
        baseline_requests = 3000 - canary_requests
        row = {
            "canary": arm(rng, canary_requests, canary_error, canary_shape, 2.1e8),
            "baseline": arm(rng, baseline_requests, 0.01, HEALTHY, 2.0e8),
        }
        if i in gap:
            row = {"error": "Prometheus unreachable: connection refused"}
        intervals.append(row)
    doc = {
        "workload": {"namespace": "shop", "name": "checkout"},
        "revision": name,
        "start": "2026-11-01T10:00:00Z",
        "interval": "30s",
        "intervals": intervals,
    }
    Path(__file__).with_name(f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")


# The p99 check fails once at 10:01:00 (a noisy p99 of 300 requests), so the step at 10%
# lasts until 10:06:00: 12 intervals.
scenario("good", 1, first_step=12)
scenario("error-2x", 2, canary_error=0.02)
scenario("p99-regression", 3, canary_shape=SLOW)
scenario("no-traffic", 4, canary_traffic=False)
# The step at 10% ends at the first interval with data after the outage: 10:06:30.
scenario("prometheus-gap", 5, gap=range(8, 12), first_step=13)
# A healthy canary that gets 2 requests per interval, for 35 minutes.
scenario("low-traffic", 6, length=70, canary_fixed=2)
