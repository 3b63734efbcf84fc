"""The one held-out split every script uses: training pool and evaluation puzzles that share no solution grid.

* Generated tier: the training pool is ``generate(pool_size, tier, seed + TRAIN_SEED_OFFSET)``
  and the held-out set ``generate(eval_size, tier, seed + EVAL_SEED_OFFSET)`` (the tier
  enters the generator's seed too, so tiers of one seed share no grid by construction).
* A real collection (``sudoku17``, ``top1465``; see :mod:`envs.real_sets`): the held-out
  set is the last ``eval_size`` puzzles of its *training* part (a validation slice: the
  test part is for the benchmark alone), the rest is the training pool.
* File: the last ``eval_size`` puzzles are held out, the rest is the training pool.

Either way every training puzzle whose solution grid is equivalent, under the Sudoku
symmetries (:mod:`envs.canonical`), to the grid of a held-out puzzle, of a test puzzle of
a real collection, or of a grid in ``exclude`` (e.g. an RL run's held-out set, passed to
its warm start) is dropped from the pool, so the held-out set keeps its exact size and no
evaluated grid is ever trained on. :attr:`Split.record` says what each set is and how many
were dropped; ``run.json`` stores it. The benchmark's per-tier sets use their own offset
(:func:`benchmark_set`), disjoint from both seeds.

With ``need_solutions=False`` (the verifier reward) no solution is given to the training
pool, which carries ``None`` (the grids are still solved here, only to compare them). The
held-out set carries ``None`` too, unless ``eval_labels``: then it keeps the solutions its
source already holds, for evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from envs import canonical, real_sets, sudoku
from envs.puzzle_pool import PuzzlePool, make_pool

TRAIN_SEED_OFFSET = 0
EVAL_SEED_OFFSET = 1_000_003
BENCHMARK_SEED_OFFSET = 2_000_000  # benchmark sets: seed BENCHMARK_SEED_OFFSET + 1000 * seed + tier index


@dataclass
class Split:
    """``train`` pool, held-out ``eval_puzzles (n, 81)`` and ``eval_solutions`` (``None`` when label-free).

    ``train_grids`` / ``eval_grids``: ``uint64`` canonical-grid hashes of the pool's and the
    held-out set's solutions (:func:`envs.canonical.grid_hash`); ``record``: each set's
    source, seed, size and the training puzzles dropped for a shared grid.
    """

    train: PuzzlePool
    eval_puzzles: np.ndarray
    eval_solutions: np.ndarray | None
    source: str
    train_grids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    eval_grids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    record: dict[str, Any] = field(default_factory=dict)


def _solved(p: np.ndarray, s: np.ndarray | None) -> np.ndarray:
    """``s``, or the unique solutions of ``p`` found by the search (only to compare grids)."""
    if s is not None:
        return s
    return sudoku.unique_solutions(p)


def split(
    difficulty: str,
    puzzles: str | None,
    *,
    seed: int,
    pool_size: int,
    eval_size: int,
    need_solutions: bool = True,
    eval_labels: bool = False,
    exclude: np.ndarray | None = None,
) -> Split:
    """Build the split from a tier (``puzzles`` empty), a real collection's name or a puzzle file.

    ``exclude``: ``uint64`` grid hashes the training pool must not contain besides the
    held-out set's and the real test splits'. Raises ``ValueError`` on bad sizes.
    """
    if eval_size < 1:
        raise ValueError(f"--eval-size must be at least 1, got {eval_size}")
    real = real_sets.parse_spec(puzzles) if puzzles else None
    hashes = None
    if real is not None:
        if real[1] == "test":
            raise ValueError(f"--puzzles {puzzles}: the test part is for evaluation only; train on {real[0]} "
                             f"(its training part, with a validation slice held out)")
        p, s, lines = real_sets.load_part(puzzles, solve=need_solutions or eval_labels)
        hashes = real_sets.grid_hashes(real[0], lines)
        k = len(p) - eval_size
        if k < 1:
            raise ValueError(f"{puzzles} holds {len(p)} training puzzles, not more than --eval-size {eval_size}")
        train_p, train_s = p[:k], None if s is None or not need_solutions else s[:k]
        eval_p, eval_s = p[k:], None if s is None else s[k:]
        source = f"collection:{real[0]}:train"
        rec_train = {"source": source, "lines": [int(lines[0]), int(lines[k - 1])],
                     "dropped_test_grid_lines": real_sets.dropped_lines(real[0])}
        rec_eval = {"source": f"collection:{real[0]}:train (validation slice)", "lines": [int(lines[k]), int(lines[-1])]}
    elif puzzles:
        pool = make_pool(None, puzzles, need_solutions=need_solutions, pool_size=0, pool_seed=0)
        k = len(pool) - eval_size
        if k < 1:
            raise ValueError(f"{puzzles} holds {len(pool)} puzzles, not more than --eval-size {eval_size}")
        sols = pool.solutions
        train_p, train_s = pool.puzzles[:k], None if sols is None or not need_solutions else sols[:k]
        eval_p, eval_s = pool.puzzles[k:], None if sols is None or not (need_solutions or eval_labels) else sols[k:]
        source = pool.source
        rec_train = {"source": source, "puzzles": [1, k]}
        rec_eval = {"source": source, "puzzles": [k + 1, len(pool)]}
    else:
        if pool_size < 1:
            raise ValueError(f"--pool-size must be at least 1, got {pool_size}")
        train_p, train_s = sudoku.generate(pool_size, difficulty, seed=seed + TRAIN_SEED_OFFSET)
        eval_p, eval_s = sudoku.generate(eval_size, difficulty, seed=seed + EVAL_SEED_OFFSET)
        source = f"generated:{difficulty}"
        rec_train = {"source": source, "seed": seed + TRAIN_SEED_OFFSET}
        rec_eval = {"source": source, "seed": seed + EVAL_SEED_OFFSET}
    if hashes is not None:
        train_h, eval_h = hashes[: len(train_p)], hashes[len(train_p):]
    else:
        train_h = canonical.grid_hash(_solved(train_p, train_s))
        eval_h = canonical.grid_hash(_solved(eval_p, eval_s))
    train_s = train_s if need_solutions else None
    eval_s = eval_s if need_solutions or eval_labels else None
    banned = [eval_h, real_sets.test_grid_hashes()] + ([np.asarray(exclude, np.uint64)] if exclude is not None else [])
    keep = ~np.isin(train_h, np.concatenate(banned))
    if not keep.any():
        raise ValueError(f"every training puzzle of {source} shares its grid with an evaluated one; nothing is left to train on")
    record = {
        "train": {**rec_train, "size": int(keep.sum()), "dropped_shared_grid": int((~keep).sum())},
        "eval": {**rec_eval, "size": len(eval_p)},
        "excluded_grids": 0 if exclude is None else len(exclude),
    }
    train = PuzzlePool(train_p[keep], None if train_s is None else train_s[keep], source)
    return Split(train, eval_p, eval_s, source, train_h[keep], eval_h, record)


def benchmark_size(tier: str, n: int, seeds: int) -> int:
    """Puzzles per seed of ``tier`` for ``seeds`` consecutive seeds from 0: ``n``, or for a real test part at most
    its size over ``seeds`` (``ValueError`` when it holds fewer puzzles than seeds)."""
    if real_sets.parse_spec(tier) is None:
        return n
    k = min(n, len(real_sets.load_part(tier, solve=False)[0]) // seeds)
    if k < 1:
        raise ValueError(f"{tier} is too small for {seeds} seeds: fewer puzzles than seeds")
    return k


def benchmark_set(tier: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's ``n`` held-out puzzles and solutions of ``tier`` for evaluation seed ``seed``.

    ``tier`` is a generated tier or a real collection's test part (``"sudoku17:test"``): its
    puzzles ``seed * n`` to ``seed * n + n - 1`` (``ValueError`` when the part is shorter).
    """
    real = real_sets.parse_spec(tier)
    if real is not None:
        if real[1] != "test":
            raise ValueError(f"benchmark sets of a real collection come from its test part; write {real[0]}:test")
        p, s, _ = real_sets.load_part(tier)
        if (seed + 1) * n > len(p):
            raise ValueError(f"{tier} holds {len(p)} puzzles; seed {seed} with {n} per seed needs {(seed + 1) * n}")
        return p[seed * n:(seed + 1) * n], s[seed * n:(seed + 1) * n]
    return sudoku.generate(n, tier, seed=BENCHMARK_SEED_OFFSET + 1000 * seed + list(sudoku.TIERS).index(tier))


