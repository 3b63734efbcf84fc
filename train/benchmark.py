"""The reproducible benchmark table: every available agent on the same held-out puzzles.

For each difficulty tier and each seed, a fixed held-out set is generated (seeds
disjoint from the training scripts'), and every agent plays one episode per puzzle
through the batched environment with ``terminate_on_solve=False`` (the agent decides
when to stop; see :mod:`agents.runner`) for at most ``--max-steps`` steps (16, the
environment's default: the propagation agent needs more rounds than that on some
rating-0 puzzles). Reported per agent and tier: solve rate,
cell accuracy on blanks (mean and 95% stratified bootstrap interval over seeds and
puzzles), mean steps, forward passes per puzzle (counted at run time), search nodes,
dead-compute share, and wall time per puzzle (in a separate file: timings vary).

Writes to ``--out`` (each file to a temporary name, then renamed): ``table.md``,
``results.csv`` (byte-identical for the same seed and agents), ``timing.csv``,
``results.json`` and the plots ``accuracy_per_step.png``, ``accuracy_vs_forward_passes.png``,
``advantage_margin.png``, ``accuracy_vs_guidance.png``.

Agents: ``random``, ``propagation``, ``solver`` always; ``onepass``, ``trm``, ``trm+halt``
(the TRM checkpoint halting by its Q head), ``dis``, ``search`` (16 trajectories of the DIS
checkpoint per puzzle, the first answer the rules verify; ``train/search_curve.py`` sweeps K),
``ppo_recursion``, ``sb3_ppo`` when their checkpoints exist (``runs/<name>/...``) or are given
with ``--checkpoint name=path``.

Tiers: the generated ones and the real test parts ``sudoku17:test`` and ``top1465:test``
(``--tiers``; a real test part is cut into one set per seed, at most ``--puzzles`` each),
plus any number of puzzle files given with
``--puzzle-file NAME=PATH`` (Sudoku-Extreme's CSV, tdoku's format, or one puzzle per
line; the first ``--puzzles * --seeds`` puzzles, split into one set per seed). A puzzle
whose solution grid a benchmarked checkpoint trained on (its ``train_grids``) is dropped
from every set, and ``results.json`` says how many.

Example: ``python train/benchmark.py --quick``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import agents
from agents.runner import run_episodes
from envs import canonical, real_sets, sudoku
from train import cli
from train.held_out import benchmark_set, benchmark_size, trained_grids
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
from trm.checkpoint import atomic_write, load_checkpoint, load_model

DEFAULT_TIERS = list(sudoku.TIERS) + [f"{name}:test" for name in real_sets.REAL_SETS]
COLUMNS = ["agent", "tier", "solve_rate", "solve_lo", "solve_hi", "cell_accuracy", "cell_lo", "cell_hi"]
COLUMNS += ["mean_steps", "forward_passes", "search_nodes", "dead_compute_share", "puzzles"]


@dataclass
class Args:
    out: str = "runs/benchmark"  # folder of table.md, results.csv, timing.csv, results.json and the plots
    seed: int = 0  # first evaluation seed; seeds are seed .. seed + seeds - 1
    seeds: int = 3  # evaluation seeds (one held-out set per tier and seed)
    puzzles: int = 200  # held-out puzzles per tier and seed
    tiers: str = ",".join(DEFAULT_TIERS)  # comma-separated generated tiers and real test parts ("" for none)
    puzzle_file: list[str] = field(default_factory=list)  # NAME=PATH: a tier read from a puzzle file
    agents: str = ""  # comma-separated agent names (default: every available one)
    checkpoint: list[str] = field(default_factory=list)  # NAME=PATH: the checkpoint of agent NAME
    device: str = "cpu"  # device of the environments and the networks
    max_steps: int = 16  # steps per episode at most (raised to an agent's own n_sup when larger)
    plot_tier: str = ""  # tier of the plots (default: the second tier listed)
    guidance: str = "0,0.5,1,1.5,2,2.5,3"  # w values of the guidance sweep
    quick: bool = False  # 32 puzzles per tier and seed, w in {0, 1, 2, 3}
    trust_sb3: bool = False  # read the sb3_ppo agent's model.zip (its pickles can run code: only a file you made)

    def validate(self) -> None:
        if self.quick:
            self.puzzles, self.guidance = 32, "0,1,2,3"
        for name in ("seeds", "puzzles", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        check_tiers(self.tier_list(), self.puzzle_file)
        try:
            ws = [float(w) for w in self.guidance.split(",")]
        except ValueError:
            raise ValueError(f"--guidance must be comma-separated numbers, got {self.guidance!r}") from None
        if not all(math.isfinite(w) for w in ws):
            raise ValueError(f"--guidance must be finite numbers, got {self.guidance!r}")
        check_seed(self.seed, self.seeds)
        check_device(self.device)
        check_writable(self.out)

    def tier_list(self) -> list[str]:
        return [t for t in self.tiers.split(",") if t]


def check_tiers(tiers: list[str], puzzle_file: list[str]) -> None:
    """Generated tiers must be known and ``--puzzle-file NAME=PATH`` files must exist; at least one of either."""
    for t in tiers:
        real = real_sets.parse_spec(t)
        if t not in sudoku.TIERS and (real is None or real[1] != "test"):
            raise ValueError(f"unknown tier {t!r}; choose from {', '.join(DEFAULT_TIERS)}")
    repeated = sorted({t for t in tiers if tiers.count(t) > 1})
    if repeated:
        raise ValueError(f"--tiers lists {', '.join(repeated)} more than once")
    files = pairs(puzzle_file, "--puzzle-file")
    for name, path in files.items():
        if name in sudoku.TIERS or name.partition(":")[0] in real_sets.REAL_SETS or name in tiers:
            raise ValueError(f"--puzzle-file {name}={path}: {name!r} is the name of a tier or collection; name the file's "
                             "set something else")
        if not Path(path).is_file():
            raise ValueError(f"--puzzle-file {name}={path}: no such file")
    if not tiers and not files:
        raise ValueError("no tiers: give --tiers or at least one --puzzle-file")


def pairs(items: list[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` items as a dict; a malformed item raises ``ValueError`` naming the option."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{option} expects NAME=PATH, got {item!r}")
        if name in out:
            raise ValueError(f"{option} names {name!r} twice ({out[name]} and {value}); give each name once")
        out[name] = value
    return out


def build_agents(names: list[str] | None, checkpoints: dict[str, str], device: str, seed: int,
                 trust_sb3: bool = False) -> dict[str, Any]:
    """Every requested agent, built before any work; unknown or missing ones raise. ``sb3_ppo`` reads a
    pickle that can run code: by default only when asked for by name with ``trust_sb3``."""
    for name in checkpoints:
        if name not in agents.NAMES:
            raise ValueError(f"--checkpoint: unknown agent {name!r}; known agents: {', '.join(agents.NAMES)}")
    wanted = names or [n for n in agents.available(checkpoints) if n != "sb3_ppo" or trust_sb3]
    built: dict[str, Any] = {}
    for name in wanted:
        kw = {"seed": seed} if name == "random" else {"trust": trust_sb3} if name == "sb3_ppo" else {}
        path = agents.checkpoint_path(name, checkpoints) if name in agents.DEFAULT_CHECKPOINTS else None
        built[name] = agents.make_agent(name, path, device=device, **kw)
    return built


def eval_sets(args: Args, seeds: list[int]) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """Held-out ``(puzzles, solutions)`` per (tier, seed): generated tiers, then puzzle files cut into one set per seed."""
    sets = {}
    for t in args.tier_list():  # a real test part is cut into one set per seed, at most --puzzles each
        n = benchmark_size(t, args.puzzles, seeds[-1] + 1)
        sets.update({(t, s): benchmark_set(t, s, n) for s in seeds})
    for name, path in pairs(args.puzzle_file, "--puzzle-file").items():
        p, sol = sudoku.load(path, solve=True)
        if len(p) < len(seeds):
            raise ValueError(f"--puzzle-file {name}={path}: {len(p)} puzzles, fewer than the {len(seeds)} seeds")
        n = min(args.puzzles, len(p) // len(seeds))
        for k, s in enumerate(seeds):
            sets[(name, s)] = (p[k * n : (k + 1) * n], sol[k * n : (k + 1) * n])
    return sets


def drop_trained(sets: dict[Any, tuple[np.ndarray, np.ndarray]], paths: set[str]) -> dict[str, Any]:
    """Remove from every set the puzzles whose solution grid one of the checkpoints ``paths`` trained on
    (its ``train_grids``, the lineage of every run that led to it). Returns what was dropped per set
    and which checkpoints record no training grids (older ones, SB3's zip)."""
    grids, unknown = [], []
    for path in sorted(paths):
        if path.endswith(".zip"):
            g = None
        else:  # a checkpoint, or a pretrained folder (its train_grids.npy)
            g = trained_grids(load_model(path)[1] if Path(path).is_dir() else load_checkpoint(path))
        if g is None:
            unknown.append(path)
        else:
            grids.append(g)
    report: dict[str, Any] = {"checkpoints_without_training_grids": unknown, "dropped_trained": {}}
    if not grids:
        return report
    trained = np.concatenate(grids)
    for key, (p, sol) in list(sets.items()):
        keep = ~np.isin(canonical.grid_hash(sol), trained)
        if not keep.all():
            name = f"{key[0]}:seed={key[1]}" if isinstance(key, tuple) else str(key)
            if not keep.any():
                raise ValueError(f"every puzzle of {name} was trained on by an evaluated checkpoint")
            sets[key] = (p[keep], sol[keep])
            report["dropped_trained"][name] = int((~keep).sum())
    return report


def fmt(x: float) -> str:
    return f"{x:.4f}"


def write_outputs(out: Path, rows: list[dict], timing: list[dict], payload: dict) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (fmt(r[k]) if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    tbuf = io.StringIO()
    tw = csv.DictWriter(tbuf, fieldnames=["agent", "tier", "wall_ms_per_puzzle"], lineterminator="\n")
    tw.writeheader()
    tw.writerows(timing)
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "timing.csv", tbuf.getvalue())
    atomic_write_json(out / "results.json", payload)
    atomic_write_text(out / "table.md", markdown(rows, timing, payload["settings"]))


def markdown(rows: list[dict], timing: list[dict], settings: dict) -> str:
    wall = {(t["agent"], t["tier"]): t["wall_ms_per_puzzle"] for t in timing}
    lines = [
        f"Held-out puzzles: {settings['puzzles']} per tier and seed, seeds {settings['seeds']}; mean [95% bootstrap interval].",
        "",
        "| tier | agent | solve rate | cell accuracy | steps | forward passes | search nodes | dead compute | ms / puzzle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tier']} | {r['agent']} | {r['solve_rate']:.1%} [{r['solve_lo']:.1%}, {r['solve_hi']:.1%}] | "
            f"{r['cell_accuracy']:.3f} [{r['cell_lo']:.3f}, {r['cell_hi']:.3f}] | {r['mean_steps']:.2f} | "
            f"{r['forward_passes']:.1f} | {r['search_nodes']:.1f} | {r['dead_compute_share']:.1%} | "
            f"{wall[(r['agent'], r['tier'])]} |"
        )
    return "\n".join(lines) + "\n"


def plots(out: Path, curves: dict, sweep: dict, rows: list[dict], plot_tier: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, name: str) -> None:
        atomic_write(out / name, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, c in curves.items():
        ax.plot(range(1, len(c["cell_accuracy_per_step"]) + 1), c["cell_accuracy_per_step"], marker="o", ms=3, label=agent)
    ax.set(xlabel="recursion step", ylabel="cell accuracy (blanks)", title=f"Accuracy per step ({plot_tier})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save(fig, "accuracy_per_step.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["tier"] == plot_tier and r["forward_passes"] > 0:
            ax.scatter(r["forward_passes"], r["solve_rate"], label=r["agent"])
    ax.set(xscale="log", xlabel="forward passes per puzzle", ylabel="solve rate", title=f"Accuracy vs compute ({plot_tier})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save(fig, "accuracy_vs_forward_passes.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, c in curves.items():
        if c["advantage_margin_per_step"]:
            m = c["advantage_margin_per_step"]
            ax.plot(range(1, len(m) + 1), m, marker="o", ms=3, label=agent)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="recursion step", ylabel="advantage margin d[y*] - E d", title=f"Advantage margin per step ({plot_tier})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save(fig, "advantage_margin.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, pts in sweep.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=agent)
    ax.set(xlabel="guidance weight w", ylabel="solve rate", title=f"Accuracy vs guidance weight ({plot_tier})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save(fig, "accuracy_vs_guidance.png")


def measure_row(name: str, tier: str, per: list[dict]) -> dict[str, Any]:
    """One table row from the per-seed results of one agent on one tier."""
    solve = bootstrap_ci([r["solved"] for r in per])
    cell = bootstrap_ci([r["cell_accuracy"] for r in per])
    return {
        "agent": name,
        "tier": tier,
        "solve_rate": solve[0],
        "solve_lo": solve[1],
        "solve_hi": solve[2],
        "cell_accuracy": cell[0],
        "cell_lo": cell[1],
        "cell_hi": cell[2],
        "mean_steps": float(np.mean([r["steps"].mean() for r in per])),
        "forward_passes": float(np.mean([r["forward_passes"].mean() for r in per])),
        "search_nodes": float(np.mean([r["search_nodes"].mean() for r in per])),
        "dead_compute_share": float(np.sum([r["dead_steps"].sum() for r in per]) / np.sum([r["steps"].sum() for r in per])),
        "puzzles": sum(len(r["solved"]) for r in per),
    }


def guidance_sweep(built: dict[str, Any], sets: dict, tier: str, seeds: list[int], args: Args, max_steps: int) -> dict:
    """Solve rate against the guidance weight ``w`` for the agents with a guided readout (``trm``, ``dis``)."""
    sweep = {}
    for name, agent in built.items():
        if agent.guidance is None or name not in ("trm", "dis"):
            continue
        pts = []
        for w in [float(x) for x in args.guidance.split(",")]:
            agent.guidance = w
            runs = [run_episodes(agent, *sets[(tier, s)], device=args.device, max_steps=max_steps) for s in seeds]
            pts.append((w, float(np.mean([r["solved"].mean() for r in runs]))))
        agent.guidance = 1.0
        sweep[name] = pts
    return sweep


def play_all(built: dict[str, Any], sets: dict, tiers: list[str], seeds: list[int], args: Args, max_steps: int) -> tuple:
    """Every agent on every tier and seed: table rows, timings and the plot tier's per-step curves."""
    rows, timing, curves = [], [], {}
    warm = sets[(tiers[0], seeds[0])]
    for agent in built.values():  # compile kernels and warm caches outside the timed runs
        run_episodes(agent, warm[0][:2], warm[1][:2], device=args.device, max_steps=max_steps)
    for tier in tiers:
        for name, agent in built.items():
            per = [run_episodes(agent, *sets[(tier, s)], device=args.device, max_steps=max_steps) for s in seeds]
            rows.append(measure_row(name, tier, per))
            ms = 1000 * sum(r["wall_seconds"] for r in per) / rows[-1]["puzzles"]
            timing.append({"agent": name, "tier": tier, "wall_ms_per_puzzle": f"{ms:.2f}"})
            if tier == args.plot_tier:
                curves[name] = {k: per[0][k] for k in ("cell_accuracy_per_step", "advantage_margin_per_step")}
            r = rows[-1]
            line = f"solve {r['solve_rate']:6.1%}  cell {r['cell_accuracy']:.3f}  fp {r['forward_passes']:.1f}"
            print(f"{tier:8s} {name:12s} {line}", flush=True)
    return rows, timing, curves


def main(argv: list[str] | None = None) -> dict:
    """Build every agent and held-out set, play, and write the table, CSVs, JSON and plots."""
    args = cli.parse(Args, argv, description=__doc__)
    try:
        names = args.agents.split(",") if args.agents else None
        built = build_agents(names, pairs(args.checkpoint, "--checkpoint"), args.device, args.seed, args.trust_sb3)
        seeds = list(range(args.seed, args.seed + args.seeds))
        sets = eval_sets(args, seeds)
        given = pairs(args.checkpoint, "--checkpoint")
        overlap = drop_trained(sets, {agents.checkpoint_path(n, given) for n in built if n in agents.DEFAULT_CHECKPOINTS})
    except (ValueError, FileNotFoundError) as e:
        cli.input_error(e)
    tiers = args.tier_list() + list(pairs(args.puzzle_file, "--puzzle-file"))
    args.plot_tier = args.plot_tier or tiers[min(1, len(tiers) - 1)]
    max_steps = max([args.max_steps] + [a.max_steps for a in built.values() if a.max_steps is not None])
    out = Path(args.out)
    t_all = time.perf_counter()
    try:
        with RunFolder(out, catch_signals=False):  # one live benchmark per folder; Ctrl-C stops it, writing nothing
            payload = play_and_write(args, built, sets, tiers, seeds, max_steps, overlap)
    except RunFolderBusy as e:
        cli.input_error(e)
    print(
        f"\n{markdown(payload['rows'], payload['timing'], payload['settings'])}\nwrote {out}/table.md, results.csv, "
        f"timing.csv, results.json and plots in {time.perf_counter() - t_all:.0f} s"
    )
    return payload


def play_and_write(args: Args, built: dict, sets: dict, tiers: list[str], seeds: list[int], max_steps: int,
                   overlap: dict[str, Any] | None = None) -> dict:
    """Play every agent, then write the table, CSVs, JSON and plots; returns the JSON payload."""
    out = Path(args.out)
    rows, timing, curves = play_all(built, sets, tiers, seeds, args, max_steps)
    sweep = guidance_sweep(built, sets, args.plot_tier, seeds, args, max_steps)
    settings = {"puzzles": args.puzzles, "seeds": seeds, "tiers": tiers, "agents": list(built), "max_steps": max_steps,
                "trained_grids": overlap or {}}
    if args.puzzle_file:
        settings["puzzle_files"] = pairs(args.puzzle_file, "--puzzle-file")
    payload = {
        "settings": settings,
        "rows": rows,
        "curves": curves,
        "guidance_sweep": sweep,
        "run": run_info({"benchmark": settings}, args.seed, args.device),
    }
    write_outputs(out, rows, timing, payload)
    plots(out, curves, sweep, rows, args.plot_tier)
    payload["timing"] = timing
    return payload


if __name__ == "__main__":
    main()
