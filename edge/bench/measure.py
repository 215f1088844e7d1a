"""Measurement helpers of ``edgeqc bench``: percentiles, process CPU time, RSS sampling.

Percentiles use the nearest-rank method (as :meth:`edge.plc.simulator.SimReport.latency_summary`),
so p99 of 100 samples is the 99th smallest, never an interpolation between samples.
RSS comes from ``/proc/self/status`` (``VmRSS``, kB; Linux) and the peak from
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (kB on Linux).
"""

from __future__ import annotations

import math
import os
import resource
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def percentile(xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile (0 < q <= 100) of ``xs``; None for no samples."""
    if not len(xs):
        return None
    s = sorted(xs)
    k = max(1, math.ceil(q / 100.0 * len(s)))
    return float(s[min(k, len(s)) - 1])


def summary(xs: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """``count, mean, p50, p90, p99, max`` of ``xs`` (ms or whatever unit ``xs`` has)."""
    if not len(xs):
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, digits)

    return {"count": len(xs), "mean": r(float(np.mean(xs))), "p50": r(percentile(xs, 50)),
            "p90": r(percentile(xs, 90)), "p99": r(percentile(xs, 99)), "max": r(float(max(xs)))}


def percentile_difference_ci(a: Sequence[float], b: Sequence[float], q: float = 99.0, level: float = 0.90,
                             resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap of ``percentile(a, q) - percentile(b, q)`` (ms in, ms out).

    Both samples are resampled independently with replacement ``resamples`` times (nearest-rank
    percentiles, as :func:`percentile`); the interval is the ``(1-level)/2`` and ``(1+level)/2``
    quantiles of the resampled differences (Efron & Tibshirani, *An Introduction to the
    Bootstrap*, 1993, ch. 13). Why: the p99 of a few thousand samples from a heavy-tailed latency
    distribution moves by several ms between runs; the interval says how far one run can be
    trusted. Returns ``{"value", "ci": [lo, hi], "level", "resamples"}`` (None values without data).
    """
    xa, xb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not len(xa) or not len(xb):
        return {"value": None, "ci": [None, None], "level": level, "resamples": 0}
    rng = np.random.default_rng(seed)

    def rank(n: int) -> int:
        return min(n, max(1, math.ceil(q / 100.0 * n))) - 1

    diffs = np.empty(resamples)
    chunk = 100  # rows per batch: 100 x 12 000 float64 = 9.6 MB
    for i in range(0, resamples, chunk):
        m = min(chunk, resamples - i)
        pa = np.partition(rng.choice(xa, (m, len(xa))), rank(len(xa)), axis=1)[:, rank(len(xa))]
        pb = np.partition(rng.choice(xb, (m, len(xb))), rank(len(xb)), axis=1)[:, rank(len(xb))]
        diffs[i:i + m] = pa - pb
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    value = percentile(a, q)
    other = percentile(b, q)
    assert value is not None and other is not None
    return {"value": round(value - other, 3), "ci": [round(float(lo), 3), round(float(hi), 3)],
            "level": level, "resamples": resamples}


def median_ci(xs: Sequence[float], level: float = 0.90, resamples: int = 4000, seed: int = 0) -> list[float | None]:
    """Percentile-bootstrap interval of the median of ``xs`` (same method as
    :func:`percentile_difference_ci`); ``[None, None]`` for fewer than 2 values."""
    x = np.asarray(xs, np.float64)
    if len(x) < 2:
        return [None, None]
    meds = np.median(np.random.default_rng(seed).choice(x, (resamples, len(x))), axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, (1 + level) / 2])
    return [round(float(lo), 3), round(float(hi), 3)]


def median(xs: Sequence[float]) -> float | None:
    return float(np.median(xs)) if len(xs) else None


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all threads, in s."""
    return time.process_time()


def rss_bytes() -> int | None:
    """Current resident set size in bytes (``VmRSS``), None where /proc is not available."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes (``ru_maxrss``, kB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


STEADY_SKIP = 2
"""Completions left out at the start of a throughput block: the pipeline fills (capture prepares 2
frames ahead, 2 batches in flight) before it runs at its steady rate; bare calls are cut the same."""


@dataclass
class Timing:
    """``n`` items done in ``wall_s`` wall-clock and ``cpu_s`` process CPU seconds; ``steady_s``:
    from the ``STEADY_SKIP``-th completion to the last (``steady_n`` = n - STEADY_SKIP items), the
    block without its fill (None when the block is too short)."""

    n: int
    wall_s: float
    cpu_s: float
    steady_s: float | None = None
    steady_n: int = 0

    @property
    def ms_per_item(self) -> float:
        return 1000.0 * self.wall_s / max(1, self.n)

    @property
    def steady_ms_per_item(self) -> float:
        """ms per item in the steady window (the whole block's figure without one)."""
        if self.steady_s is None or self.steady_n <= 0:
            return self.ms_per_item
        return 1000.0 * self.steady_s / self.steady_n

    @property
    def cpu_ms_per_item(self) -> float:
        return 1000.0 * self.cpu_s / max(1, self.n)


class RssSampler:
    """Samples ``VmRSS`` every ``interval`` s in a daemon thread: ``samples`` = [(t_monotonic, bytes)]."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def start(self) -> RssSampler:
        self._t.start()
        return self

    def _run(self) -> None:
        while True:
            v = rss_bytes()
            if v is not None:
                with self._lock:
                    self.samples.append((time.monotonic(), v))
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._t.join(2.0)

    def between(self, t0: float, t1: float) -> list[tuple[float, int]]:
        with self._lock:
            return [(t, v) for t, v in self.samples if t0 <= t <= t1]


def rss_growth(samples: Sequence[tuple[float, int]], warmup_fraction: float = 0.2) -> dict[str, Any]:
    """RSS over a run after its first ``warmup_fraction``: start/end/peak MiB, growth MiB
    (mean of the last 10 % of samples minus mean of the first 10 % after warm-up) and the
    least-squares slope in MiB/min."""
    if len(samples) < 4:
        return {"samples": len(samples), "start_mib": None, "end_mib": None, "peak_mib": None,
                "growth_mib": None, "slope_mib_per_min": None}
    t = np.array([s[0] for s in samples], np.float64)
    v = np.array([s[1] for s in samples], np.float64) / 2**20
    keep = t >= t[0] + warmup_fraction * (t[-1] - t[0])
    t, v = t[keep], v[keep]
    k = max(1, len(v) // 10)
    slope = float(np.polyfit((t - t[0]) / 60.0, v, 1)[0]) if len(v) >= 3 and t[-1] > t[0] else 0.0
    idx = np.linspace(0, len(v) - 1, min(len(v), 21)).round().astype(int)
    return {"samples": len(v), "duration_s": round(float(t[-1] - t[0]), 1),
            "timeline_mib": [[round(float(t[i] - t[0]), 1), round(float(v[i]), 2)] for i in idx],
            "start_mib": round(float(v[:k].mean()), 2), "end_mib": round(float(v[-k:].mean()), 2),
            "peak_mib": round(float(v.max()), 2), "growth_mib": round(float(v[-k:].mean() - v[:k].mean()), 2),
            "slope_mib_per_min": round(slope, 3)}
