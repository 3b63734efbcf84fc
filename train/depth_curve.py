"""Accuracy against test-time depth: solve rate of greedy decoding at 1x, 2x, 4x, 8x the trained supervision steps.

Each checkpoint (``--checkpoint NAME=PATH``, a TRM, DIS or RL run) decodes every puzzle
for ``max(--multiples) * n_sup`` supervision steps, with no halting; the solve rate and the
forward passes per puzzle (counted by the model at run time, step by step) are read at
``m * n_sup`` steps for each multiple ``m``. Recursion is causal, so the reading at ``m * n_sup``
is what a run stopped there gives. A model that embeds the step index (DIS) is run past
its ``n_sup`` with the index clamped: every later step reads the embedding of step
``n_sup`` (:class:`agents.trm_agent.TRMAgent`). Sets: the benchmark's held-out sets of the
generated tiers and the real test parts (:func:`train.held_out.benchmark_set`), with every
puzzle whose grid one of the checkpoints trained on dropped (``depth.json`` says how many).

Writes ``--out``/``depth.json``, ``depth.md`` (one row per checkpoint, set and multiple) and
``depth_curve.png`` (solve rate against forward passes per puzzle, one line per
checkpoint and set), each to a temporary name first.

Example: ``python train/depth_curve.py --checkpoint dis=runs/dis/checkpoint.pt --tiers easy,sudoku17:test --puzzles 64``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.runner import run_episodes
from agents.trm_agent import TRMAgent
from train import cli
from train.benchmark import check_tiers, drop_trained, pairs
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
from trm.checkpoint import atomic_write, load_model
from trm.pretrained import check_model_path


@dataclass
class Args:
    checkpoint: list[str] = field(default_factory=list)  # NAME=PATH, once per model (a checkpoint or a pretrained folder)
    out: str = "runs/depth"  # folder of depth.json, depth.md and depth_curve.png
    tiers: str = "easy,sudoku17:test,top1465:test"  # generated tiers and real test parts (comma-separated)
    puzzles: int = 128  # held-out puzzles per set
    multiples: str = "1,2,4,8"  # test-time supervision steps, as multiples of each model's trained n_sup
    seed: int = 0  # evaluation seed of the sets
    device: str = "cpu"  # device of the environments and the network

    def validate(self) -> None:
        models = pairs(self.checkpoint, "--checkpoint")
        if not models:
            raise ValueError("pass at least one --checkpoint NAME=PATH")
        for name, path in models.items():
            check_model_path(path, f"--checkpoint {name}")
        if self.puzzles < 1:
            raise ValueError(f"--puzzles must be at least 1, got {self.puzzles}")
        try:
            ms = self.multiple_list()
        except ValueError:
            raise ValueError(f"--multiples must be comma-separated integers, got {self.multiples!r}") from None
        if not ms or min(ms) < 1 or len(set(ms)) != len(ms):
            raise ValueError(f"--multiples must list distinct integers >= 1, got {self.multiples!r}")
        tiers = [t for t in self.tiers.split(",") if t]
        if not tiers:
            raise ValueError("--tiers is empty: name at least one tier or real test part")
        check_tiers(tiers, [])
        check_seed(self.seed)
        check_device(self.device)
        check_writable(self.out)

    def multiple_list(self) -> list[int]:
        return sorted(int(m) for m in self.multiples.split(",") if m)


def depth_points(model: Any, puzzles: np.ndarray, solutions: np.ndarray, multiples: list[int],
                 device: str = "cpu") -> list[dict[str, Any]]:
    """One run of ``max(multiples) * n_sup`` steps; for each multiple ``m`` the solve rate [95% bootstrap
    interval over puzzles] after ``m * n_sup`` steps and the forward passes per puzzle counted up to there."""
    n_sup = model.cfg.n_sup
    t0 = time.perf_counter()
    model.reset_counter()
    agent = TRMAgent(model, steps=max(multiples) * n_sup)
    m = run_episodes(agent, puzzles, solutions, device=device, max_steps=agent.max_steps)
    seconds = time.perf_counter() - t0
    rows = []
    for k in multiples:
        solved = m["solved_per_step"][:, k * n_sup - 1]
        mean, lo, hi = bootstrap_ci([solved])
        rows.append({"multiple": k, "steps": k * n_sup, "solve_rate": mean, "solve_lo": lo, "solve_hi": hi,
                     "forward_passes_per_puzzle": m["forward_passes_per_step"][k * n_sup - 1], "puzzles": len(puzzles),
                     "wall_seconds_all_depths": seconds})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | set | depth (x trained) | steps | solve rate [95% CI] | forward passes / puzzle |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['tier']} | {r['multiple']}x | {r['steps']} | {r['solve_rate']:.1%} "
                     f"[{r['solve_lo']:.1%}, {r['solve_hi']:.1%}] | {r['forward_passes_per_puzzle']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    tiers = list(dict.fromkeys(r["tier"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P"]
    for key in dict.fromkeys((r["model"], r["tier"]) for r in rows):  # a colour per set, a line style per model
        pts = [r for r in rows if (r["model"], r["tier"]) == key]
        m = models.index(key[0])
        ax.plot([r["forward_passes_per_puzzle"] for r in pts], [r["solve_rate"] for r in pts], label=" ".join(key),
                color=f"C{tiers.index(key[1]) % 10}", ls=styles[m % len(styles)], marker=markers[m % len(markers)], ms=4)
        for r in pts:
            ax.annotate(f"{r['multiple']}x", (r["forward_passes_per_puzzle"], r["solve_rate"]), fontsize=6)
    ax.set(xscale="log", xlabel="forward passes per puzzle (counted)", ylabel="solve rate",
           title="Greedy decoding deeper than trained")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Every checkpoint at every depth on every set; writes the table, JSON and plot, returns the JSON payload."""
    args = cli.parse(Args, argv, description=__doc__)
    models = pairs(args.checkpoint, "--checkpoint")
    tiers = [t for t in args.tiers.split(",") if t]
    try:
        sets = {t: benchmark_set(t, args.seed, benchmark_size(t, args.puzzles, args.seed + 1)) for t in tiers}
        overlap = drop_trained(sets, set(models.values()))
        loaded = {name: load_model(path)[0].to(args.device) for name, path in models.items()}
    except (ValueError, FileNotFoundError) as e:
        cli.input_error(e)
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    try:
        with RunFolder(out, catch_signals=False):
            for name, model in loaded.items():
                for tier, (p, s) in sets.items():
                    for r in depth_points(model, p, s, args.multiple_list(), args.device):
                        rows.append({"model": name, "tier": tier, "n_sup": model.cfg.n_sup, **r})
                        print(f"{name:10s} {tier:14s} {r['multiple']}x ({r['steps']:3d} steps)  solve {r['solve_rate']:6.1%}  "
                              f"fp/puzzle {r['forward_passes_per_puzzle']:6.0f}", flush=True)
            settings = {"checkpoints": models, "tiers": tiers, "puzzles": args.puzzles, "multiples": args.multiple_list(),
                        "step_index_past_n_sup": "clamped to n_sup", "halting": False, "trained_grids": overlap}
            payload = {"settings": settings, "rows": rows, "run": run_info({"depth": settings}, args.seed, args.device)}
            atomic_write_json(out / "depth.json", payload)
            atomic_write_text(out / "depth.md", markdown(rows))
            plot(out / "depth_curve.png", rows)
    except RunFolderBusy as e:
        cli.input_error(e)
    print("\n" + markdown(rows) + f"\nwrote {out}/depth.md, depth.json and depth_curve.png")
    return payload


if __name__ == "__main__":
    main()
