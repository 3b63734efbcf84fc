"""The measurements of an RL run and its no-RL controls: the before/after table both RL scripts print.

Rows (all on the run's held-out puzzles): greedy decoding with every step, greedy with
the Q head's halt, the sampled policy, a confidence threshold chosen without RL on a
validation slice of the training pool (:func:`threshold_control`), DIS trained on
from the start instead of RL (:func:`dis_continued_control`) and self-training without
search (``train/expert_iteration.py``'s ``self_training_job``). With ``--test-set`` the
start, the RL run and each control are also measured once on a real test part
(:func:`test_rows`, :func:`test_table`).
"""

from __future__ import annotations

import contextlib
import json
import math
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.multiprocessing as mp

from agents.recursion_policy import PolicyAgent, PolicySettings, RecursionPolicy
from agents.runner import run_episodes, summarize
from agents.trm_agent import TRMAgent
from envs import real_sets
from train import supervised
from train.benchmark import drop_trained
from train.held_out import Split
from train.rl.common import ControlSettings, RLArgs
from trm.checkpoint import load_checkpoint, load_model
from trm.config import configs_from_dict
from trm.model import TRM


def measure(
    model: TRM, puzzles: np.ndarray, solutions: np.ndarray | None, device: str, halting: bool, threshold: float | None = None
) -> dict[str, Any]:
    """Greedy decoding (argmax cells; with ``halting``, halt when ``q > 0``; with ``threshold``, when the
    confidence statistic exceeds it) on held-out puzzles."""
    model.reset_counter()
    agent = TRMAgent(model, halting=halting, halt_threshold=threshold)
    return summarize(run_episodes(agent, puzzles, solutions, device=device, max_steps=model.cfg.n_sup))


THRESHOLDS = (-3.0, -2.0, -1.0, -0.5, -0.2, -0.1, -0.05, -0.02, -0.01, -0.005, -0.002, -0.001)


def threshold_control(model: TRM, data: Split, c: ControlSettings, device: str) -> dict[str, Any]:
    """Halting without RL: greedy decoding that halts once the confidence statistic exceeds a fixed ``tau``.

    ``tau`` is the one of :data:`THRESHOLDS` with the fewest forward passes whose solve rate
    on a validation split (the first ``--val-size`` training puzzles, never the held-out
    ones) stays within one point of running every step; it is then measured on the
    held-out puzzles like the other rows.
    """
    k = min(c.val_size, len(data.train))
    vp, vs = data.train.puzzles[:k], None if data.train.solutions is None else data.train.solutions[:k]
    full = measure(model, vp, vs, device, False)["solve_rate"]
    best, best_passes = None, math.inf
    for tau in THRESHOLDS:
        m = measure(model, vp, vs, device, False, tau)
        if m["solve_rate"] >= full - 0.01 and m["forward_passes_per_puzzle"] < best_passes:
            best, best_passes = tau, m["forward_passes_per_puzzle"]
    out = measure(model, data.eval_puzzles, data.eval_solutions, device, False, best)
    res = {**out, "threshold": best, "validation_puzzles": k}
    if c.halt_curve:  # chosen on the held-out puzzles themselves: a control at least as strong as the validated one
        res["curve"] = []
        for tau in THRESHOLDS:
            m = measure(model, data.eval_puzzles, data.eval_solutions, device, False, tau)
            res["curve"].append({"threshold": tau, **{k: m[k] for k in ("solve_rate", "forward_passes_per_puzzle")}})
    return res


def threshold_at(curve: list[dict[str, float]], solve_rate: float) -> dict[str, float] | None:
    """The point of a threshold curve with the fewest forward passes among those solving at least
    ``solve_rate`` (None if none does): the no-RL halt's cost at the learned halt's solve rate."""
    ok = [p for p in curve if p["solve_rate"] >= solve_rate]
    return min(ok, key=lambda p: p["forward_passes_per_puzzle"]) if ok else None


