"""Supervised training of the Tiny Recursive Model: TRM deep supervision or DIS.

Shared by ``train/trm.py`` and ``train/dis.py``. One batch of puzzles goes through
``n_sup`` supervision steps; after each: loss on the conditional readout, an optimizer
step, an EMA update, and the state ``(y, z)`` carried on detached.

* ``scheme="trm"``: every step is trained on the solution (stable-max cross-entropy)
  and the Q head with BCE on "the decoded answer is exactly right"; with ``halting``
  a sample leaves the batch once its Q head says halt.
* ``scheme="dis"``: step ``s`` is trained on its own target ``y†_s`` from
  :mod:`trm.targets` (weights uniform or increasing), no halting head.

Data comes from the environment's puzzle pool (a generated tier or a file) with
on-device augmentation. Run folder: see :mod:`train.run`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from envs import augmentation, sudoku
from envs.puzzle_pool import make_pool
from train.evaluate import evaluate
from train.run import (
    atomic_write_json,
    config_mismatch,
    load_checkpoint,
    rng_state,
    run_info,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from trm.config import TRMConfig
from trm.ema import EMA
from trm.losses import stablemax_cross_entropy
from trm.model import TRM
from trm.targets import PATHS

CHECKPOINT = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- CLI


def build_parser(scheme: str, description: str) -> argparse.ArgumentParser:
    """The script contract of DESIGN section 4 plus every :class:`TRMConfig` field as a flag."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=f"runs/{scheme}", help="run folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many batches (default: only --minutes)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ap.add_argument("--difficulty", default="easy", choices=sorted(sudoku.TIERS))
    ap.add_argument("--puzzles", default=None, help="puzzle file (held-out set: its last --eval-size puzzles)")
    ap.add_argument("--pool-size", type=int, default=4096, help="generated training puzzles")
    ap.add_argument("--eval-size", type=int, default=500, help="held-out puzzles")
    ap.add_argument("--no-augment", dest="augment", action="store_false", help="turn augmentation off")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate every N batches (0: only at the end)")
    ap.add_argument("--checkpoint-every", type=float, default=1.0, help="minutes between checkpoints")
    ap.add_argument("--log-every", type=int, default=10, help="batches between TensorBoard points")
    if scheme == "trm":
        ap.add_argument("--paper", action="store_true", help="the paper's Sudoku settings (D=512, N_sup=16, T=3, n=6)")
    base = {"dis": TRMConfig.dis, "onepass": TRMConfig.onepass}.get(scheme, TRMConfig)()
    for f in fields(TRMConfig):
        if f.name in ("scheme", "seq_len", "vocab"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(base, f.name)
        if isinstance(default, bool):
            ap.add_argument(flag, type=_bool, default=None, metavar="{true,false}", help=f"(default {default})")
        else:
            ap.add_argument(flag, type=type(default), default=None, help=f"(default {default})")
    return ap


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def config_from_args(scheme: str, args: argparse.Namespace) -> TRMConfig:
    overrides = {f.name: getattr(args, f.name) for f in fields(TRMConfig) if getattr(args, f.name, None) is not None}
    if scheme == "dis":
        return TRMConfig.dis(**overrides)
    if scheme == "onepass":
        return TRMConfig.onepass(**overrides)
    if getattr(args, "paper", False):
        return TRMConfig.paper_sudoku(**overrides)
    return TRMConfig(**overrides)


# ----------------------------------------------------------------------------- data


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Training pool and held-out set: ``train_p, train_s, eval_p, eval_s, description``."""
    if args.puzzles:
        pool = make_pool(None, args.puzzles, need_solutions=True, pool_size=0, pool_seed=0)
        if len(pool) <= args.eval_size:
            raise ValueError(f"{args.puzzles} holds {len(pool)} puzzles, not more than --eval-size {args.eval_size}")
        k = len(pool) - args.eval_size
        return pool.puzzles[:k], pool.solutions[:k], pool.puzzles[k:], pool.solutions[k:], pool.source
    train_p, train_s = sudoku.generate(args.pool_size, args.difficulty, seed=args.seed)
    eval_p, eval_s = sudoku.generate(args.eval_size, args.difficulty, seed=args.seed + 1_000_003)
    seen = set(map(bytes, train_p))
    keep = np.array([bytes(p) not in seen for p in eval_p])
    return train_p, train_s, eval_p[keep], eval_s[keep], f"generated:{args.difficulty}"


# ----------------------------------------------------------------------------- training


def lr_at(cfg: TRMConfig, opt_step: int) -> float:
    """Linear warm-up over ``warmup_steps`` optimizer steps, then constant."""
    return cfg.lr * min(1.0, (opt_step + 1) / max(1, cfg.warmup_steps))


def make_optimizer(cfg: TRMConfig, model: TRM) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)


def step_weight(cfg: TRMConfig, s: int) -> float:
    """Weight of supervision step ``s`` (1-based): 1, or ``2 s / (n_sup + 1)`` (mean 1) when increasing."""
    return 1.0 if cfg.step_weights == "uniform" else 2.0 * s / (cfg.n_sup + 1)


def train_batch(
    model: TRM,
    ema: EMA | None,
    opt: torch.optim.Optimizer,
    cfg: TRMConfig,
    puzzle: torch.Tensor,
    solution: torch.Tensor,
    gen: torch.Generator,
    opt_step: int,
) -> dict[str, Any]:
    """Deep supervision over one batch ``(B, 81)``: ``n_sup`` optimizer steps. Returns logs."""
    b = puzzle.shape[0]
    targets = PATHS[cfg.dis_path](puzzle, solution, cfg.n_sup, gen) if cfg.scheme == "dis" else None
    y, z = model.initial_state(b)  # learned, so the first step trains them too
    tokens = puzzle
    alive = torch.arange(b, device=puzzle.device)
    blank = puzzle == 0
    logs: dict[str, Any] = {"loss": [], "cell_accuracy": [], "exact": [], "q_loss": [], "samples": []}
    for s in range(1, cfg.n_sup + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, opt_step)
        out = model.step(tokens[alive], y[alive], z[alive], step=s if cfg.step_embedding else None)
        target = targets[s - 1][alive] if targets is not None else solution[alive]
        loss = step_weight(cfg, s) * stablemax_cross_entropy(out.logits, target)
        pred = out.logits.detach().argmax(-1)
        exact = (pred == solution[alive]).all(-1)
        q_loss = torch.zeros((), device=puzzle.device)
        if cfg.halting:
            q_loss = F.binary_cross_entropy_with_logits(out.q, exact.float())
            loss = loss + q_loss
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at supervision step {s} of optimizer step {opt_step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt_step += 1
        if ema is not None:
            ema.update(model)
        bl = blank[alive]
        logs["loss"].append(loss.item())
        logs["q_loss"].append(q_loss.item())
        logs["cell_accuracy"].append(float(((pred == solution[alive]) & bl).sum() / bl.sum().clamp(min=1)))
        logs["exact"].append(float(exact.float().mean()))
        logs["samples"].append(int(alive.numel()))
        if s == 1:
            y, z = out.y.clone(), out.z.clone()  # detached buffers carried from here on
        else:
            y[alive], z[alive] = out.y, out.z
        if cfg.input_mode == "previous_answer":
            tokens = tokens.clone()
            tokens[alive] = torch.where(puzzle[alive] > 0, puzzle[alive], pred)
        if cfg.halting:
            alive = alive[out.q.detach() <= 0]
            if alive.numel() == 0:
                break
    logs["opt_step"] = opt_step
    return logs


def train(scheme: str, argv: list[str] | None = None, description: str = "") -> dict[str, Any]:
    """Parse ``argv``, train, evaluate on held-out puzzles, write ``metrics.json``; returns the metrics."""
    args = build_parser(scheme, description).parse_args(argv)
    cfg = config_from_args(scheme, args)
    out = Path(args.out)
    ckpt_path = out / CHECKPOINT
    device = torch.device(args.device)
    if args.resume and not ckpt_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
    resumed = load_checkpoint(ckpt_path, kind=scheme) if args.resume else None
    if resumed is not None:
        diff = config_mismatch(resumed["config"], cfg.to_dict())
        if diff:
            raise ValueError(f"--resume: {ckpt_path} was trained with another config: " + "; ".join(diff))
    out.mkdir(parents=True, exist_ok=True)

    seed_everything(args.seed)
    train_p, train_s, eval_p, eval_s, source = load_data(args)
    model = TRM(cfg).to(device)
    opt = make_optimizer(cfg, model)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    gen = torch.Generator(device=device).manual_seed(args.seed)
    state = {"batch": 0, "opt_step": 0, "train_forward_passes": 0, "wall_seconds": 0.0}
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        if ema is not None:
            ema.load_state_dict(resumed["ema"])
        gen.set_state(resumed["data_generator"].to(gen.device) if device.type == "cpu" else resumed["data_generator"])
        set_rng_state(resumed["rng"])
        state = resumed["state"]
    info = run_info(cfg.to_dict(), args.seed, str(device))
    info.update(
        {"scheme": scheme, "data": source, "train_puzzles": len(train_p), "eval_puzzles": len(eval_p), "args": vars(args)}
    )
    atomic_write_json(out / "run.json", info)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))
    pool_p = torch.as_tensor(train_p, dtype=torch.long, device=device)
    pool_s = torch.as_tensor(train_s, dtype=torch.long, device=device)

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "kind": scheme,
                "config": cfg.to_dict(),
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": opt.state_dict(),
                "data_generator": gen.get_state(),
                "rng": rng_state(),
                "state": dict(state),
            },
        )

    t_start = time.perf_counter() - state["wall_seconds"]
    last_ckpt = time.perf_counter()
    budget = args.minutes * 60
    bar = tqdm(desc=f"{scheme} training", unit="batch", initial=state["batch"], total=args.steps, leave=False, disable=None)
    model.train()
    while True:
        elapsed = time.perf_counter() - t_start
        if (args.steps is not None and state["batch"] >= args.steps) or elapsed >= budget:
            break
        idx = torch.randint(len(pool_p), (cfg.batch_size,), generator=gen, device=device)
        p, s = pool_p[idx], pool_s[idx]
        if args.augment:
            p, s = augmentation.apply(*augmentation.random_symmetry(cfg.batch_size, gen, device), p, s)
        model.reset_counter()
        try:
            logs = train_batch(model, ema, opt, cfg, p, s, gen, state["opt_step"])
        except TrainingDiverged as e:
            writer.close()
            bar.close()
            kept = f"the last good checkpoint {ckpt_path} is kept" if ckpt_path.is_file() else "no checkpoint was written yet"
            raise TrainingDiverged(f"{e}; training stopped, {kept}") from None
        state["opt_step"] = logs["opt_step"]
        state["batch"] += 1
        state["train_forward_passes"] += model.net.sample_calls
        state["wall_seconds"] = time.perf_counter() - t_start
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(logs['loss']):.3f}", exact=f"{logs['exact'][-1]:.2f}")
        if state["batch"] % args.log_every == 0:
            g = state["batch"]
            writer.add_scalar("train/loss", np.mean(logs["loss"]), g)
            writer.add_scalar("train/lr", lr_at(cfg, state["opt_step"]), g)
            writer.add_scalar("train/forward_passes", state["train_forward_passes"], g)
            writer.add_scalar("train/forward_passes_per_sample", model.net.sample_calls / cfg.batch_size, g)
            if cfg.halting:
                writer.add_scalar("train/q_loss", np.mean(logs["q_loss"]), g)
            for k, (acc, ex) in enumerate(zip(logs["cell_accuracy"], logs["exact"], strict=True), start=1):
                writer.add_scalar(f"train_step/cell_accuracy_s{k}", acc, g)
                writer.add_scalar(f"train_step/exact_s{k}", ex, g)
        if args.eval_every and state["batch"] % args.eval_every == 0:
            _log_eval(writer, evaluate(_eval_model(model, ema), eval_p, eval_s, device=device), state["batch"])
        if time.perf_counter() - last_ckpt > args.checkpoint_every * 60:
            checkpoint()
            last_ckpt = time.perf_counter()
    bar.close()
    checkpoint()
    metrics = evaluate(_eval_model(model, ema), eval_p, eval_s, device=device)
    _log_eval(writer, metrics, state["batch"])
    writer.close()
    metrics.update(
        {
            "scheme": scheme,
            "train_forward_passes": state["train_forward_passes"],
            "train_forward_passes_per_sample": state["train_forward_passes"] / max(1, state["batch"] * cfg.batch_size),
            "wall_seconds": state["wall_seconds"],
            "batches": state["batch"],
            "optimizer_steps": state["opt_step"],
            "weights": "ema" if ema is not None else "live",
            "data": source,
            "config": cfg.to_dict(),
        }
    )
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _eval_model(model: TRM, ema: EMA | None) -> TRM:
    return ema.model if ema is not None else model


def _log_eval(writer: Any, m: dict[str, Any], step: int) -> None:
    writer.add_scalar("eval/solve_rate", m["solve_rate"], step)
    writer.add_scalar("eval/cell_accuracy", m["cell_accuracy"], step)
    writer.add_scalar("eval/forward_passes_per_puzzle", m["forward_passes_per_puzzle"], step)
    for k, v in enumerate(m["solve_rate_per_step"], start=1):
        writer.add_scalar(f"eval_step/solve_rate_s{k}", v, step)


def summary_line(m: dict[str, Any]) -> str:
    return (
        f"solve rate {m['solve_rate']:.1%}  cell accuracy {m['cell_accuracy']:.3f}  "
        f"forward passes/puzzle {m['forward_passes_per_puzzle']:.1f}  train forward passes {m['train_forward_passes']:,}  "
        f"wall {m['wall_seconds']:.0f}s"
    )


def main(scheme: str, description: str, argv: list[str] | None = None) -> None:
    try:
        m = train(scheme, argv, description)
    except (ValueError, FileNotFoundError, TrainingDiverged) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{scheme}: {summary_line(m)}")


if __name__ == "__main__":
    raise SystemExit("run train/trm.py or train/dis.py")
