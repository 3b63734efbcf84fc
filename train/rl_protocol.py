"""Label-free RL on real puzzles against its like-for-like controls, over training seeds: one table.

From one DIS checkpoint trained with labels on generated tiers only (``--start``), for every
training seed ``s`` in ``--seeds`` the protocol trains, each arm in its own run folder
``OUT/seed<s>/<arm>`` with its own seed and data stream (nothing is resumed from another arm):

* one RL arm per family of ``--families``, RL without labels on the training part of
  ``--puzzles`` (rewards from the rules alone) for ``--forward-passes`` training forward passes
  (counted by the model, the search's included): ``rl_expert``, expert iteration with the
  verified search at ``K = --expert-search`` (``train/expert_iteration.py``); ``rl_hybrid``, the
  same with ``--greedy-first`` (each round decodes ``--num-envs`` puzzles greedily, as c2 does,
  and searches at ``K`` only those greedy decoding left unverified); ``rl_group``, the
  group objective over ``--group-size`` symmetric views of each puzzle, each cell with its own
  clipped ratio and the episode's shared advantage, solve bonus included
  (``train/ppo_recursion.py --objective group --credit shared``);
* ``c1_dis_source``: the start fine-tuned by DIS with labels on its own generated source;
* ``c2_self_training``: expert iteration without search (``K = 1``: only the greedy answers that
  verify join the replay) with the same pool, replay, weight average and learning rate;
* ``c4_dis_labelled``: an upper reference that reads labels RL never sees: DIS with labels on
  RL's own training puzzles.

Every control runs for the most training forward passes an RL arm of its seed spent, at the same
constant learning rate ``--lr`` and the start's weight average; each row records optimizer
steps, training forward passes and wall time. Settings are chosen with ``--eval-part val``
(the RL run's validation slice, the last ``--val-size`` lines of the training part); the test
parts (``--eval-part test``: ``sudoku17:test`` and ``top1465:test``) are for the one final
evaluation. Each model is evaluated greedily with every step; the start and the RL arm also
with the verified search at every ``--search-k`` (at equal test-time budget, per seed). A
puzzle whose grid any arm trained on is dropped from the evaluated sets (``protocol_<part>.json``
says how many). Differences are paired by seed: mean and 95% Student t interval over seeds
(:func:`train.stats.seed_interval`). The table and its data go to ``OUT/table_<part>.md`` and
``OUT/protocol_<part>.json``.

An interrupted protocol is rerun with the same command and ``--resume``: finished arms
(their ``metrics.json``) are read back, an RL arm with a checkpoint resumes, a control reruns.

Example: ``python train/rl_protocol.py --start runs/medium/checkpoint.pt --seeds 0,1,2 --out runs/protocol``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.search_agent import SearchAgent
from envs import real_sets
from train import cli, expert_iteration, ppo_recursion, supervised
from train.benchmark import drop_trained
from train.held_out import split
from train.rl.advantages import AdvantageSettings
from train.rl.common import ControlSettings, EnvSettings, StartSettings
from train.rl.controls import dis_control_args, measure
from train.rl.update import UpdateSettings
from train.run_folder import (
    RunFolder,
    RunFolderBusy,
    atomic_write_json,
    atomic_write_text,
    check_device,
    check_seed,
    read_json,
    run_info,
    same_start,
)
from train.search_curve import search_point
from train.stats import seed_interval
from trm import starts
from trm.checkpoint import load_checkpoint, load_model

RL_ARMS = {"expert": "rl_expert", "hybrid": "rl_hybrid", "group": "rl_group"}  # family -> arm
CONTROLS = ("c1_dis_source", "c2_self_training", "c4_dis_labelled")
TEST_PARTS = ("sudoku17:test", "top1465:test")
CLOCK_GUARD_MINUTES = 24 * 60.0  # budgets are forward passes; the clock only stops a runaway


@dataclass
class Args:
    start: str = "shipped:dis_medium"  # DIS checkpoint (labels on generated tiers only) every arm starts from, or shipped:NAME
    out: str = "runs/rl_protocol"  # folder: seed<s>/<arm>/ run folders, protocol_<part>.json, table_<part>.md
    seeds: str = "0,1,2"  # training seeds, comma-separated: every arm of seed s trains with --seed s
    families: str = "expert"  # RL arms, comma-separated: expert (search), hybrid (greedy, then search), group
    puzzles: str = "sudoku17"  # the collection RL trains on without labels (its training part)
    val_size: int = 256  # the RL runs' validation slice (the last lines of the training part)
    forward_passes: int = 2_000_000  # RL's training forward passes per seed; each control gets what its RL arm spent
    lr: float = 1e-4  # constant learning rate of every arm (the DIS start's final rate)
    num_envs: int = 128  # expert: trajectories per search round (num_envs / K puzzles); group: episodes per rollout
    expert_search: int = 8  # K of the expert's verified search
    replay_batches: int = 4  # expert and self-training: DIS batches on the replay per round
    replay_size: int = 4096  # expert and self-training: verified pairs kept
    group_size: int = 8  # group: symmetric views per puzzle (the group of the baseline)
    eval_part: Literal["val", "test"] = "val"  # choose settings on "val"; evaluate "test" once, at the end
    eval_size: int = 1024  # puzzles per evaluated set (the first N)
    search_k: str = "8,64"  # the verified search's K for the start and the RL arm (comma-separated)
    search_size: int = 256  # puzzles per evaluated set for the search (the first N)
    device: str = "cpu"
    resume: bool = False  # read back finished arms in --out and continue the rest

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad option; creates nothing."""
        self.start = starts.resolve(self.start)
        if not self.start or not Path(self.start).is_file():
            raise ValueError(f"--start: no checkpoint at {self.start or '(none given)'}")
        try:
            ck = load_checkpoint(self.start, kind="dis")
        except ValueError as e:
            raise ValueError(f"--start: {e}") from None
        if ck.get("args", {}).get("puzzles"):
            raise ValueError(f"--start {self.start} trained on {ck['args']['puzzles']}: the protocol starts from "
                             "generated tiers only")
        try:
            seeds, ks = self.seed_list(), self.k_list()
        except ValueError:
            raise ValueError(f"--seeds and --search-k must be comma-separated integers, got {self.seeds!r}, "
                             f"{self.search_k!r}") from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds must be distinct training seeds, got {self.seeds!r}")
        for s in seeds:
            check_seed(s)
        bad = [f for f in self.family_list() if f not in RL_ARMS]
        if bad or not self.family_list():
            raise ValueError(f"--families must list some of {', '.join(RL_ARMS)}, got {self.families!r}")
        if real_sets.parse_spec(self.puzzles) is None or real_sets.parse_spec(self.puzzles)[1] != "train":
            raise ValueError(f"--puzzles must be a collection's training part ({', '.join(real_sets.REAL_SETS)}), "
                             f"got {self.puzzles!r}")
        for name in ("val_size", "forward_passes", "num_envs", "expert_search", "replay_batches", "replay_size", "eval_size",
                     "search_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a finite number above 0, got {self.lr}")
        if self.num_envs % self.expert_search or self.num_envs % self.group_size or self.group_size < 2:
            raise ValueError(f"--expert-search {self.expert_search} and --group-size {self.group_size} (>= 2) must divide "
                             f"--num-envs {self.num_envs}")
        if "hybrid" in self.family_list() and self.expert_search < 2:
            raise ValueError(f"--families hybrid searches what greedy decoding missed: --expert-search must be at least 2, "
                             f"got {self.expert_search}")
        if any(k < 1 for k in ks):
            raise ValueError(f"--search-k values must be at least 1, got {self.search_k!r}")
        held = sorted(p.name for p in Path(self.out).glob("seed*"))
        held += [p.name for p in Path(self.out).glob("protocol_*.json")]
        if held and not self.resume:
            raise ValueError(f"--out {self.out} holds a protocol ({', '.join(held)}): add --resume to continue it")
        for record in sorted(Path(self.out).glob("seed*/*/run.json")):  # a resume keeps the start every arm began from
            began = read_json(record).get("args", {}).get("init_from", "")
            if began and not same_start(began, self.start):
                raise ValueError(f"--start {self.start}: the protocol in {self.out} started from {began} ({record})")
        check_device(self.device)

    def family_list(self) -> list[str]:
        return [f.strip() for f in self.families.split(",") if f.strip()]

    def arms(self) -> list[str]:
        """The RL arms asked for, then the controls."""
        return [RL_ARMS[f] for f in self.family_list()] + list(CONTROLS)

    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",") if s.strip()]

    def k_list(self) -> tuple[int, ...]:
        return tuple(int(k) for k in self.search_k.split(",") if k.strip())


