"""The measurements of an RL run and its no-RL controls: the before/after table both RL scripts print.

Rows (all on the run's held-out puzzles): greedy decoding with every step, greedy with
the Q head's halt, the sampled policy, a confidence threshold chosen without RL on a
validation slice of the training pool (:func:`threshold_control`), and DIS trained on
from the start instead of RL (:func:`dis_continued_control`).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.recursion_policy import PolicyAgent, PolicySettings, RecursionPolicy
from agents.runner import run_episodes, summarize
from agents.trm_agent import TRMAgent
from train import supervised
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
    for control in (c for c in controls if c is not None):
        what = "on RL's puzzles, labelled" if control.get("data") == "rl" else "on its own data"
        lines.append(table_row(f"DIS continued {control['seconds'] / 60:.1f} min {what} instead of RL, all steps", control))
    return "\n".join(lines)


def dis_control_args(init_path: Path, ck: dict[str, Any], seconds: float, args: RLArgs, device: str, source: str,
                     rl_lr: float) -> supervised.Args:
    """The DIS run of a control (see :func:`dis_continued_control`): its model and training settings are the
    start's (for ``rl`` at the constant rate ``rl_lr``), its data the start's own (``start``) or RL's (``rl``)."""
    model, training = configs_from_dict(ck["config"], ck.get("training"))
    out = Path(args.out) / ("dis_continued" if source == "start" else "dis_on_rl_data")
    common = {"out": str(out), "device": device, "eval_limit": 1, "model": model}
    if source == "start":
        a = {k: ck["args"][k] for k in supervised.DATA_SETTINGS}
        a["init_from"] = ck["args"].get("init_from", "")  # a start that was itself a fine-tune resumes as one
        return supervised.default_args("dis", **common, **a, training=training, resume=True,
                                       minutes=(ck["state"]["wall_seconds"] + seconds) / 60)
    training = replace(training, lr=rl_lr, lr_min_ratio=1.0, warmup_steps=1)
    data = {"seed": args.seed, "difficulty": args.difficulty, "pool_size": args.pool_size, "eval_size": args.eval_size,
            "puzzles": args.puzzles, "augment": True}
    return supervised.default_args("dis", **common, **data, training=training, init_from=str(init_path), minutes=seconds / 60,
                                   overwrite=True)  # the control belongs to the RL run: a rerun measures it afresh


def dis_continued_control(
    init_path: Path, seconds: float, data: Split, args: RLArgs, device: str, source: str = "start", rl_lr: float | None = None
) -> dict[str, Any] | None:
    """Accuracy without RL: the starting DIS checkpoint trained on by DIS for the RL's wall-clock ``seconds``.

    ``source="start"`` (``--control-data start``): the checkpoint is copied to ``OUT/dis_continued`` and resumed there
    with its own data settings (it continues its own data stream; a decaying learning-rate
    schedule is stretched over the longer budget, so the rate climbs back part way: a warm
    restart). ``source="rl"`` (``--control-data rl``, in ``OUT/dis_on_rl_data``): DIS fine-tunes the checkpoint's
    weights on RL's own training puzzles *with their labels* (``--init-from``, the same seed, tier or
    file, pool and held-out split), at the constant rate ``rl_lr`` (default: the start run's final rate).
    Either way it is measured on RL's held-out puzzles with every step run. Returns None when the start
    is not a DIS run (or, for ``rl``, not a resumable one).
    """
    ck = load_checkpoint(init_path)
    if ck["kind"] != "dis" or "args" not in ck:
        return None
    training = configs_from_dict(ck["config"], ck.get("training"))[1]
    rl_lr = training.lr * training.lr_min_ratio if rl_lr is None else rl_lr
    a = dis_control_args(init_path, ck, seconds, args, device, source, rl_lr)
    if source == "start":  # a fresh copy of the start, whatever an earlier run left there
        shutil.rmtree(a.out, ignore_errors=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    if source == "start":
        shutil.copyfile(init_path, Path(a.out) / "checkpoint.pt")
    print(f"control: DIS continued ({source} data) for {seconds / 60:.1f} min -> {a.out}", flush=True)
    supervised.train(a)
    model, _ = load_model(Path(a.out) / "checkpoint.pt", "dis")
    m = measure(model.to(device), data.eval_puzzles, data.eval_solutions, device, False)
    return {**m, "seconds": seconds, "data": source}
