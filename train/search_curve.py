"""Test-time search against compute: solve rate of :class:`agents.search_agent.SearchAgent` for K = 1, 2, 4, ..., 64.

One checkpoint, K trajectories per puzzle (K = 1 is greedy decoding of the same
checkpoint), the rules as verifier, on every generated tier and the real test parts
``sudoku17:test`` and ``top1465:test`` (the benchmark's held-out sets,
:func:`train.held_out.benchmark_set`) and on puzzle files; a puzzle whose grid the
checkpoint trained on is dropped (``search.json`` says how many). Forward passes per
puzzle are counted by the model at run time (a puzzle stops once verified, so they
grow more slowly than K). Scoring reads no label for the search itself; solved means
the final answer keeps the givens, fills every cell and breaks no rule, which for a
puzzle with one solution is that solution.

Writes to ``--out`` (each file to a temporary name, then renamed): ``search.json``,
``search.md`` (one row per tier and K) and ``search_curve.png`` (solve rate against
forward passes per puzzle, one line per tier).

Example: ``python train/search_curve.py --checkpoint runs/dis/checkpoint.pt --tiers extreme --puzzles 64``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.runner import run_episodes
from agents.search_agent import SearchAgent
from envs import sudoku
from train import cli
from train.benchmark import DEFAULT_TIERS, check_tiers, drop_trained, pairs
from train.held_out import benchmark_set, benchmark_size
from train.run_folder import (
    RunFolder,
    RunFolderBusy,
    atomic_write_json,
    atomic_write_text,
    check_device,
    check_seed,
    check_writable,
    run_info,
)
from train.stats import bootstrap_ci
from trm.checkpoint import atomic_write
from trm.pretrained import check_model_path


@dataclass
class Args:
    checkpoint: str = "runs/dis/checkpoint.pt"  # a train_dis.py, train_trm.py or RL checkpoint
    out: str = "runs/search"  # folder of search.json, search.md and search_curve.png
    tiers: str = ",".join(DEFAULT_TIERS)  # generated tiers and real test parts (comma-separated; empty: files only)
    puzzle_file: list[str] = field(default_factory=list)  # NAME=PATH: a tier read from a puzzle file (its first --puzzles)
    puzzles: int = 128  # held-out puzzles per tier
    ks: str = "1,2,4,8,16,32,64"  # trajectories per puzzle to try
    temperature: float = 1.0  # sampled trajectories draw each cell from softmax(logits / T)
    latent_noise: float = 0.0  # std of Gaussian noise added to the sampled trajectories' z after each step
    symmetries: bool = True  # each sampled trajectory sees its puzzle under its own random Sudoku symmetry
    sample: bool = True  # sampled trajectories draw their cells (else argmax in their own view)
    chunk: int = 64  # puzzles per batch (memory: chunk * K trajectories at once)
    seed: int = 0  # evaluation sets and the search's random draws
    device: str = "cpu"  # device of the environments and the network

    def validate(self) -> None:
        check_model_path(self.checkpoint, "--checkpoint")
        if self.puzzles < 1 or self.chunk < 1:
            raise ValueError("--puzzles and --chunk must be at least 1")
        try:
            ks = self.k_list()
        except ValueError:
            raise ValueError(f"--ks must be comma-separated integers, got {self.ks!r}") from None
        if not ks or min(ks) < 1:
            raise ValueError(f"--ks must list integers >= 1, got {self.ks!r}")
        check_tiers(self.tier_list(), self.puzzle_file)
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"--temperature must be a finite number above 0, got {self.temperature}")
        if not (math.isfinite(self.latent_noise) and self.latent_noise >= 0):
            raise ValueError(f"--latent-noise must be a finite number >= 0, got {self.latent_noise}")
        check_seed(self.seed)
        check_device(self.device)
        check_writable(self.out)

    def tier_list(self) -> list[str]:
        return [t for t in self.tiers.split(",") if t]

    def k_list(self) -> list[int]:
        return [int(k) for k in self.ks.split(",") if k]


def eval_sets(args: Args) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Puzzles (and solutions, where the source has them) per tier; files are read without solving."""
    sets: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for t in args.tier_list():
        sets[t] = benchmark_set(t, args.seed, benchmark_size(t, args.puzzles, args.seed + 1))
    for name, path in pairs(args.puzzle_file, "--puzzle-file").items():
        p, s = sudoku.load(path, solve=False)
        sets[name] = (p[: args.puzzles], None if s is None else s[: args.puzzles])
    return sets


