"""The one held-out split every script uses: training pool and evaluation puzzles, never overlapping.

* Generated tier: the training pool is ``generate(pool_size, tier, seed + TRAIN_SEED_OFFSET)``
  and the held-out set ``generate(eval_size, tier, seed + EVAL_SEED_OFFSET)``.
* File: the last ``eval_size`` puzzles are held out, the rest is the training pool.

Either way every training puzzle equal to a held-out one is dropped from the pool, so
the held-out set keeps its exact size and is never trained on. The benchmark's
per-tier sets use their own offset (:func:`benchmark_set`), disjoint from both seeds.

With ``need_solutions=False`` (the verifier reward) no solution is computed or read
for the training pool, which carries ``None``. The held-out set carries ``None`` too,
unless ``eval_labels``: then it keeps the solutions its source already holds (a
generated tier's, or a file's solution column; nothing is solved), for evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs import sudoku
from envs.puzzle_pool import PuzzlePool, make_pool

TRAIN_SEED_OFFSET = 0
EVAL_SEED_OFFSET = 1_000_003
BENCHMARK_SEED_OFFSET = 2_000_000  # benchmark sets: seed BENCHMARK_SEED_OFFSET + 1000 * seed + tier index


@dataclass
class Split:
    """``train`` pool, held-out ``eval_puzzles (n, 81)`` and ``eval_solutions`` (``None`` when label-free)."""

    train: PuzzlePool
    eval_puzzles: np.ndarray
    eval_solutions: np.ndarray | None
    source: str


def split(
    difficulty: str,
    puzzles: str | None,
    *,
    seed: int,
    pool_size: int,
    eval_size: int,
    need_solutions: bool = True,
    eval_labels: bool = False,
) -> Split:
    """Build the split from a tier (``puzzles`` empty) or a puzzle file. Raises ``ValueError`` on bad sizes."""
    if eval_size < 1:
        raise ValueError(f"--eval-size must be at least 1, got {eval_size}")
    if puzzles:
        pool = make_pool(None, puzzles, need_solutions=need_solutions, pool_size=0, pool_seed=0)
        k = len(pool) - eval_size
        if k < 1:
            raise ValueError(f"{puzzles} holds {len(pool)} puzzles, not more than --eval-size {eval_size}")
        sols = pool.solutions
        train_p, train_s = pool.puzzles[:k], None if sols is None or not need_solutions else sols[:k]
        eval_p, eval_s = pool.puzzles[k:], None if sols is None or not (need_solutions or eval_labels) else sols[k:]
        source = pool.source
    else:
        if pool_size < 1:
            raise ValueError(f"--pool-size must be at least 1, got {pool_size}")
        train_p, train_s = sudoku.generate(pool_size, difficulty, seed=seed + TRAIN_SEED_OFFSET)
        eval_p, eval_s = sudoku.generate(eval_size, difficulty, seed=seed + EVAL_SEED_OFFSET)
        train_s = train_s if need_solutions else None
        eval_s = eval_s if need_solutions or eval_labels else None
        source = f"generated:{difficulty}"
    held = {bytes(p) for p in np.asarray(eval_p, dtype=np.int8)}
    keep = np.array([bytes(p) not in held for p in np.asarray(train_p, dtype=np.int8)])
    if not keep.any():
        raise ValueError(f"every training puzzle of {source} is also held out; nothing is left to train on")
    train = PuzzlePool(train_p[keep], None if train_s is None else train_s[keep], source)
    return Split(train, eval_p, eval_s, source)


def benchmark_set(tier: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's ``n`` held-out puzzles and solutions of ``tier`` for evaluation seed ``seed``."""
    return sudoku.generate(n, tier, seed=BENCHMARK_SEED_OFFSET + 1000 * seed + list(sudoku.TIERS).index(tier))