def measure_sampled(
    policy: RecursionPolicy, puzzles: np.ndarray, solutions: np.ndarray | None, device: str, seed: int = 0,
    settings: PolicySettings | None = None,
) -> dict[str, Any]:
    """The stochastic policy itself (sampled cells and halts, as in training) on held-out puzzles.

    Played by :class:`agents.recursion_policy.PolicyAgent` through :func:`agents.runner.run_episodes`,
    scored like training episodes (solution, or the verifier when ``solutions`` is None);
    forward passes are counted by the model. Sampling uses its own seeded RNG, so the
    training RNG stream is untouched.
    """
    policy.trm.reset_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        res = run_episodes(PolicyAgent(policy, settings), puzzles, solutions, device=device, max_steps=policy.trm.cfg.n_sup)
    return {k: float(res[key].mean()) for k, key in
            (("solve_rate", "solved"), ("forward_passes_per_puzzle", "forward_passes"), ("mean_steps", "steps"))}


def evaluate_policy(
    policy: RecursionPolicy, data: Split, settings: PolicySettings, seed: int, device: str, greedy: TRM | None = None
) -> dict[str, dict[str, Any]]:
    """The before/after measurements: greedy with all steps, greedy with Q-head halting (both with
    ``greedy``, the weight average when the run keeps one, else the policy's own TRM), sampled as in training."""
    p, s, model = data.eval_puzzles, data.eval_solutions, greedy or policy.trm
    return {
        "halting": measure(model, p, s, device, True),
        "fixed": measure(model, p, s, device, False),
        "sampled": measure_sampled(policy, p, s, device, seed, settings),
    }


def evaluate_start(policy: RecursionPolicy, data: Split, args: RLArgs, device: str) -> dict[str, dict[str, Any]]:
    """The starting policy's measurements, plus the no-RL control of halting (:func:`threshold_control`)."""
    before = evaluate_policy(policy, data, args.policy, args.seed, device)
    return {**before, "threshold": threshold_control(policy.trm, data, args.control, device)}


def table_row(label: str, m: dict[str, Any]) -> str:
    """One Markdown row: solve rate, cell accuracy, forward passes, steps and dead compute (``-`` where absent)."""
    cell = f"{m['cell_accuracy']:.3f}" if "cell_accuracy" in m else "-"
    dead = f"{m['dead_compute_share']:.1%}" if "dead_compute_share" in m else "-"
    return (
        f"| {label} | {m['solve_rate']:.1%} | {cell} | {m['forward_passes_per_puzzle']:.1f} | {m['mean_steps']:.2f} | {dead} |"
    )


def table(before: dict, after: dict, *controls: dict | None) -> str:
    """The before/after Markdown table the RL scripts print, with the no-RL controls."""
    lines = [
        "",
        "| policy | solve rate | cell accuracy | forward passes / puzzle | steps | dead compute |",
        "|---|---|---|---|---|---|",
    ]
    for when, res in (("before RL", before), ("after RL", after)):
        lines.append(table_row(f"{when}, greedy, all steps", res["fixed"]))
        lines.append(table_row(f"{when}, greedy, Q-head halting", res["halting"]))
        if "threshold" in res:
            lines.append(table_row(f"{when}, greedy, confidence > {res['threshold']['threshold']} (no RL)", res["threshold"]))
        lines.append(table_row(f"{when}, sampled policy", res["sampled"]))
    what = {"rl": "DIS on RL's puzzles, labelled", "start": "DIS on its own data", "self": "self-training without search"}
    for control in (c for c in controls if c is not None):
        passes = f"{control['train_forward_passes']:,} passes" if "train_forward_passes" in control else ""
        label = f"{what[control.get('data', 'start')]} instead of RL ({passes}, {control['seconds'] / 60:.1f} min), all steps"
        lines.append(table_row(label, control))
    return "\n".join(lines)


CONTROL_FOLDERS = {"start": "dis_continued", "rl": "dis_on_rl_data"}