# ----------------------------------------------------------------------------- the arms


def rl_common(a: Args, seed: int, out: Path, passes: int) -> dict[str, Any]:
    """The settings every RL-script arm of seed ``seed`` shares: data, start, budget, no built-in controls."""
    return {
        "out": str(out), "seed": seed, "device": a.device, "puzzles": a.puzzles, "eval_size": a.val_size, "lr": a.lr,
        "minutes": CLOCK_GUARD_MINUTES, "forward_passes": passes, "resume": (out / "checkpoint.pt").is_file(),
        "overwrite": not (out / "checkpoint.pt").is_file(), "start": StartSettings(init_from=a.start),
        "control": ControlSettings(control_dis=False),
    }


def expert_args(a: Args, seed: int, out: Path, passes: int, k: int, greedy_first: bool = False) -> expert_iteration.Args:
    """Expert iteration without labels: the verified search at ``k`` (``k = 1``: greedy answers only, c2), after a
    greedy sweep of ``--num-envs`` puzzles when ``greedy_first``."""
    env = EnvSettings(num_envs=a.num_envs, reward_mode="verifier", group_size=a.group_size)
    expert = expert_iteration.ExpertSettings(replay_size=a.replay_size, expert_search=k, replay_batches=a.replay_batches,
                                             greedy_first=greedy_first)
    return expert_iteration.Args(**rl_common(a, seed, out, passes), env=env, expert=expert)


