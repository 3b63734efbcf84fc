"""One batch of deep supervision: the learning-rate schedule, the optimizer, the step's loss and update.

A batch of ``B`` puzzles goes through ``n_sup`` supervision steps; after each: loss on the
conditional readout (towards the solution, or DIS's target ``y†_s`` of :mod:`trm.targets`),
the Q head's BCE when the model halts, an optimizer step, an EMA update, and the state
``(y, z)`` carried on detached. :func:`train_batch` is that batch; the TRM code's carry
(:func:`train.refill.train_refill`) and expert iteration's replay batches use the same parts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from train.distributed import Dist
from train.run_folder import check_finite
from trm.adam_atan2 import AdamAtan2
from trm.carry import Carry
from trm.config import TrainConfig, TRMConfig
from trm.ema import EMA
from trm.losses import stablemax_cross_entropy
from trm.model import TRM
from trm.targets import PATHS


def lr_at(cfg: TrainConfig, opt_step: int, progress: float = 0.0) -> float:
    """Linear warm-up over ``warmup_steps`` optimizer steps, then a cosine from ``lr`` down to
    ``lr * lr_min_ratio`` over the run (``progress`` in [0, 1]; ``lr_min_ratio = 1``: constant, the TRM code's setting):

    ``lr_t = lr * min(1, (t + 1) / warmup) * (r + (1 - r) (1 + cos(pi * progress)) / 2)``.
    """
    decay = cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return cfg.lr * min(1.0, (opt_step + 1) / max(1, cfg.warmup_steps)) * decay


def make_optimizer(cfg: TrainConfig, model: TRM) -> torch.optim.Optimizer:
    """AdamW (the DIS code) or Adam-atan2 (the TRM code), both with decoupled weight decay."""
    params, betas = [p for p in model.parameters() if p.requires_grad], (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adam_atan2":
        return AdamAtan2(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)


def step_weight(cfg: TrainConfig, s: int | torch.Tensor, n_sup: int) -> float | torch.Tensor:
    """Weight of supervision step ``s`` (1-based, or a tensor of them): 1, or ``2 s / (n_sup + 1)`` (mean 1) when increasing."""
    return 1.0 if cfg.step_weights == "uniform" else 2.0 * s / (n_sup + 1)


def optimizer_step(
    model: TRM, opt: torch.optim.Optimizer, ema: EMA | None, loss: torch.Tensor | None, cfg: TrainConfig, ddp: Dist | None = None
) -> None:
    """Backward (``loss=None``: no gradient from this rank), the gradient mean over ranks, optional
    gradient-norm clipping, one optimizer step and the EMA update."""
    opt.zero_grad(set_to_none=True)
    if loss is not None:
        loss.backward()
    if ddp is not None:
        ddp.average_gradients(model)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    if ema is not None:
        ema.update(model)


def halt_exploration(cfg: TrainConfig, n_sup: int, b: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Minimum steps per sample ``(b,)``: ``U{2..n_sup}`` with probability ``halt_exploration``, else 0.

    As in the TRM code, a sample may halt at step ``s`` only once ``s >= min_steps``, so the Q
    head also sees (and learns the value of) steps it would have skipped.
    """
    explore = torch.rand(b, generator=gen, device=device) < cfg.halt_exploration
    steps = torch.randint(2, max(n_sup, 2) + 1, (b,), generator=gen, device=device)
    return torch.where(explore, steps, 0)


def with_halting_loss(mc: TRMConfig, cfg: TrainConfig, out: Any, loss: torch.Tensor, solution: torch.Tensor,
                      blank: torch.Tensor, logs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's loss plus, with halting, ``q_loss_weight`` times the Q head's BCE on "the decoded answer
    ``(R, 81)`` is exactly right"; appends the step's loss, Q loss, cell accuracy on ``blank``, exact rate and
    rows to ``logs``. Returns the loss and the decoded answer."""
    pred = out.logits.detach().argmax(-1)
    exact = (pred == solution).all(-1)
    q_loss = torch.zeros((), device=solution.device)
    if mc.halting:
        q_loss = F.binary_cross_entropy_with_logits(out.q.float(), exact.float())
        loss = loss + cfg.q_loss_weight * q_loss
    logs["loss"].append(loss.item())
    logs["q_loss"].append(q_loss.item())
    logs["cell_accuracy"].append(float(((pred == solution) & blank).sum() / blank.sum().clamp(min=1)))
    logs["exact"].append(float(exact.float().mean()))
    logs["samples"].append(int(pred.shape[0]))
    return loss, pred


def train_batch(
    model: TRM,
    ema: EMA | None,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    puzzle: torch.Tensor,
    solution: torch.Tensor,
    gen: torch.Generator,
    opt_step: int,
    ddp: Dist | None = None,
    amp: bool = False,
    progress: float = 0.0,
) -> dict[str, Any]:
    """Deep supervision over one batch ``(B, 81)``: up to ``n_sup`` optimizer steps. Returns logs.

    After each step: loss on the conditional readout ``l_c`` (stable-max cross-entropy towards
    the solution, or DIS's target ``y†_s``; TRM's Q head with BCE on "the decoded answer is
    exactly right"), an optimizer step, the EMA update, and ``(y, z)`` carried on detached
    (:class:`trm.carry.Carry`). With several processes (``ddp``) each rank trains its own ``B``
    puzzles and gradients are averaged before every step; a rank whose samples have all halted
    contributes zeros until every rank's have. ``amp``: bfloat16 autocast of the forward pass.
    ``progress``: the fraction of the run done, for the learning-rate schedule (:func:`lr_at`).
    """
    ddp, mc = ddp or Dist(), model.cfg
    b = puzzle.shape[0]
    targets = PATHS[cfg.dis_path](puzzle, solution, mc.n_sup, gen) if cfg.scheme == "dis" else None
    min_steps = halt_exploration(cfg, mc.n_sup, b, gen, puzzle.device) if mc.halting else None
    carry = Carry(model, b)
    answer, alive, blank = torch.zeros_like(puzzle), torch.arange(b, device=puzzle.device), puzzle == 0
    tokens = model.input_tokens(puzzle, answer)
    logs: dict[str, Any] = {"loss": [], "cell_accuracy": [], "exact": [], "q_loss": [], "samples": []}
    autocast = torch.autocast(puzzle.device.type, dtype=torch.bfloat16, enabled=amp)
    for s in range(1, mc.n_sup + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, opt_step, progress)
        if alive.numel() == 0:  # this rank is done, others are not: step with them on zero gradients
            optimizer_step(model, opt, ema, None, cfg, ddp)
            opt_step += 1
            continue
        with autocast:
            out = carry.step(model, tokens[alive], alive, s)
        target = targets[s - 1][alive] if targets is not None else solution[alive]
        loss = step_weight(cfg, s, mc.n_sup) * stablemax_cross_entropy(out.logits, target)
        loss, pred = with_halting_loss(mc, cfg, out, loss, solution[alive], blank[alive], logs)
        check_finite(loss, f"at supervision step {s} of optimizer step {opt_step}")
        optimizer_step(model, opt, ema, loss, cfg, ddp)
        opt_step += 1
        answer[alive] = pred
        tokens = model.input_tokens(puzzle, answer)
        if mc.halting:
            alive = alive[(out.q.detach() <= 0) | (s < min_steps[alive])]
            if ddp.max(torch.tensor(alive.numel(), device=puzzle.device)).item() == 0:
                break
    logs["opt_step"] = opt_step
    return logs