def search_point(
    agent: SearchAgent, puzzles: np.ndarray, solutions: np.ndarray | None, chunk: int = 64, device: str = "cpu"
) -> dict[str, Any]:
    """Solve rate [95% bootstrap interval] and forward passes per puzzle of ``agent``, over chunks of
    ``chunk`` puzzles (``chunk * K`` trajectories at once); ``solved`` holds the per-puzzle outcomes."""
    solved, passes, t0 = [], [], time.perf_counter()
    for i in range(0, len(puzzles), chunk):
        sol = None if solutions is None else solutions[i : i + chunk]
        r = run_episodes(agent, puzzles[i : i + chunk], sol, device=device, max_steps=agent.max_steps)
        solved.append(r["solved"])
        passes.append(r["forward_passes"])
    s = np.concatenate(solved)
    mean, lo, hi = bootstrap_ci([s])
    return {
        "solve_rate": mean,
        "solve_lo": lo,
        "solve_hi": hi,
        "forward_passes_per_puzzle": float(np.concatenate(passes).mean()),
        "puzzles": len(s),
        "wall_seconds": time.perf_counter() - t0,
        "solved": s.astype(bool).tolist(),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| tier | K | solve rate [95% CI] | forward passes / puzzle | x greedy |", "|---|---|---|---|---|"]
    greedy = {r["tier"]: r["solve_rate"] for r in rows if r["k"] == 1}
    for r in rows:
        g = greedy.get(r["tier"])
        ratio = f"{r['solve_rate'] / g:.2f}" if g else "-"
        lines.append(
            f"| {r['tier']} | {r['k']} | {r['solve_rate']:.1%} [{r['solve_lo']:.1%}, {r['solve_hi']:.1%}] | "
            f"{r['forward_passes_per_puzzle']:.1f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for tier in dict.fromkeys(r["tier"] for r in rows):
        pts = [r for r in rows if r["tier"] == tier]
        ax.plot([r["forward_passes_per_puzzle"] for r in pts], [r["solve_rate"] for r in pts], marker="o", label=tier)
        for r in pts:
            ax.annotate(f"K={r['k']}", (r["forward_passes_per_puzzle"], r["solve_rate"]), fontsize=6)
    ax.set(xscale="log", xlabel="forward passes per puzzle (counted)", ylabel="solve rate (verified)",
           title="Search with the rules as verifier")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every K on every tier and write the table, JSON and plot; returns the JSON payload."""
    args = cli.parse(Args, argv, description=__doc__)
    try:
        sets = eval_sets(args)
        labelled = {t: v for t, v in sets.items() if v[1] is not None}
        overlap = drop_trained(labelled, {args.checkpoint})
        sets.update(labelled)
    except (ValueError, FileNotFoundError) as e:
        cli.input_error(e)
    kw = {"temperature": args.temperature, "latent_noise": args.latent_noise, "symmetries": args.symmetries,
          "sample": args.sample, "seed": args.seed}
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    try:
        with RunFolder(out, catch_signals=False):
            base = SearchAgent.from_checkpoint(args.checkpoint, device=args.device, k=1)
            for tier, (p, s) in sets.items():
                for k in args.k_list():
                    agent = SearchAgent(base.model, k=k, **kw)
                    point = search_point(agent, p, s, args.chunk, args.device)
                    point.pop("solved")
                    rows.append({"tier": tier, "k": k, **point})
                    r = rows[-1]
                    print(f"{tier:8s} K={k:3d}  solve {r['solve_rate']:6.1%}  fp/puzzle {r['forward_passes_per_puzzle']:7.1f}"
                          f"  {r['wall_seconds']:.0f}s", flush=True)
            settings = {**kw, "checkpoint": args.checkpoint, "puzzles": args.puzzles, "tiers": list(sets), "ks": args.k_list(),
                        "trained_grids": overlap}
            payload = {"settings": settings, "rows": rows, "run": run_info({"search": settings}, args.seed, args.device)}
            atomic_write_json(out / "search.json", payload)
            atomic_write_text(out / "search.md", markdown(rows))
            plot(out / "search_curve.png", rows)
    except RunFolderBusy as e:
        cli.input_error(e)
    print("\n" + markdown(rows) + f"\nwrote {out}/search.md, search.json and search_curve.png")
    return payload


if __name__ == "__main__":
    main()