def dis_control_args(init_path: Path, ck: dict[str, Any], passes: int, args: RLArgs, device: str, source: str,
                     rl_lr: float) -> supervised.Args:
    """The DIS run of a control (see :func:`dis_continued_control`): it fine-tunes the start's weights
    (``--init-from``) with the RL run's ``--seed``, the start's model and training settings at the constant
    rate ``rl_lr``, for ``passes`` training forward passes, on the start's own labelled source (``start``)
    or on RL's puzzles with their labels (``rl``)."""
    model, training = configs_from_dict(ck["config"], ck.get("training"))
    training = replace(training, lr=rl_lr, lr_min_ratio=1.0, warmup_steps=1)
    out = Path(args.out) / CONTROL_FOLDERS[source]
    if source == "start":
        own = ck["args"]
        data = {"difficulty": own["difficulty"], "puzzles": own.get("puzzles", ""), "pool_size": own["pool_size"],
                "eval_size": own["eval_size"], "augment": own.get("augment", True)}
    else:
        data = {"difficulty": args.difficulty, "pool_size": args.pool_size, "eval_size": args.eval_size,
                "puzzles": args.puzzles, "augment": True}
    # the budget is the RL run's training forward passes; the clock only guards against a runaway (a day)
    return supervised.default_args("dis", out=str(out), device=device, eval_limit=1, model=model, training=training,
                                   seed=args.seed, init_from=str(init_path), forward_passes=max(1, passes),
                                   minutes=24 * 60.0, overwrite=True, **data)  # a rerun of the RL run measures it afresh


def dis_continued_control(
    init_path: Path, passes: int, data: Split, args: RLArgs, device: str, source: str = "start", rl_lr: float | None = None
) -> dict[str, Any] | None:
    """Accuracy without RL: the start fine-tuned by DIS with labels for the RL run's ``passes`` training forward passes.

    Like for like with the RL run: the same start (its weights, ``--init-from``), the RL run's own
    training seed (so each RL seed has its own control and data stream; nothing is resumed), the
    start's weight average and batch size, a constant rate ``rl_lr`` (default: the start run's
    final rate) and a budget in training forward passes counted by the model, not wall clock.

    * ``source="start"`` (``--control-data start``, in ``OUT/dis_continued``; c1): the start's own
      labelled source (its tier or collection, pool and held-out sizes), drawn with the RL seed.
    * ``source="rl"`` (``--control-data rl``, in ``OUT/dis_on_rl_data``; c4): RL's own training
      puzzles *with their labels*, which RL never reads in verifier mode: an upper reference.

    Either way it is measured on RL's held-out puzzles with every step run. Returns the measurement
    with the control's ``seconds``, ``optimizer_steps`` and ``train_forward_passes``; None when the start
    is not a DIS run.
    """
    a = control_run_args(init_path, passes, args, device, source, rl_lr)
    if a is None:
        return None
    announce(source, passes, a.out)
    return control_row(a.out, supervised.train(a), data, device, source)


def control_run_args(init_path: Path, passes: int, args: RLArgs, device: str, source: str,
                     rl_lr: float | None) -> supervised.Args | None:
    """The options of :func:`dis_continued_control`'s DIS run (None when the start is not a DIS run)."""
    ck = load_checkpoint(init_path)
    if ck["kind"] != "dis" or "args" not in ck:
        return None
    training = configs_from_dict(ck["config"], ck.get("training"))[1]
    rl_lr = training.lr * training.lr_min_ratio if rl_lr is None else rl_lr
    return dis_control_args(init_path, ck, passes, args, device, source, rl_lr)


def control_row(out: str | Path, res: dict[str, Any], data: Split, device: str, source: str) -> dict[str, Any]:
    """A finished control run in folder ``out`` (its metrics ``res``) measured on RL's held-out ``data``, every
    step (its greedy weights), with its ``seconds``, counters, ``data`` (``source``) and ``checkpoint``."""
    path = Path(out) / "checkpoint.pt"
    model, _ = load_model(path)
    m = measure(model.to(device), data.eval_puzzles, data.eval_solutions, device, False)
    counts = {k: res[k] for k in ("optimizer_steps", "train_forward_passes")}
    return {**m, "seconds": res["wall_seconds"], **counts, "data": source, "checkpoint": str(path)}


