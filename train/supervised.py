"""Supervised training of the Tiny Recursive Model: TRM deep supervision, DIS, or the one-pass baseline.

Shared by ``train/train_trm.py``, ``train/train_dis.py`` and ``train/train_onepass.py``.
One batch of puzzles goes through ``n_sup`` supervision steps; after each: loss on the
conditional readout, an optimizer step, an EMA update, and the state ``(y, z)``
carried on detached.

* ``scheme="trm"``: every step is trained on the solution (stable-max cross-entropy)
  and the Q head with BCE on "the decoded answer is exactly right"; with ``halting``
  a sample leaves the batch once its Q head says halt.
* ``scheme="dis"``: step ``s`` is trained on its own target ``y†_s`` from
  :mod:`trm.targets` (weights uniform or increasing), no halting head.

Data: the held-out split of :mod:`train.held_out` (a generated tier or a file), with
on-device augmentation. Run folder, budget and checkpoints: :mod:`train.run_folder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs import augmentation
from train import cli
from train.deep_supervision import make_optimizer, train_batch
from train.distributed import Dist, all_stop, close, init_distributed, rank_device
from train.evaluate import evaluate
from train.held_out import Split, grids_tensor, lineage, split, trained_grids, without_trained
from train.plateau import plateaued
from train.refill import LiveBatch, train_refill
from train.run_folder import (
    Budget,
    Cadence,
    Diverged,
    RunArgs,
    RunFolder,
    RunFolderBusy,
    check_memory,
    rng_state,
    run_info,
    same_start,
    seed_everything,
    set_rng_state,
)
from trm.checkpoint import config_mismatch, load_checkpoint, model_weights
from trm.config import TrainConfig, TRMConfig, configs_from_dict
from trm.ema import EMA
from trm.model import TRM, training_bytes

BASE_CONFIGS = {  # each scheme's network and training presets
    "dis": (TRMConfig.dis, TrainConfig.dis),
    "trm": (TRMConfig, TrainConfig),
    "onepass": (TRMConfig.onepass, TrainConfig.onepass),
}
PAPER_CONFIGS = (TRMConfig.paper_sudoku, TrainConfig.paper_sudoku)  # --paper (TRM only)
DATA_SETTINGS = ("seed", "difficulty", "puzzles", "pool_size", "eval_size", "augment")  # fixed on --resume


@dataclass
class Args(RunArgs):
    eval_size: int = 500  # held-out puzzles
    steps: int | None = None  # stop after this many batches (default: only --minutes)
    eval_limit: int = 0  # evaluate at the end on the first N held-out puzzles only (0: all)
    augment: bool = True  # a random validity-preserving symmetry for every training puzzle
    eval_every: int = 0  # evaluate every N batches (on --eval-limit puzzles; not timed) for the learning curve (0: at the end)
    plateau: float = 0.0  # stop once the curve (--eval-every) gained under this many points over the run's last quarter (0: off)
    log_every: int = 10  # batches between TensorBoard points
    paper: bool = False  # TRM only: the TRM code's Sudoku-Extreme recipe (D=512, batch 768, Adam-atan2)
    amp: bool = False  # bfloat16 autocast of the forward passes (the TRM code's precision; for cuda)
    init_from: str = ""  # start from this checkpoint's weights (same scheme and shape), fresh optimizer; a --resume repeats it
    model: TRMConfig = field(default_factory=TRMConfig.dis)
    training: TrainConfig = field(default_factory=TrainConfig.dis)

    def validate(self) -> None:
        super().validate()
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        for name in ("eval_limit", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ValueError(f"--log-every must be at least 1, got {self.log_every}")
        if not 0 <= self.plateau < 100:
            raise ValueError(f"--plateau is a gain in points, in [0, 100), got {self.plateau}")
        if self.plateau and not self.eval_every:
            raise ValueError("--plateau reads the learning curve: pass --eval-every N as well")
        if self.paper and self.training.scheme != "trm":
            raise ValueError("--paper is the TRM paper's recipe: use it with train/train_trm.py")
        per_rank = self.training.batch_size / max(1, int(os.environ.get("WORLD_SIZE", "1")))  # each process's share
        check_memory(training_bytes(self.model, per_rank), "the model (--hidden, --layers, --expansion) and --batch-size",
                     self.device)
        if self.init_from and not self.resume:  # a resume reads the lineage from its own checkpoint
            init_checks(self.init_from, self.model, self.training.scheme)


def init_checks(path: str, cfg: TRMConfig, scheme: str) -> dict[str, Any]:
    """The ``--init-from`` checkpoint, refused (``ValueError`` naming the file) unless it was written by
    the ``scheme`` trainer with the same parameter shapes as ``cfg`` (training settings may differ)."""
    try:
        ck = load_checkpoint(path, kind=scheme)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"--init-from: {e}") from None
    diff = config_mismatch(TRMConfig.from_dict(ck["config"]).shape_fields(), cfg.shape_fields())
    if diff:
        raise ValueError(f"--init-from: {path} has another model shape (pass its settings): " + "; ".join(diff))
    return ck


def default_args(scheme: str, paper: bool = False, **overrides: Any) -> Args:
    """The ``Args`` a ``scheme`` trainer starts from: the scheme's configs (the paper's with ``paper``, TRM
    only), its run folder ``runs/<scheme>``, then ``overrides``. A warm start or a control is
    ``train(default_args("dis", out=..., minutes=...))``."""
    model, training = PAPER_CONFIGS if paper and scheme == "trm" else BASE_CONFIGS[scheme]
    return replace(Args(out=f"runs/{scheme}", model=model(), training=training(), paper=paper), **overrides)


def parse_args(scheme: str, argv: list[str] | None = None, description: str | None = None) -> Args:
    """``Args`` of a ``scheme`` trainer from the command line: the scheme's configs, or the paper's with ``--paper``."""
    return cli.parse(Args, argv, defaults=default_args(scheme, cli.given(argv, "--paper")), description=description)


# ----------------------------------------------------------------------------- one batch


# ----------------------------------------------------------------------------- the run


class Trainer:
    """Model, optimizer, EMA, data and counters of one supervised run, with checkpoint save and restore."""

    def __init__(self, args: Args, data: Split, ddp: Dist | None = None, device: str | None = None) -> None:
        self.args, self.cfg, self.tc, self.data, self.ddp = args, args.model, args.training, data, ddp or Dist()
        self.device = torch.device(device or args.device)
        self.model = TRM(self.cfg).to(self.device)
        self.opt = make_optimizer(self.tc, self.model)
        self.ema = EMA(self.model, self.tc.ema_decay) if self.tc.ema_decay > 0 else None
        self.gen = torch.Generator(device=self.device).manual_seed(args.seed + self.ddp.rank)
        self.state = {"batch": 0, "opt_step": 0, "train_forward_passes": 0, "wall_seconds": 0.0}
        self.pool_p = torch.as_tensor(data.train.puzzles, dtype=torch.long, device=self.device)
        self.pool_s = torch.as_tensor(data.train.solutions, dtype=torch.long, device=self.device)
        self.lineage = data.train_grids  # the grids this run and the runs before it trained on
        b = self.tc.batch_size // self.ddp.world  # batch_size is the global batch, split over ranks
        self.live = LiveBatch(self.model, b, self.device, self.tc.scheme == "dis") if self.tc.refill else None

    def payload(self) -> dict[str, Any]:
        return {
            "kind": self.tc.scheme,
            "config": self.cfg.to_dict(),
            "training": self.tc.to_dict(),
            "args": {**{k: getattr(self.args, k) for k in DATA_SETTINGS}, "init_from": start_path(self.args.init_from)},
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "data_generator": self.gen.get_state(),
            "rng": rng_state(),
            "state": dict(self.state),
            "train_grids": grids_tensor(self.lineage),
            "live_batch": self.live.state_dict() if self.live is not None else None,
        }

    def restore(self, ck: dict[str, Any]) -> None:
        self.lineage = lineage(self.data, ck)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(ck["ema"])
        self.gen.set_state(ck["data_generator"])  # rank 0's; the other ranks draw a fresh, distinct stream
        if self.ddp.rank:
            self.gen.manual_seed(self.args.seed + self.ddp.rank + 7919 * ck["state"]["batch"])
        set_rng_state(ck["rng"])
        self.state = ck["state"]
        if self.live is not None and ck.get("live_batch") is not None and not self.ddp.rank:
            self.live.load_state_dict(ck["live_batch"])  # rank 0's slots; other ranks start theirs afresh

    def start_from(self, ck: dict[str, Any]) -> None:
        """Fine-tuning: the weights of checkpoint ``ck`` (its averaged ones when it has them), the EMA
        restarted from them; optimizer, schedule and counters start fresh."""
        self.lineage = lineage(self.data, ck)
        self.model.load_state_dict(model_weights(ck))
        if self.ema is not None:
            self.ema = EMA(self.model, self.tc.ema_decay)

    def eval_model(self) -> TRM:
        return self.ema.model if self.ema is not None else self.model

    def draw(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``b`` puzzles and their solutions ``(b, 81)`` from the pool, each under a random symmetry (``--augment``)."""
        idx = torch.randint(len(self.pool_p), (b,), generator=self.gen, device=self.device)
        p, s = self.pool_p[idx], self.pool_s[idx]
        if self.args.augment:
            p, s = augmentation.apply(*augmentation.random_symmetry(b, self.gen, self.device), p, s)
        return p, s

    def batch(self, progress: float = 0.0) -> dict[str, Any]:
        """Train on one batch and update the counters (``progress``: see :func:`train.deep_supervision.lr_at`). A batch is a fresh
        draw through :func:`train_batch`, or with ``refill`` ``n_sup`` optimizer steps of :func:`train_refill`."""
        self.model.reset_counter()
        step = self.state["opt_step"]
        if self.live is not None:
            logs = train_refill(self.model, self.ema, self.opt, self.tc, self.live, self.draw, self.gen, step, self.cfg.n_sup,
                                self.ddp, self.args.amp, progress)
            started = logs["started"]
        else:
            p, s = self.draw(self.tc.batch_size // self.ddp.world)
            logs = train_batch(self.model, self.ema, self.opt, self.tc, p, s, self.gen, step, self.ddp, self.args.amp, progress)
            started = len(p)
        self.state["puzzles_seen"] = puzzles_seen(self) + int(self.ddp.sum(torch.tensor(started, device=self.device)))
        self.state["opt_step"] = logs["opt_step"]
        self.state["batch"] += 1
        self.state["train_forward_passes"] += int(self.ddp.sum(torch.tensor(self.model.net.sample_calls, device=self.device)))
        return logs

    def evaluate(self, limit: int = 0) -> dict[str, Any]:
        k = limit or len(self.data.eval_puzzles)
        return evaluate(self.eval_model(), self.data.eval_puzzles[:k], self.data.eval_solutions[:k], device=self.device)


def start_path(init_from: str) -> str:
    """``--init-from`` as an absolute path ("" for none): what a checkpoint records and a resume compares."""
    return os.path.abspath(init_from) if init_from else ""


def resume_checks(args: Args, ck: dict[str, Any], path: Any) -> None:
    """Refuse a ``--resume`` whose model or data settings differ from the checkpoint's, listing every difference."""
    model, training = configs_from_dict(ck["config"], ck.get("training"))
    diff = config_mismatch(model.to_dict(), args.model.to_dict()) + config_mismatch(training.to_dict(), args.training.to_dict())
    if "args" in ck:
        diff += config_mismatch({k: ck["args"][k] for k in DATA_SETTINGS}, {k: getattr(args, k) for k in DATA_SETTINGS})
        if "init_from" in ck["args"] and not same_start(ck["args"]["init_from"], args.init_from):
            saved = ck["args"]["init_from"] or "none"
            diff.append(f"--init-from: {saved} -> {start_path(args.init_from) or 'none'} (a resumed fine-tune names its "
                        "start as the first run did)")
    if diff:
        raise ValueError(f"--resume: {path} was trained with another config: " + "; ".join(diff))


def log_batch(writer: Any, tr: Trainer, logs: dict[str, Any]) -> None:
    g, cfg = tr.state["batch"], tr.tc
    writer.add_scalar("train/loss", np.mean(logs["loss"]), g)
    writer.add_scalar("train/lr", tr.opt.param_groups[0]["lr"], g)
    writer.add_scalar("train/forward_passes", tr.state["train_forward_passes"], g)
    writer.add_scalar("train/forward_passes_per_sample", tr.model.net.sample_calls / cfg.batch_size, g)
    if tr.cfg.halting:
        writer.add_scalar("train/q_loss", np.mean(logs["q_loss"]), g)
    for k, (acc, ex) in enumerate(zip(logs["cell_accuracy"], logs["exact"], strict=True), start=1):
        writer.add_scalar(f"train_step/cell_accuracy_s{k}", acc, g)
        writer.add_scalar(f"train_step/exact_s{k}", ex, g)


def log_eval(writer: Any, m: dict[str, Any], step: int) -> None:
    writer.add_scalar("eval/solve_rate", m["solve_rate"], step)
    writer.add_scalar("eval/cell_accuracy", m["cell_accuracy"], step)
    writer.add_scalar("eval/forward_passes_per_puzzle", m["forward_passes_per_puzzle"], step)
    for k, v in enumerate(m["solve_rate_per_step"], start=1):
        writer.add_scalar(f"eval_step/solve_rate_s{k}", v, step)


def puzzles_seen(tr: Trainer) -> int:
    """Training puzzles put in so far (a checkpoint from before the count: batches times the batch size)."""
    return int(tr.state.get("puzzles_seen", tr.state["batch"] * tr.tc.batch_size))


def curve_point(run: RunFolder, tr: Trainer, m: dict[str, Any]) -> None:
    """Log an evaluation and append it to the learning curve (``state["curve"]``, saved with checkpoints)."""
    log_eval(run.writer, m, tr.state["batch"])
    point = {k: tr.state[k] for k in ("batch", "wall_seconds", "train_forward_passes")}
    point.update(puzzles_seen=puzzles_seen(tr), solve_rate=m["solve_rate"], cell_accuracy=m["cell_accuracy"])
    curve = tr.state.setdefault("curve", [])
    if curve and curve[-1]["batch"] == point["batch"]:  # the end fell on an --eval-every point
        curve.pop()
    curve.append(point)


def schedule_progress(args: Args, state: dict[str, Any], budget: Budget) -> float:
    """Where the learning-rate schedule stands, in [0, 1]: over ``--forward-passes`` when given, else over
    ``--steps`` batches (both reproducible), else over the ``--minutes`` budget."""
    if args.forward_passes:
        return state["train_forward_passes"] / args.forward_passes
    return state["batch"] / args.steps if args.steps else budget.elapsed() / budget.seconds


def loop(run: RunFolder, tr: Trainer) -> None:
    """Batches until the budget, the step limit or a stop signal; checkpoints on the cadence."""
    args = tr.args
    budget = Budget(args.minutes, args.steps, tr.state["wall_seconds"], args.forward_passes)
    cadence = Cadence(args.checkpoint_every)
    desc, start = f"{tr.tc.scheme} training", tr.state["batch"]
    bar = tqdm(desc=desc, unit="batch", initial=start, total=args.steps, leave=False, disable=None)
    tr.model.train()
    lead = tr.ddp.rank == 0  # rank 0 keeps the clock (its curve evaluations pause it) and evaluates
    flat = False  # --plateau: the curve stopped rising
    while not all_stop(tr.ddp, (lead and (flat or budget.exhausted(tr.state["batch"], tr.state["train_forward_passes"])))
                       or run.stop_requested, str(tr.device)):
        progress = schedule_progress(args, tr.state, budget)
        logs = tr.batch(float(tr.ddp.max(torch.tensor(progress, device=tr.device))))
        tr.state["wall_seconds"] = budget.elapsed()
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(logs['loss']):.3f}", exact=f"{logs['exact'][-1]:.2f}")
        if tr.state["batch"] % args.log_every == 0:
            log_batch(run.writer, tr, logs)
        if lead and args.eval_every and tr.state["batch"] % args.eval_every == 0:
            with budget.paused():  # learning-curve points cost no training time
                curve_point(run, tr, tr.evaluate(args.eval_limit))
            flat = bool(args.plateau) and plateaued(tr.state["curve"], args.plateau)
            tr.state["plateaued"] = flat
        if cadence.due():
            run.save(tr.payload())
    bar.close()


