"""TRM deep supervision against DIS on the same puzzles: equal wall clock and equal puzzles seen, over training seeds.

For every seed in ``--seeds`` both schemes train on the same generated (or file)
training pool and are measured on the same held-out set (:mod:`train.held_out`), each for
``--minutes`` of wall clock, with a learning curve (``--eval-every``, evaluation time not
counted). The table then compares them two ways:

* **equal wall clock**: both runs at the end of their ``--minutes``;
* **equal puzzles seen**: TRM at its end against DIS at the first point of its curve that
  had seen at least as many training puzzles (DIS is cheaper per puzzle, so it gets there
  sooner). TRM trains first; with ``--dis-eval-every 0`` (the default) DIS's curve points
  fall every ``ceil(P / B)`` batches, P the puzzles TRM saw and B DIS's batch size, so the
  first point is at TRM's count to within one batch.

Each cell is the mean over seeds with a 95% Student t interval over seeds; "DIS - TRM" is
the paired difference per seed. Forward passes per puzzle (inference, all steps) are the
models' own counts at evaluation, and their ratio is printed. A seed whose two run
folders already hold ``metrics.json`` is reused, so seeds can be added run by run.
Writes ``OUT/seed{S}/{trm,dis}`` (full run folders) and ``OUT/compare.md`` / ``compare.json``.

Example: ``python train/compare_supervision.py --difficulty easy --minutes 5 --seeds 0,1,2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from train import cli, supervised
from train.run_folder import Diverged, RunArgs, RunFolderBusy, atomic_write_json, atomic_write_text, check_seed, read_json
from train.stats import seed_interval


@dataclass
class Args(RunArgs):
    out: str = "runs/compare"  # folder of the run folders (OUT/seed{S}/trm, OUT/seed{S}/dis) and the table
    minutes: float = 2.0  # wall-clock budget per method and seed
    seeds: str = "0"  # comma-separated training seeds (each a full pair of runs)
    eval_size: int = 256  # held-out puzzles
    dis_eval_every: int = 0  # DIS batches between learning-curve points; 0: a point at the puzzles TRM saw (within a batch)
    trm_eval_every: int = 2  # TRM batches between learning-curve points
    hidden: int = 0  # width D of both models (0: each scheme's default; the defaults are the same)
    layers: int = 0  # blocks of both networks (0: each scheme's default)
    trm_batch_size: int = 0  # TRM's batch (0: its default)
    dis_batch_size: int = 0  # DIS's batch (0: its default)
    trm_steps: int = 0  # stop TRM after this many batches (0: only --minutes)
    dis_steps: int = 0  # stop DIS after this many batches (0: only --minutes)
    trm_n_sup: int = 0  # TRM's supervision steps (0: its default, 16)
    trm_T: int = 0  # TRM's latent recursions per step (0: its default, 3)
    trm_n: int = -1  # TRM's z updates per latent recursion (-1: its default, 6)

    def validate(self) -> None:
        try:
            seeds = [int(s) for s in self.seeds.split(",")]
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, got {self.seeds!r}") from None
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds repeats a seed: {self.seeds!r}")
        for s in seeds:
            check_seed(s, option="--seeds")
        super().validate()
        if self.dis_eval_every < 0 or self.trm_eval_every < 1:
            raise ValueError("--dis-eval-every must be at least 0 and --trm-eval-every at least 1")
        for name in ("hidden", "layers", "trm_batch_size", "dis_batch_size", "trm_steps", "dis_steps", "trm_n_sup", "trm_T"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.trm_n < -1:
            raise ValueError(f"--trm-n must be >= 0 (or -1: the default), got {self.trm_n}")

    def check_resumable(self) -> None:
        """The comparison's runs are ``OUT/seed{S}/{trm,dis}``: ``--resume`` continues those that have a checkpoint."""
        out = Path(self.out)
        found = [s for s in self.seed_list() for m in ("trm", "dis") if (out / f"seed{s}" / m / "checkpoint.pt").is_file()]
        if not found:
            raise ValueError(f"--resume: no run to continue under {self.out} (seed{{S}}/trm or seed{{S}}/dis with a checkpoint)")

    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",")]


def scheme_args(args: Args, scheme: str, seed: int) -> supervised.Args:
    """The trainer's settings for ``scheme`` and ``seed``: the scheme's defaults, this comparison's data and
    budget, and the sizes given here (0: the scheme's own)."""
    folder = Path(args.out) / f"seed{seed}" / scheme
    a = supervised.default_args(
        scheme, out=str(folder), seed=seed, device=args.device, minutes=args.minutes, difficulty=args.difficulty,
        eval_size=args.eval_size, pool_size=args.pool_size, checkpoint_every=args.checkpoint_every, puzzles=args.puzzles,
        resume=args.resume and (folder / "checkpoint.pt").is_file(), steps=getattr(args, f"{scheme}_steps") or None,
        overwrite=args.overwrite,
    )
    shape = {k: v for k, v in (("hidden", args.hidden), ("layers", args.layers)) if v}
    if scheme == "trm":
        shape.update({k: v for k, v in (("n_sup", args.trm_n_sup), ("T", args.trm_T)) if v})
        shape.update({"n": args.trm_n} if args.trm_n >= 0 else {})
    batch = getattr(args, f"{scheme}_batch_size")
    return replace(a, model=replace(a.model, **shape), training=replace(a.training, **({"batch_size": batch} if batch else {})))