@dataclass(frozen=True)
class ControlJob:
    """One control run: ``train(args)`` trains it in folder ``args.out`` and returns its metrics.

    ``source`` names its row: ``"start"`` (c1), ``"rl"`` (c4) or ``"self"`` (c2)."""

    source: str
    args: Any
    train: Callable[[Any], dict[str, Any]]


# builds an RL script's self-training control (c2): (RL options, start, passes, device) -> its job
SelfTraining = Callable[[RLArgs, Path, int, str], ControlJob]


def dis_jobs(init_path: Path, passes: int, args: RLArgs, device: str, sources: list[str],
             rl_lr: float | None) -> list[ControlJob]:
    """The DIS controls of ``sources`` (:func:`control_run_args`) as jobs; none when the start is not a DIS run."""
    runs = [(s, control_run_args(init_path, passes, args, device, s, rl_lr)) for s in sources]
    return [ControlJob(s, a, supervised.train) for s, a in runs if a is not None]


JOB_NAMES = {"start": "DIS (start data, labelled)", "rl": "DIS (rl data, labelled)", "self": "self-training without search"}


def announce(source: str, passes: int, out: str, background: bool = False) -> None:
    """The one line a control prints as it starts."""
    where = ", in the background" if background else ""
    print(f"control: {JOB_NAMES[source]} for {passes:,} training forward passes{where} -> {out}", flush=True)


@contextlib.contextmanager
def logged(out: str, stderr: bool = False) -> Iterator[TextIO]:
    """Send this process's output (and its errors, with ``stderr``) to ``OUT/log.txt`` while the block runs."""
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "log.txt", "w") as log, contextlib.redirect_stdout(log):
        with contextlib.redirect_stderr(log) if stderr else contextlib.nullcontext():
            yield log


def run_quietly(job: ControlJob, data: Split, device: str) -> dict[str, Any] | None:
    """Train ``job`` in this process, its output in ``OUT/log.txt`` (its own table stays in its folder), and measure
    it with :func:`control_row`; None when it was stopped before its budget (the stop reaches the RL run too)."""
    announce(job.source, job.args.forward_passes, job.args.out)
    with logged(job.args.out):
        res = job.train(job.args)
    return None if res.get("interrupted") else control_row(job.args.out, res, data, device, job.source)


def _train_quietly(job: ControlJob, threads: int) -> None:
    """A background control's process: ``threads`` torch threads, its output (and any traceback) in ``OUT/log.txt``."""
    torch.set_num_threads(threads)
    with logged(job.args.out, stderr=True) as log:
        try:
            job.train(job.args)
        except BaseException:
            traceback.print_exc(file=log)
            raise SystemExit(1) from None


