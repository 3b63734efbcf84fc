"""Benchmark the Sudoku engine and the environments against peers measured in the same run.

Prints ratios, never absolute claims alone:

* solver puzzles/s on easy, hard and extreme puzzles, against py-sudoku's solver;
* generator puzzles/s per tier, against py-sudoku's generator (``Sudoku(3).difficulty(0.5)``,
  which does not check uniqueness: our generator does more work per puzzle);
* vector env steps/s at N=1024 and N=16384, against gymnasium's ``SyncVectorEnv`` of the
  single env at the same N (random actions, drawn before timing).

Usage: ``python train/bench_env.py [--device cuda] [--peer-seconds 5]``. Needs the ``dev``
extra (py-sudoku).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from envs import sudoku
from envs.puzzle_pool import PuzzlePool
from envs.sudoku_env import LatentReasoningSudokuEnv
from envs.vector_env import LatentReasoningSudokuVectorEnv
from train import cli


@dataclass
class Args:
    device: str = "cpu"  # device of the vector env
    sizes: str = "1024,16384"  # comma-separated numbers of environments
    peer_seconds: float = 5.0  # time budget per measurement (seconds)
    skip: str = ""  # comma-separated parts to skip: solver,generator,vector,load
    load_lines: int = 200_000  # lines of the Sudoku-Extreme-style CSV that the file-loading benchmark reads


def rate(fn, items, budget: float) -> tuple[float, int]:
    """Items per second of ``fn`` over ``items``, stopping after ``budget`` seconds."""
    t0 = time.perf_counter()
    done = 0
    for x in items:
        fn(x)
        done += 1
        if time.perf_counter() - t0 > budget:
            break
    return done / (time.perf_counter() - t0), done


def py_sudoku_solve(puzzle: np.ndarray) -> None:
    from sudoku import Sudoku

    board = [[int(v) or None for v in puzzle[9 * r : 9 * r + 9]] for r in range(9)]
    Sudoku(3, 3, board=board).solve()


def py_sudoku_generate(seed: int) -> None:
    from sudoku import Sudoku

    Sudoku(3, seed=seed).difficulty(0.5)


def bench_solver(budget: float) -> None:
    print("\n== solver: puzzles/s (ours = envs.sudoku.solve, one call per puzzle) ==")
    print(f"{'tier':8s} {'ours':>10s} {'py-sudoku':>10s} {'ratio':>8s}  (py-sudoku puzzles timed)")
    for tier in ("easy", "hard", "extreme"):
        puzzles, _ = sudoku.generate(300, tier, seed=11)
        ours, _ = rate(sudoku.solve, puzzles, budget)
        peer, n = rate(py_sudoku_solve, puzzles, budget)
        print(f"{tier:8s} {ours:10.0f} {peer:10.1f} {ours / peer:7.0f}x  ({n})")


def bench_generator(budget: float) -> None:
    print("\n== generator: puzzles/s (ours: unique solution, tier bounds checked) ==")
    peer, n = rate(py_sudoku_generate, range(10_000), budget)
    print(f"py-sudoku Sudoku(3).difficulty(0.5): {peer:.1f} puzzles/s ({n} timed)")
    print(f"{'tier':8s} {'ours':>10s} {'ratio':>8s} {'clues min/mean/max':>20s} {'rating mean/max':>16s}")
    for tier in sudoku.TIERS:
        sudoku.generate(1, tier, seed=0)  # compile outside the timing
        t0 = time.perf_counter()
        p, _ = sudoku.generate(200, tier, seed=1)
        ours = 200 / (time.perf_counter() - t0)
        clues, ratings = (p > 0).sum(1), sudoku.rate(p)
        print(
            f"{tier:8s} {ours:10.0f} {ours / peer:7.0f}x {clues.min():6d}/{clues.mean():5.1f}/{clues.max():3d}"
            f" {ratings.mean():9.1f}/{ratings.max():4d}"
        )


def steps_per_second(step, actions, seconds: float) -> float:
    t0 = time.perf_counter()
    k = 0
    while True:
        step(actions[k % len(actions)])
        k += 1
        if time.perf_counter() - t0 > seconds:
            break
    return k / (time.perf_counter() - t0)


def bench_vector(sizes: list[int], device: str, seconds: float) -> None:
    print(f"\n== vector env: env-steps/s (random actions; ours on {device}) ==")
    print(f"{'N':>6s} {'ours':>12s} {'SyncVectorEnv':>14s} {'ratio':>8s}")
    p, s = sudoku.generate(512, "medium", seed=5)
    pool = PuzzlePool(p, s, "bench")
    rng = np.random.default_rng(0)
    for n in sizes:
        acts = rng.integers(0, 10, size=(4, n, 82))
        acts[..., 81] = rng.random((4, n)) < 0.05
        venv = LatentReasoningSudokuVectorEnv(num_envs=n, pool=pool, device=device)
        venv.reset(seed=0)
        t_acts = [torch.as_tensor(a, device=device) for a in acts]
        venv.step(t_acts[0])
        sync_fn = device.startswith("cuda") and torch.cuda.synchronize or (lambda: None)

        def vstep(a, venv=venv, sync_fn=sync_fn):
            venv.step(a)
            sync_fn()

        ours = steps_per_second(vstep, t_acts, seconds) * n
        sync = gym.vector.SyncVectorEnv([lambda: LatentReasoningSudokuEnv(pool=pool) for _ in range(n)])
        sync.reset(seed=0)
        peer = steps_per_second(sync.step, list(acts), seconds) * n if device == "cpu" or n <= 16384 else float("nan")
        print(f"{n:6d} {ours:12.0f} {peer:14.0f} {ours / peer:7.0f}x")


def bench_load(lines: int) -> None:
    """``sudoku.load`` of a ``lines``-line CSV against parsing and checking it line by line in Python."""
    import tempfile

    p, s = sudoku.generate(min(lines, 2000), "medium", seed=0)
    rows = [f"bench,{a},{b},0" for a, b in zip(sudoku.format(p), sudoku.format(s), strict=True)]
    rows = (rows * (lines // len(rows) + 1))[:lines]
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/puzzles.csv"
        with open(path, "w") as f:
            f.write("source,question,answer,rating\n" + "\n".join(rows) + "\n")
        t0 = time.perf_counter()
        sudoku.load(path)
        ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for row in rows:  # the baseline: one parse and one conflict check per line, then one batched solve
        _, q, a, _ = row.split(",")
        sudoku.parse(q)
        sudoku.is_solution(sudoku.parse(q), sudoku.parse(a, check=False))
    base = time.perf_counter() - t0
    print(f"\nload {lines:,} CSV lines: {ours:.1f} s; line-by-line parse and check (without the solve): {base:.1f} s; "
          f"ratio {base / ours:.1f}x")


def main(argv: list[str] | None = None) -> None:
    args = cli.parse(Args, argv, description=__doc__)
    skip = set(filter(None, args.skip.split(",")))
    torch.manual_seed(0)
    sudoku.solve(sudoku.generate(1, "easy", seed=0)[0][0])  # compile the kernels before timing
    if "solver" not in skip:
        bench_solver(args.peer_seconds)
    if "generator" not in skip:
        bench_generator(args.peer_seconds)
    if "load" not in skip:
        bench_load(args.load_lines)
    if "vector" not in skip:
        bench_vector([int(x) for x in args.sizes.split(",")], args.device, args.peer_seconds)


if __name__ == "__main__":
    main()