def group_args(a: Args, seed: int, out: Path, passes: int) -> ppo_recursion.Args:
    """The group objective without labels over symmetric views, every cell sharing the episode's advantage."""
    env = EnvSettings(num_envs=a.num_envs, reward_mode="verifier", group_size=a.group_size)
    return ppo_recursion.Args(**rl_common(a, seed, out, passes), env=env, update=UpdateSettings(objective="group"),
                              advantage=AdvantageSettings(credit="shared"))


def arm_record(metrics: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """What the table reads from a finished arm: its counters and the checkpoint evaluated."""
    keys = ("optimizer_steps", "train_forward_passes", "wall_seconds")
    return {**{k: metrics[k] for k in keys}, "checkpoint": str(checkpoint)}


def finished(out: Path, passes: int = 0) -> dict[str, Any] | None:
    """The metrics of an arm that ran to its budget of ``passes`` training forward passes; None when it has
    none, was interrupted or trained for fewer (it then resumes from its checkpoint, or reruns)."""
    if not (out / "metrics.json").is_file():
        return None
    metrics = read_json(out / "metrics.json")
    return None if metrics.get("interrupted") or metrics["train_forward_passes"] < passes else metrics


def run_rl_arm(a: Args, seed: int, out: Path, passes: int, k: int | None, greedy_first: bool = False) -> dict[str, Any]:
    """Train (or read back) an RL-script arm: ``k`` the search's K for expert iteration (after a greedy sweep when
    ``greedy_first``), None for the group family."""
    done = finished(out, passes)
    if done is not None:
        return arm_record(done, out / "checkpoint.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    if k is None:
        metrics = ppo_recursion.train(group_args(a, seed, out, passes))
    else:
        metrics = expert_iteration.train(expert_args(a, seed, out, passes, k, greedy_first))
    if metrics.get("interrupted"):
        raise KeyboardInterrupt
    return arm_record(metrics, out / "checkpoint.pt")


def run_dis_arm(a: Args, seed: int, out: Path, passes: int, source: str) -> dict[str, Any]:
    """Train (or read back) a labelled DIS control of seed ``seed``: ``source`` "start" (c1) or "rl" (c4)."""
    done = finished(out, passes)
    if done is not None:
        return arm_record(done, out / "checkpoint.pt")
    rl_like = expert_args(a, seed, out.parent, passes, a.expert_search)
    da = dis_control_args(Path(a.start), load_checkpoint(a.start), passes, rl_like, a.device, source, a.lr)
    da.out = str(out)
    metrics = supervised.train(da)
    if metrics.get("interrupted"):
        raise KeyboardInterrupt
    return arm_record(metrics, out / "checkpoint.pt")


def train_seed(a: Args, seed: int) -> dict[str, dict[str, Any]]:
    """Every arm of one training seed; the controls get the most training forward passes an RL arm spent."""
    root = Path(a.out) / f"seed{seed}"
    arms = {}
    for family in a.family_list():
        name = RL_ARMS[family]
        k = None if family == "group" else a.expert_search
        arms[name] = run_rl_arm(a, seed, root / name, a.forward_passes, k, family == "hybrid")
    spent = max(r["train_forward_passes"] for r in arms.values())
    arms["c1_dis_source"] = run_dis_arm(a, seed, root / "c1_dis_source", spent, "start")
    arms["c2_self_training"] = run_rl_arm(a, seed, root / "c2_self_training", spent, 1)
    arms["c4_dis_labelled"] = run_dis_arm(a, seed, root / "c4_dis_labelled", spent, "rl")
    return arms


# ----------------------------------------------------------------------------- evaluation


def eval_sets(a: Args, paths: set[str]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """The evaluated sets with their labels (read for scoring only), minus every puzzle whose grid an arm trained on."""
    if a.eval_part == "test":
        sets = {}
        for spec in TEST_PARTS:
            p, s, _ = real_sets.load_part(spec)
            sets[spec] = (p[: a.eval_size], s[: a.eval_size])
    else:  # the validation slice the RL runs held out (seed-independent: the last lines of the training part)
        d = split("easy", a.puzzles, seed=0, pool_size=1, eval_size=a.val_size, need_solutions=False, eval_labels=True)
        sets = {f"{a.puzzles}:val": (d.eval_puzzles[: a.eval_size], d.eval_solutions[: a.eval_size])}
    return sets, drop_trained(sets, paths)


def evaluate_model(path: str, sets: dict[str, tuple[np.ndarray, np.ndarray]], ks: tuple[int, ...], a: Args,
                   seed: int) -> dict[str, Any]:
    """Greedy (every step) on each set, and the verified search at each of ``ks`` on its first ``--search-size``."""
    model, _ = load_model(path)
    model = model.to(a.device)
    out: dict[str, Any] = {}
    for name, (p, s) in sets.items():
        g = measure(model, p, s, a.device, False)
        row = {"greedy": g["solve_rate"], "greedy_passes": g["forward_passes_per_puzzle"]}
        for k in ks:
            sp = search_point(SearchAgent(model, k=k, seed=seed), p[: a.search_size], s[: a.search_size], 64, a.device)
            row[f"search{k}"], row[f"search{k}_passes"] = sp["solve_rate"], sp["forward_passes_per_puzzle"]
        out[name] = row
    return out


# ----------------------------------------------------------------------------- the table


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def interval(values: list[float]) -> str:
    m, lo, hi = seed_interval(values)
    return f"{pct(m)} [{pct(lo)}, {pct(hi)}]"


def markdown(runs: dict[int, dict[str, Any]], start_eval: dict[int, dict[str, Any]], sets: list[str], a: Args) -> str:
    """Per set: each row's greedy solve rate (mean [95% t interval] over seeds), the search at each K for
    the start and each RL arm, the paired differences, and each row's counters (means over seeds)."""
    seeds, rl_arms = sorted(runs), [RL_ARMS[f] for f in a.family_list()]
    lines = [f"RL arms: {', '.join(rl_arms)}; seeds {', '.join(map(str, seeds))}; evaluated: {a.eval_part}"]
    for name in sets:
        lines += ["", f"### {name}", "", "| row | greedy solve % | passes / puzzle | optimizer steps | training forward passes "
                  "| wall min |", "|---|---|---|---|---|---|"]
        g = {arm: [runs[s]["eval"][arm][name]["greedy"] for s in seeds] for arm in a.arms()}
        g["start"] = [start_eval[s][name]["greedy"] for s in seeds]
        passes = start_eval[seeds[0]][name]["greedy_passes"]
        lines.append(f"| start | {interval(g['start'])} | {passes:.1f} | 0 | 0 | 0 |")
        for arm in a.arms():
            rec = [runs[s]["arms"][arm] for s in seeds]
            ev = [runs[s]["eval"][arm][name] for s in seeds]
            lines.append(f"| {arm} | {interval(g[arm])} | {np.mean([e['greedy_passes'] for e in ev]):.1f} | "
                         f"{np.mean([r['optimizer_steps'] for r in rec]):,.0f} | "
                         f"{np.mean([r['train_forward_passes'] for r in rec]):,.0f} | "
                         f"{np.mean([r['wall_seconds'] for r in rec]) / 60:.1f} |")
        for k in a.k_list():
            for who, ev in [("start", start_eval)] + [(arm, {s: runs[s]["eval"][arm] for s in seeds}) for arm in rl_arms]:
                rate = [ev[s][name][f"search{k}"] for s in seeds]
                lines.append(f"| {who}, search K = {k} | {interval(rate)} | "
                             f"{np.mean([ev[s][name][f'search{k}_passes'] for s in seeds]):.1f} | | | |")
        lines += ["", "| difference (points, paired by seed) | mean [95% interval over seeds] |", "|---|---|"]
        for arm in rl_arms:
            for other, label in (("start", "start"), ("c1_dis_source", "c1"), ("c2_self_training", "c2"),
                                 ("c4_dis_labelled", "c4")):
                lines.append(f"| {arm} - {label} | {interval([u - v for u, v in zip(g[arm], g[other], strict=True)])} |")
            for k in a.k_list():
                d = [runs[s]["eval"][arm][name][f"search{k}"] - start_eval[s][name][f"search{k}"] for s in seeds]
                lines.append(f"| {arm} - start, search K = {k} | {interval(d)} |")
    return "\n".join(lines)


def run(a: Args) -> dict[str, Any]:
    """Train every arm of every seed and evaluate each on ``--eval-part`` (``protocol_<part>.json``, ``table_<part>.md``)."""
    a.validate()
    out = Path(a.out)
    t0 = time.perf_counter()
    runs: dict[int, dict[str, Any]] = {}
    for seed in a.seed_list():
        runs[seed] = {"arms": train_seed(a, seed)}
    paths = {a.start} | {r["arms"][arm]["checkpoint"] for r in runs.values() for arm in a.arms()}
    sets, dropped = eval_sets(a, paths)
    start_eval = {s: evaluate_model(a.start, sets, a.k_list(), a, s) for s in a.seed_list()}
    for seed, r in runs.items():
        r["eval"] = {arm: evaluate_model(r["arms"][arm]["checkpoint"], sets, () if arm in CONTROLS else a.k_list(), a, seed)
                     for arm in a.arms()}
    table = markdown(runs, start_eval, list(sets), a)
    settings = dict(vars(a))
    payload = {"settings": settings, "sets": {k: len(v[0]) for k, v in sets.items()}, "trained_grids": dropped,
               "start": start_eval, "runs": {str(s): r for s, r in runs.items()},
               "seconds": time.perf_counter() - t0, "run": run_info({"protocol": settings}, a.seed_list()[0], a.device)}
    with RunFolder(out, catch_signals=False):
        atomic_write_json(out / f"protocol_{a.eval_part}.json", payload)
        atomic_write_text(out / f"table_{a.eval_part}.md", table + "\n")
    print("\n" + table + f"\n\nwrote {out}/table_{a.eval_part}.md and protocol_{a.eval_part}.json", flush=True)
    return payload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line and :func:`run`; a bad option or setting exits 2 with one line."""
    args = cli.parse(Args, argv, description=__doc__)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, RunFolderBusy) as e:
        cli.input_error(e)
    except OSError as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    return {}


if __name__ == "__main__":
    main()