def grids_tensor(hashes: np.ndarray | None) -> torch.Tensor | None:
    """``int64`` tensor of ``uint64`` grid hashes, for a checkpoint's ``train_grids`` (plain tensors load safely);
    None (an unknown lineage) stays None."""
    if hashes is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(hashes, dtype=np.uint64).view(np.int64).copy())


def trained_grids(ck: dict[str, Any]) -> np.ndarray | None:
    """The grid hashes every run in a checkpoint's lineage trained on (``train_grids``); None for an older checkpoint."""
    t = ck.get("train_grids")
    return None if t is None else t.numpy().view(np.uint64)


def lineage(split_: Split, start: dict[str, Any] | None) -> np.ndarray | None:
    """The grids a run trained on: its pool's plus those of the checkpoint it started from; None when that
    checkpoint records none (an older one), so that no later reader takes the pool alone for the whole lineage."""
    if start is None:
        return split_.train_grids
    before = trained_grids(start)
    return None if before is None else np.union1d(split_.train_grids, before)


def without_trained(split_: Split, grids: np.ndarray | None, who: str) -> Split:
    """``split_`` with every held-out puzzle whose grid is in ``grids`` (a start's lineage) dropped and counted."""
    if grids is None:
        split_.record["eval"][f"trained_by_{who}"] = "unknown (its checkpoint records no training grids)"
        return split_
    keep = ~np.isin(split_.eval_grids, grids)
    split_.record["eval"][f"dropped_trained_by_{who}"] = int((~keep).sum())
    if not keep.any():
        raise ValueError(f"every held-out puzzle of {split_.source} shares its grid with the {who}'s training data")
    if keep.all():
        return split_
    split_.record["eval"]["size"] = int(keep.sum())
    sols = None if split_.eval_solutions is None else split_.eval_solutions[keep]
    return replace(split_, eval_puzzles=split_.eval_puzzles[keep], eval_solutions=sols, eval_grids=split_.eval_grids[keep])
