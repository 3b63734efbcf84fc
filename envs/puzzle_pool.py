"""Where an environment's puzzles come from: a generated tier, a real collection, a file or arrays.

Both the single and the vector environment draw from a :class:`PuzzlePool`, built
once from the environment's keyword arguments, so that the two see the same puzzles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs import real_sets, sudoku


@dataclass
class PuzzlePool:
    """``puzzles (n, 81)`` int8 and, unless label-free, their unique ``solutions (n, 81)``."""

    puzzles: np.ndarray
    solutions: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.puzzles)


def make_pool(
    difficulty: str | None,
    puzzles: Any,
    *,
    need_solutions: bool,
    pool_size: int,
    pool_seed: int,
) -> PuzzlePool:
    """Build the pool from the environment's ``difficulty`` / ``puzzles`` arguments.

    ``puzzles`` may be the name of a real collection (``"sudoku17"``, ``"top1465:test"``;
    see :mod:`envs.real_sets`), a file path (see :func:`envs.sudoku.load`), an array of
    puzzles, or a pair ``(puzzles, solutions)`` (each puzzle's only solution: one that does not
    solve it, or a puzzle with several, is refused). Without solutions and with
    ``need_solutions`` each puzzle is solved and must have exactly one solution; without
    ``need_solutions`` (verifier reward, no teacher) no solution is computed or read.
    """
    if puzzles is None:
        if difficulty not in sudoku.TIERS:
            raise ValueError(f"unknown difficulty {difficulty!r}; choose one of {sorted(sudoku.TIERS)}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        p, s = sudoku.generate(pool_size, difficulty, seed=pool_seed)
        return PuzzlePool(p, s, f"generated:{difficulty}:seed={pool_seed}")
    if isinstance(puzzles, str) and real_sets.parse_spec(puzzles) is not None:
        p, s, _ = real_sets.load_part(puzzles, solve=need_solutions)
        name, part = real_sets.parse_spec(puzzles)
        return PuzzlePool(p, s, f"collection:{name}:{part}")
    if isinstance(puzzles, (str, os.PathLike)):
        p, s = sudoku.load(puzzles, solve=need_solutions)
        _refuse_full(p, f"{os.fspath(puzzles)}: puzzle")
        return PuzzlePool(p, s, f"file:{os.fspath(puzzles)}")
    sols = None
    if isinstance(puzzles, tuple):
        if len(puzzles) != 2:
            raise ValueError("puzzles as a tuple must be (puzzles, solutions)")
        puzzles, sols = puzzles
    p = sudoku.as_grids(puzzles, name="puzzles").reshape(-1, 81)
    if len(p) == 0:
        raise ValueError("puzzles is empty")
    _refuse_full(p, "puzzles")
    for k, g in enumerate(p):
        bad = sudoku.conflicts(g)
        if bad.any():
            raise ValueError(f"puzzles[{k}]: givens conflict at cells {np.flatnonzero(bad).tolist()}")
    if sols is not None:
        s = sudoku.as_grids(sols, name="solutions").reshape(-1, 81)
        if s.shape != p.shape:
            raise ValueError(f"puzzles and solutions differ in shape: {p.shape} vs {s.shape}")
        ok = sudoku.is_solution(p, s)
        if not np.all(ok):
            raise ValueError(f"solutions[{int(np.flatnonzero(~ok)[0])}] does not solve its puzzle")
        several = np.flatnonzero(sudoku.count_solutions(p, 2) > 1)
        if several.size:  # the reward would call every other valid answer wrong
            raise ValueError(f"puzzles[{int(several[0])}] has several solutions; exactly one is required")
    elif need_solutions:
        counts = sudoku.count_solutions(p, 2)
        bad_k = np.flatnonzero(counts != 1)
        if bad_k.size:
            k = int(bad_k[0])
            raise ValueError(f"puzzles[{k}] has {'no' if counts[k] == 0 else 'several'} solutions; exactly one is required")
        s = np.stack([sudoku.solve(g) for g in p])
    else:
        s = None
    return PuzzlePool(p, s, f"arrays:{len(p)}")


def _refuse_full(p: np.ndarray, what: str) -> None:
    """A puzzle with no blank leaves nothing to do (and no reward to scale): refuse it, naming the first."""
    full = np.flatnonzero((p != 0).all(-1))
    if full.size:
        raise ValueError(f"{what}[{int(full[0])}] has no blank cell; every puzzle needs at least one")
