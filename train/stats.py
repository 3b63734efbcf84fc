"""Interval estimates for benchmark tables."""

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