class BackgroundControls:
    """Controls trained in their own processes while RL trains (``--parallel-controls``): the DIS controls and,
    with ``--self-training``, the self-training control.

    Each runs for ``passes`` training forward passes fixed before RL starts (``--forward-passes``),
    where the sequential controls take what RL spent: both stop at their first check past the
    budget, so their counts differ by at most one RL round or one batch (each row records its
    own). The cores are split equally between RL and the controls while they run.
    """

    def __init__(self, jobs: list[ControlJob], passes: int) -> None:
        self.jobs = jobs
        self.passes = passes
        self.threads = torch.get_num_threads()
        share = max(1, self.threads // (len(self.jobs) + 1))  # RL and each control get an equal share of the cores
        ctx = mp.get_context("spawn")
        self.procs = []
        for job in self.jobs:
            announce(job.source, passes, job.args.out, background=True)
            proc = ctx.Process(target=_train_quietly, args=(job, share), daemon=True)
            proc.start()
            self.procs.append(proc)
        if self.procs:
            torch.set_num_threads(share)

    @property
    def sources(self) -> set[str]:
        return {job.source for job in self.jobs}

    def check(self) -> None:
        """Stop the run (``SystemExit`` naming the log) as soon as a control has failed, not after RL."""
        for job, proc in zip(self.jobs, self.procs, strict=True):
            if proc.exitcode not in (None, 0):
                self.stop()
                out = job.args.out
                raise SystemExit(f"error: the background control in {out} failed (exit {proc.exitcode}); see {out}/log.txt")

    def collect(self, data: Split, device: str, stopped: Callable[[], bool]) -> dict[str, dict[str, Any] | None]:
        """Wait for every control (stopping them if ``stopped()`` turns true), restore the threads, and measure each
        on RL's held-out ``data``. A control that did not reach its budget gives no row (None)."""
        out: dict[str, dict[str, Any] | None] = {}
        for job, proc in zip(self.jobs, self.procs, strict=True):
            while proc.is_alive() and not stopped():
                proc.join(timeout=1.0)
                self.check()  # any control that fails meanwhile stops the run now, not when this one ends
            if stopped():
                self.stop()
                return {}
            self.check()
            res = json.loads((Path(job.args.out) / "metrics.json").read_text())
            full = not res.get("interrupted") and res["train_forward_passes"] >= self.passes
            out[job.source] = control_row(job.args.out, res, data, device, job.source) if full else None
        torch.set_num_threads(self.threads)
        return out

    def stop(self) -> None:
        """Stop every control still running (the run ended early, or a control failed); safe to call twice."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        torch.set_num_threads(self.threads)


COUNTERS = ("optimizer_steps", "train_forward_passes", "seconds")


def test_rows(rows: dict[str, dict[str, Any]], spec: str, size: int, device: str) -> dict[str, Any]:
    """Greedy solve rate (every step) of each row on the first ``size`` puzzles of the test part ``spec``.

    ``rows``: name -> ``{"checkpoint": path, "optimizer_steps", "train_forward_passes", "seconds"}``;
    the first row is the start. A puzzle whose solution grid any row's checkpoint trained on is
    dropped from the set for every row (``dropped``). Labels are read here for scoring only.
    """
    p, s, _ = real_sets.load_part(spec)
    sets = {spec: (p[:size], s[:size])}
    dropped = drop_trained(sets, {r["checkpoint"] for r in rows.values()})
    p, s = sets[spec]
    out: dict[str, Any] = {"set": spec, "puzzles": len(p), "dropped": dropped, "rows": {}}
    for name, r in rows.items():
        model, _ = load_model(r["checkpoint"])
        m = measure(model.to(device), p, s, device, False)
        out["rows"][name] = {**{k: r.get(k, 0) for k in COUNTERS}, "checkpoint": str(r["checkpoint"]),
                             **{k: m[k] for k in ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle")}}
    return out


def test_table(res: dict[str, Any], rl_row: str = "after RL") -> str:
    """The Markdown table of :func:`test_rows`: each row with its training cost, then ``rl_row`` minus each other row."""
    rows = res["rows"]
    lines = [f"\n{res['set']}, first {res['puzzles']} puzzles, greedy, every step (one training seed)", "",
             "| row | solve rate | forward passes / puzzle | optimizer steps | training forward passes | minutes |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['solve_rate']:.1%} | {r['forward_passes_per_puzzle']:.1f} | {r['optimizer_steps']:,} | "
                     f"{r['train_forward_passes']:,} | {r['seconds'] / 60:.1f} |")
    mine = rows[rl_row]["solve_rate"]
    lines += ["", f"| {rl_row} minus | points |", "|---|---|"]
    lines += [f"| {name} | {100 * (mine - r['solve_rate']):+.1f} |" for name, r in rows.items() if name != rl_row]
    return "\n".join(lines)
