"""What each difficulty tier and real test part is: clues, rating, what singles solve, how fast it is made.

One row per generated tier (``n`` puzzles of the benchmark's seed-0 set, timed as they are
generated) and per real test part (``sudoku17:test``, ``top1465:test``, their first ``n``):

* clues: min / mean / max givens;
* rating (:func:`envs.sudoku.rate`, guesses to solve and prove unique): median, mean, 90th percentile;
* propagation: the share the propagation agent (naked and hidden singles, one round per
  step) solves with up to 81 steps, i.e. the share singles alone solve;
* generation: puzzles/s of :func:`envs.sudoku.generate` on this machine, and its ratio to
  py-sudoku's generator (``Sudoku(3).difficulty(0.5)``, no uniqueness check) timed in the
  same process when the ``dev`` extra is installed;
* with ``--checkpoint``: the checkpoint's greedy solve rate and the verified search's at
  ``--k`` trajectories (:class:`agents.search_agent.SearchAgent`), with forward passes per
  puzzle counted by the model.

Writes ``tiers.md`` and ``tiers.json`` to ``--out``.

Example: ``python train/tier_table.py --n 64``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.rule_based import PropagationAgent
from agents.runner import run_episodes
from agents.search_agent import SearchAgent
from envs import real_sets, sudoku
from train import cli
from train.benchmark import DEFAULT_TIERS, drop_trained
from train.held_out import BENCHMARK_SEED_OFFSET, benchmark_set, benchmark_size
from train.run_folder import (
    RunFolder,
    RunFolderBusy,
    atomic_write_json,
    atomic_write_text,
    check_device,
    check_writable,
    run_info,
)
from train.stats import bootstrap_ci
from trm.pretrained import check_model_path


@dataclass
class Args:
    n: int = 256  # puzzles per row
    out: str = "runs/tiers"  # folder of tiers.md and tiers.json
    checkpoint: str = ""  # a DIS/TRM/RL checkpoint: adds its greedy and search solve rates
    k: int = 64  # trajectories of the search column
    chunk: int = 32  # puzzles per search batch (memory: chunk * k trajectories)
    device: str = "cpu"  # device of the network
    peer_seconds: float = 3.0  # time budget of the py-sudoku generator baseline

    def validate(self) -> None:
        if self.n < 1 or self.k < 1 or self.chunk < 1:
            raise ValueError("--n, --k and --chunk must be at least 1")
        if self.checkpoint:
            check_model_path(self.checkpoint, "--checkpoint")
        check_device(self.device)
        check_writable(self.out)


def peer_rate(seconds: float) -> float | None:
    """py-sudoku's generator in puzzles/s (:func:`train.bench_env.rate`), or None without the dev extra."""
    try:
        import sudoku  # noqa: F401 - py-sudoku, the dev extra
    except ImportError:
        return None
    from train.bench_env import py_sudoku_generate, rate

    return rate(py_sudoku_generate, range(10**9), seconds)[0]


def describe(puzzles: np.ndarray) -> dict[str, Any]:
    """Clue counts, rating statistics and the share singles solve, for ``puzzles (n, 81)``."""
    clues, ratings = (puzzles > 0).sum(1), sudoku.rate(puzzles)
    singles = run_episodes(PropagationAgent(), puzzles, None, max_steps=81)["solved"]
    return {
        "puzzles": len(puzzles),
        "clues": [int(clues.min()), float(clues.mean()), int(clues.max())],
        "rating_median": float(np.median(ratings)),
        "rating_mean": float(ratings.mean()),
        "rating_p90": float(np.percentile(ratings, 90)),
        "propagation_solves": float(singles.mean()),
    }


def solve_rates(path: str, puzzles: np.ndarray, solutions: np.ndarray, args: Args) -> dict[str, Any]:
    """Greedy and search-at-K solve rates [95% bootstrap interval] and forward passes per puzzle."""
    out = {}
    base = SearchAgent.from_checkpoint(path, device=args.device, k=1)
    for name, agent in (("greedy", base), (f"search_k{args.k}", SearchAgent(base.model, k=args.k, seed=0))):
        solved, passes = [], []
        for i in range(0, len(puzzles), args.chunk):
            r = run_episodes(agent, puzzles[i:i + args.chunk], solutions[i:i + args.chunk], device=args.device,
                             max_steps=agent.max_steps)
            solved.append(r["solved"])
            passes.append(r["forward_passes"])
        mean, lo, hi = bootstrap_ci([np.concatenate(solved)])
        out[name] = {"solve_rate": mean, "solve_lo": lo, "solve_hi": hi,
                     "forward_passes_per_puzzle": float(np.concatenate(passes).mean())}
    return out


def markdown(rows: list[dict[str, Any]], k: int) -> str:
    search = any("greedy" in r for r in rows)
    head = "| set | clues min/mean/max | rating median / mean / p90 | singles solve | generated / s |"
    head += f" greedy | search K = {k} |" if search else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        c = r["clues"]
        gen = "-" if r["per_second"] is None else f"{r['per_second']:.1f}"
        if r.get("vs_py_sudoku"):
            gen += f" ({r['vs_py_sudoku']:.2f}x py-sudoku)"
        line = (f"| {r['set']} | {c[0]}/{c[1]:.1f}/{c[2]} | {r['rating_median']:.0f} / {r['rating_mean']:.1f} / "
                f"{r['rating_p90']:.0f} | {r['propagation_solves']:.1%} | {gen} |")
        if search:
            for key in ("greedy", f"search_k{k}"):
                s = r[key]
                line += f" {s['solve_rate']:.1%} [{s['solve_lo']:.1%}, {s['solve_hi']:.1%}] |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build every row, print and write the table; returns the JSON payload."""
    args = cli.parse(Args, argv, description=__doc__)
    peer = peer_rate(args.peer_seconds)
    rows = []
    try:
        with RunFolder(Path(args.out), catch_signals=False):
            for tier in DEFAULT_TIERS:
                real = real_sets.parse_spec(tier)
                if real is None:
                    sudoku.generate(1, tier, seed=0)  # compile outside the timing
                n = benchmark_size(tier, args.n, 1)
                t0 = time.perf_counter()
                p, s = benchmark_set(tier, 0, n)
                rate = None if real else len(p) / (time.perf_counter() - t0)
                row = {"set": tier, **describe(p), "per_second": rate,
                       "vs_py_sudoku": None if rate is None or peer is None else rate / peer}
                if args.checkpoint:
                    sets = {tier: (p, s)}
                    row["trained_grids"] = drop_trained(sets, {args.checkpoint})
                    row.update(solve_rates(args.checkpoint, *sets[tier], args))
                rows.append(row)
                print(markdown(rows[-1:], args.k).splitlines()[-1], flush=True)
            table = markdown(rows, args.k)
            settings = {"n": args.n, "checkpoint": args.checkpoint, "k": args.k, "py_sudoku_per_second": peer,
                        "generated_seed": BENCHMARK_SEED_OFFSET}
            payload = {"settings": settings, "rows": rows, "run": run_info({"tiers": settings}, 0, args.device)}
            atomic_write_json(Path(args.out) / "tiers.json", payload)
            atomic_write_text(Path(args.out) / "tiers.md", table)
    except (RunFolderBusy, ValueError, FileNotFoundError) as e:
        cli.input_error(e)
    print("\n" + table)
    return payload


if __name__ == "__main__":
    main()
