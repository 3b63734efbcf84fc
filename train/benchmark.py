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

Agents: ``random``, ``propagation``, ``solver`` always; ``onepass``, ``trm``, ``dis``,
``sb3_ppo`` when their checkpoints exist (``runs/<name>/...``) or are given with
``--checkpoint name=path``. ``trm+halt`` is the TRM agent halting by its Q head.

Example: ``python train/benchmark.py --quick``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep train/ from shadowing the top-level packages (and stdlib's dis)

import argparse
import csv
import io
import os
import time
from typing import Any

import numpy as np  # noqa: E402

import agents  # noqa: E402
from agents.runner import run_episodes  # noqa: E402
from envs import sudoku  # noqa: E402
from train.run import atomic_write_json, atomic_write_text, run_info  # noqa: E402
from train.stats import bootstrap_ci  # noqa: E402

TIER_SEED = 2_000_000  # held-out sets: generate(n, tier, seed=TIER_SEED + 1000 * seed + tier index)
COLUMNS = ["agent", "tier", "solve_rate", "solve_lo", "solve_hi", "cell_accuracy", "cell_lo", "cell_hi"]
COLUMNS += ["mean_steps", "forward_passes", "search_nodes", "dead_compute_share", "puzzles"]


def held_out(tier: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return sudoku.generate(n, tier, seed=TIER_SEED + 1000 * seed + list(sudoku.TIERS).index(tier))


def parse_checkpoints(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--checkpoint expects name=path, got {item!r}")
        name, path = item.split("=", 1)
        out[name] = path
    return out


def build_agents(names: list[str] | None, checkpoints: dict[str, str], device: str, seed: int) -> dict[str, Any]:
    """Every requested agent, built before any work; unknown or missing ones raise."""
    for name in checkpoints:
        if name not in agents.NAMES:
            raise ValueError(f"--checkpoint: unknown agent {name!r}; known agents: {', '.join(agents.NAMES)}")
    wanted = names or agents.available(checkpoints)
    built: dict[str, Any] = {}
    for name in wanted:
        kw = {"seed": seed} if name == "random" else {}
        built[name] = agents.make_agent(name, checkpoints.get(name), device=device, **kw)
        if name == "trm" and built[name].cfg.halting:
            built["trm+halt"] = agents.make_agent(name, checkpoints.get(name), device=device, halting=True)
            built["trm+halt"].name = "trm+halt"
    return built


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
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, out / name)

    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, c in curves.items():
        ax.plot(range(1, len(c["cell_accuracy_per_step"]) + 1), c["cell_accuracy_per_step"], marker="o", ms=3, label=agent)
    ax.set(xlabel="recursion step", ylabel="cell accuracy (blanks)", title=f"Accuracy per step ({plot_tier})")
    ax.legend(fontsize=8)
    save(fig, "accuracy_per_step.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["tier"] == plot_tier and r["forward_passes"] > 0:
            ax.scatter(r["forward_passes"], r["solve_rate"], label=r["agent"])
    ax.set(xscale="log", xlabel="forward passes per puzzle", ylabel="solve rate", title=f"Accuracy vs compute ({plot_tier})")
    ax.legend(fontsize=8)
    save(fig, "accuracy_vs_forward_passes.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, c in curves.items():
        if c["advantage_margin_per_step"]:
            m = c["advantage_margin_per_step"]
            ax.plot(range(1, len(m) + 1), m, marker="o", ms=3, label=agent)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="recursion step", ylabel="advantage margin d[y*] - E d", title=f"Advantage margin per step ({plot_tier})")
    ax.legend(fontsize=8)
    save(fig, "advantage_margin.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for agent, pts in sweep.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=agent)
    ax.set(xlabel="guidance weight w", ylabel="solve rate", title=f"Accuracy vs guidance weight ({plot_tier})")
    ax.legend(fontsize=8)
    save(fig, "accuracy_vs_guidance.png")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/benchmark")
    ap.add_argument("--seed", type=int, default=0, help="first seed; seeds are seed .. seed + seeds - 1")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--puzzles", type=int, default=200, help="held-out puzzles per tier and seed")
    ap.add_argument("--tiers", default=",".join(sudoku.TIERS))
    ap.add_argument("--agents", default=None, help="comma-separated agent names (default: every available one)")
    ap.add_argument("--checkpoint", action="append", default=[], help="name=path, repeatable")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-steps", type=int, default=16)
    ap.add_argument("--plot-tier", default=None, help="tier of the plots (default: the second tier listed)")
    ap.add_argument("--guidance", default="0,0.5,1,1.5,2,2.5,3", help="w values of the guidance sweep")
    ap.add_argument("--quick", action="store_true", help="32 puzzles per tier and seed, w in {0, 1, 2, 3}")
    args = ap.parse_args(argv)
    if args.quick:
        args.puzzles, args.guidance = 32, "0,1,2,3"
    tiers = args.tiers.split(",")
    for t in tiers:
        if t not in sudoku.TIERS:
            raise SystemExit(f"error: unknown tier {t!r}; choose from {', '.join(sudoku.TIERS)}")
    try:
        built = build_agents(
            args.agents.split(",") if args.agents else None, parse_checkpoints(args.checkpoint), args.device, args.seed
        )
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    plot_tier = args.plot_tier or tiers[min(1, len(tiers) - 1)]
    max_steps = max([args.max_steps] + [a.cfg.n_sup for a in built.values() if hasattr(a, "cfg")])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seed, args.seed + args.seeds))
    sets = {(t, s): held_out(t, s, args.puzzles) for t in tiers for s in seeds}
    rows, timing, curves, sweep = [], [], {}, {}
    t_all = time.perf_counter()
    warm = sets[(tiers[0], seeds[0])]
    for agent in built.values():  # compile kernels and warm caches outside the timed runs
        run_episodes(agent, warm[0][:2], warm[1][:2], device=args.device, max_steps=max_steps)
    for tier in tiers:
        for name, agent in built.items():
            per = [run_episodes(agent, *sets[(tier, s)], device=args.device, max_steps=max_steps) for s in seeds]
            solve = bootstrap_ci([r["solved"] for r in per])
            cell = bootstrap_ci([r["cell_accuracy"] for r in per])
            steps = float(np.mean([r["steps"].mean() for r in per]))
            dead = float(np.sum([r["dead_steps"].sum() for r in per]) / np.sum([r["steps"].sum() for r in per]))
            rows.append(
                {
                    "agent": name,
                    "tier": tier,
                    "solve_rate": solve[0],
                    "solve_lo": solve[1],
                    "solve_hi": solve[2],
                    "cell_accuracy": cell[0],
                    "cell_lo": cell[1],
                    "cell_hi": cell[2],
                    "mean_steps": steps,
                    "forward_passes": float(np.mean([r["forward_passes"].mean() for r in per])),
                    "search_nodes": float(np.mean([r["search_nodes"].mean() for r in per])),
                    "dead_compute_share": dead,
                    "puzzles": sum(len(r["solved"]) for r in per),
                }
            )
            ms = 1000 * sum(r["wall_seconds"] for r in per) / rows[-1]["puzzles"]
            timing.append({"agent": name, "tier": tier, "wall_ms_per_puzzle": f"{ms:.2f}"})
            if tier == plot_tier:
                curves[name] = {k: per[0][k] for k in ("cell_accuracy_per_step", "advantage_margin_per_step")}
            print(
                f"{tier:8s} {name:12s} solve {solve[0]:6.1%}  cell {cell[0]:.3f}  fp {rows[-1]['forward_passes']:.1f}", flush=True
            )
    for name, agent in built.items():
        if hasattr(agent, "w") and name in ("trm", "dis"):
            pts = []
            for w in [float(x) for x in args.guidance.split(",")]:
                agent.w = w
                pts.append(
                    (
                        w,
                        float(
                            np.mean(
                                [run_episodes(agent, *sets[(plot_tier, s)], max_steps=max_steps)["solved"].mean() for s in seeds]
                            )
                        ),
                    )
                )
            agent.w = 1.0
            sweep[name] = pts
    settings = {"puzzles": args.puzzles, "seeds": seeds, "tiers": tiers, "agents": list(built), "max_steps": max_steps}
    payload = {
        "settings": settings,
        "rows": rows,
        "curves": curves,
        "guidance_sweep": sweep,
        "run": run_info({"benchmark": settings}, args.seed, args.device),
    }
    write_outputs(out, rows, timing, payload)
    plots(out, curves, sweep, rows, plot_tier)
    print(
        f"\n{markdown(rows, timing, settings)}\nwrote {out}/table.md, results.csv, timing.csv, results.json and plots "
        f"in {time.perf_counter() - t_all:.0f} s"
    )
    return payload


if __name__ == "__main__":
    main()