def dis_eval_every(args: Args, trm_puzzles: int) -> int:
    """DIS batches between curve points: ``--dis-eval-every``, or with 0 ``ceil(trm_puzzles / B)`` for DIS's
    batch size B, so that a point falls at TRM's puzzle count to within one batch."""
    if args.dis_eval_every:
        return args.dis_eval_every
    return max(1, math.ceil(trm_puzzles / scheme_args(args, "dis", 0).training.batch_size))


def at_puzzles(curve: list[dict], puzzles: int) -> dict:
    """The first curve point that had seen at least ``puzzles`` training puzzles (the last point if none)."""
    for p in sorted(curve, key=lambda p: p["batch"]):
        if p["puzzles_seen"] >= puzzles:
            return p
    return curve[-1]


def cell(values: list[float], pct: bool = True) -> str:
    m, lo, hi = seed_interval(values)
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:,.0f}")
    return f"{f(m)} [{f(lo)}, {f(hi)}]" if len(values) > 1 else f(m)


def rows(runs: dict[int, dict[str, dict]]) -> dict[str, dict[str, list[float]]]:
    """Per comparison, per quantity, one value per seed."""
    out: dict[str, dict[str, list[float]]] = {"equal wall clock": {}, "equal puzzles seen": {}}
    for pair in runs.values():
        trm, dis = pair["trm"], pair["dis"]
        dis_at = at_puzzles(dis["curve"], trm["puzzles_seen"])
        points = {
            "equal wall clock": (dis["solve_rate"], dis["puzzles_seen"], dis["wall_seconds"]),
            "equal puzzles seen": (dis_at["solve_rate"], dis_at["puzzles_seen"], dis_at["wall_seconds"]),
        }
        for name, (d_solve, d_seen, d_wall) in points.items():
            r = out[name]
            for key, v in (("trm", trm["solve_rate"]), ("dis", d_solve), ("diff", d_solve - trm["solve_rate"])):
                r.setdefault(key, []).append(v)
            for key, v in (("trm_seen", trm["puzzles_seen"]), ("dis_seen", d_seen)):
                r.setdefault(key, []).append(v)
            for key, v in (("trm_wall", trm["wall_seconds"]), ("dis_wall", d_wall)):
                r.setdefault(key, []).append(v)
    return out


def table(runs: dict[int, dict[str, dict]]) -> str:
    head = "| comparison | TRM solve rate | DIS solve rate | DIS - TRM | TRM puzzles seen | DIS puzzles seen | TRM / DIS wall s |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name, r in rows(runs).items():
        walls = f"{sum(r['trm_wall']) / len(r['trm_wall']):.0f} / {sum(r['dis_wall']) / len(r['dis_wall']):.0f}"
        lines.append(
            f"| {name} | {cell(r['trm'])} | {cell(r['dis'])} | {cell(r['diff'])} | {cell(r['trm_seen'], False)} | "
            f"{cell(r['dis_seen'], False)} | {walls} |"
        )
    trm_fp = [p["trm"]["forward_passes_per_puzzle"] for p in runs.values()]
    dis_fp = [p["dis"]["forward_passes_per_puzzle"] for p in runs.values()]
    ratio = (sum(trm_fp) / len(trm_fp)) / (sum(dis_fp) / len(dis_fp))
    lines.append("")
    lines.append(
        f"Inference forward passes per puzzle (counted by the models, all steps): TRM {sum(trm_fp) / len(trm_fp):.1f}, "
        f"DIS {sum(dis_fp) / len(dis_fp):.1f}, ratio {ratio:.1f}x. Seeds: {', '.join(map(str, runs))}; "
        "mean [95% t interval over seeds]."
    )
    return "\n".join(lines)


def run_pair(args: Args, seed: int) -> dict[str, dict[str, Any]]:
    """Train (or reuse) both schemes for one seed; returns their metrics."""
    pair = {}
    for scheme in ("trm", "dis"):
        folder = Path(args.out) / f"seed{seed}" / scheme
        done = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else None
        if done is not None and not done.get("interrupted") and not args.overwrite:
            print(f"seed {seed}: reusing {folder}", flush=True)
            pair[scheme] = done
            continue
        print(f"seed {seed}: training {scheme} for {args.minutes} min ...", flush=True)
        every = args.trm_eval_every if scheme == "trm" else dis_eval_every(args, pair["trm"]["puzzles_seen"])
        pair[scheme] = supervised.train(replace(scheme_args(args, scheme, seed), eval_every=every))
        if pair[scheme].get("interrupted"):
            raise SystemExit(130)
    return pair


def main(argv: list[str] | None = None) -> dict[int, dict[str, dict]]:
    args = cli.parse(Args, argv, description=__doc__)
    runs = {}
    try:
        for seed in args.seed_list():
            runs[seed] = run_pair(args, seed)
    except Diverged as e:
        raise SystemExit(f"error: {e}") from None
    except (ValueError, FileNotFoundError, RunFolderBusy) as e:
        cli.input_error(e)
    text = table(runs)
    print(text)
    data = args.puzzles or f"generated {args.difficulty}"
    out = Path(args.out)
    atomic_write_text(out / "compare.md", f"Data: {data}, {args.minutes} min per method and seed.\n\n{text}\n")
    atomic_write_json(out / "compare.json", {"rows": rows(runs), "runs": {str(k): v for k, v in runs.items()}})
    return runs


if __name__ == "__main__":
    main()
