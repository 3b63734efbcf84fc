"""Interval estimates: over puzzles (bootstrap, for benchmark tables) and over training seeds (Student t)."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(per_seed: list[np.ndarray], reps: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of per-seed means, with a stratified percentile bootstrap interval.

    ``per_seed[k]`` holds one value per puzzle of seed ``k``. Each replicate resamples
    the puzzles of every seed with replacement (seeds are strata) and recomputes the
    mean of seed means; the interval is the central ``level`` of the replicates.
    Returns ``(mean, low, high)``. A fixed ``seed`` keeps tables reproducible.
    """
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a, dtype=np.float64) for a in per_seed]
    mean = float(np.mean([a.mean() for a in arrays]))
    reps_means = np.zeros(reps)
    for a in arrays:
        idx = rng.integers(0, len(a), size=(reps, len(a)))
        reps_means += a[idx].mean(1)
    reps_means /= len(arrays)
    lo, hi = np.quantile(reps_means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)


# two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def seed_interval(values: list[float] | np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student t interval over training seeds: ``mean ± t_{0.975, n-1} s / sqrt(n)``.

    ``values`` holds one number per training seed (e.g. a run's final solve rate). With one
    seed the interval is the point itself (nothing to estimate a spread from).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("seed_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    t = _T975[min(x.size - 1, len(_T975)) - 1] if x.size - 1 <= len(_T975) else 1.96
    half = t * float(x.std(ddof=1)) / np.sqrt(x.size)
    return mean, mean - half, mean + half