def summary(tr: Trainer, metrics: dict[str, Any], interrupted: bool) -> dict[str, Any]:
    """``metrics.json``: the held-out measurements plus training counters."""
    st, cfg = tr.state, tr.tc
    return {
        **metrics,
        "scheme": cfg.scheme,
        "train_forward_passes": st["train_forward_passes"],
        "train_forward_passes_per_sample": st["train_forward_passes"] / max(1, puzzles_seen(tr)),
        "wall_seconds": st["wall_seconds"],
        "batches": st["batch"],
        "puzzles_seen": puzzles_seen(tr),
        "curve": st.get("curve", []),
        "optimizer_steps": st["opt_step"],
        "weights": "ema" if tr.ema is not None else "live",
        "data": tr.data.source,
        "config": tr.cfg.to_dict(),
        "training": cfg.to_dict(),
        "plateaued": bool(st.get("plateaued", False)),
        "interrupted": interrupted,
    }


def train(args: Args, exclude: np.ndarray | None = None) -> dict[str, Any]:
    """Train ``args.training.scheme`` as ``args`` say, evaluate on held-out puzzles, write ``metrics.json``.

    ``exclude``: grid hashes (:func:`envs.canonical.grid_hash`) the training pool must not
    hold besides the held-out set's, e.g. the held-out set of the RL run this warm-starts.
    The held-out set drops every puzzle whose grid an ``--init-from`` checkpoint trained on.
    Returns the metrics, with ``checkpoint`` (the path of the run's checkpoint) added. Raises
    ``ValueError`` / ``FileNotFoundError`` for bad settings before anything is written, and :class:`Diverged`
    when a loss is not finite (the last good checkpoint
    stays). A stop signal ends the run early: it saves and returns metrics marked
    ``interrupted``.
    """
    args.validate()
    scheme = args.training.scheme
    ddp = init_distributed(args.device)
    if args.training.batch_size % ddp.world:
        raise ValueError(f"--batch-size {args.training.batch_size} must divide evenly over {ddp.world} processes")
    with RunFolder(args.out, lead=ddp.rank == 0, fresh=args.overwrite) as run:
        resumed = load_checkpoint(run.checkpoint_path, kind=scheme) if args.resume else None
        if resumed is not None:
            resume_checks(args, resumed, run.checkpoint_path)
        seed_everything(args.seed + ddp.rank)
        data = split(args.difficulty, args.puzzles, seed=args.seed, pool_size=args.pool_size, eval_size=args.eval_size,
                     exclude=exclude)
        init = init_checks(args.init_from, args.model, scheme) if args.init_from and resumed is None else None
        if init is not None or (resumed is not None and args.init_from):  # a resumed fine-tune: the same held-out set
            data = without_trained(data, trained_grids(init if init is not None else resumed), "init_from")
        tr = Trainer(args, data, ddp, rank_device(args.device, ddp))
        if resumed is not None:
            tr.restore(resumed)
        elif init is not None:
            tr.start_from(init)
        info = run_info(tr.cfg.to_dict(), args.seed, str(tr.device))
        info["training"] = tr.tc.to_dict()
        info.update({"scheme": scheme, "data": data.source, "train_puzzles": len(data.train), "world_size": ddp.world})
        info["eval_puzzles"] = len(data.eval_puzzles)
        info["sets"] = data.record
        plain = {k: v for k, v in vars(args).items() if k not in ("model", "training")}
        run.write_run({**info, "args": plain}, resumed=resumed is not None)
        try:
            loop(run, tr)
        except Diverged as e:
            raise Diverged(f"{e}; training stopped, {run.kept()}") from None
        run.save(tr.payload())
        metrics = {}
        if run.lead:
            final = tr.evaluate(args.eval_limit)
            curve_point(run, tr, final)
            metrics = summary(tr, final, run.stop_requested)
            run.write_metrics(metrics)
            metrics["checkpoint"] = str(run.checkpoint_path)
    close(ddp)
    return metrics


def summary_line(m: dict[str, Any]) -> str:
    return (
        f"solve rate {m['solve_rate']:.1%}  cell accuracy {m['cell_accuracy']:.3f}  "
        f"forward passes/puzzle {m['forward_passes_per_puzzle']:.1f}  train forward passes {m['train_forward_passes']:,}  "
        f"wall {m['wall_seconds']:.0f}s"
    )


def main(scheme: str, description: str, argv: list[str] | None = None) -> None:
    """A trainer script's entry point: parse, :func:`train`; errors are one line on stderr, an interrupt exits 130."""
    args = parse_args(scheme, argv, description)
    try:
        m = train(args)
    except Diverged as e:
        raise SystemExit(f"error: {e}") from None
    except (ValueError, FileNotFoundError, RunFolderBusy) as e:
        cli.input_error(e)
    except OSError as e:  # a full disk (named by trm.checkpoint.atomic_write) or another system error
        raise SystemExit(f"error: {e}") from None
    if not m:  # a rank other than 0 of a multi-process run
        return
    print(f"{scheme}: {summary_line(m)}")
    if m["interrupted"]:
        raise SystemExit(130)

