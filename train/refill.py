"""The TRM code's training carry: a batch of ``B`` puzzles that stays full.

Without it (:func:`train.deep_supervision.train_batch`) a batch runs up to ``n_sup`` supervision steps
and a sample that halts leaves it, so late steps train on fewer samples, and the next batch
starts only when every sample has halted. With it, every optimizer step trains on ``B``
samples: each slot holds one puzzle at its own step ``s_i``, and a slot whose puzzle halted
(its Q head said halt after its exploration minimum, or it reached ``n_sup``) takes a new
puzzle at ``s_i = 1`` with the model's initial latents before the next step::

    live = LiveBatch(model, b, device)
    rows = live.done()                                   # slots to refill (all at first)
    live.refill(rows, puzzle, solution, min_steps, targets)
    s = live.advance()                                   # (B,) step index of every slot
    ...  one supervision step on all B slots, loss, optimizer step ...
    live.record(pred, halted)                            # the answer written, and which slots end

The latents are :class:`trm.carry.Carry`'s; the state (puzzles, answers, steps, latents,
DIS targets) is saved with the run's checkpoints so a ``--resume`` continues mid-puzzle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from train.deep_supervision import halt_exploration, lr_at, optimizer_step, step_weight, with_halting_loss
from train.distributed import Dist
from train.run_folder import check_finite
from trm.carry import Carry
from trm.config import TrainConfig
from trm.ema import EMA
from trm.losses import stablemax_cross_entropy
from trm.model import TRM
from trm.targets import PATHS

FIELDS = ("puzzle", "solution", "answer", "steps", "min_steps", "finished")


class LiveBatch:
    """``B`` training slots: puzzle, solution, answer ``(B, 81)``, steps taken and exploration minimum ``(B,)``,
    DIS targets ``(n_sup, B, 81)`` (or None) and the latents ``(y, z)``."""

    def __init__(self, model: TRM, b: int, device: torch.device, with_targets: bool = False) -> None:
        self.model, self.n_sup = model, model.cfg.n_sup
        z = torch.zeros(b, model.cfg.seq_len, dtype=torch.long, device=device)
        self.puzzle, self.solution, self.answer = z.clone(), z.clone(), z.clone()
        self.steps = torch.zeros(b, dtype=torch.long, device=device)
        self.min_steps = torch.zeros(b, dtype=torch.long, device=device)
        self.finished = torch.ones(b, dtype=torch.bool, device=device)  # every slot wants a puzzle
        self.targets = torch.zeros(self.n_sup, b, model.cfg.seq_len, dtype=torch.long, device=device) if with_targets else None
        self.carry = Carry(model, b)

    def __len__(self) -> int:
        return self.puzzle.shape[0]

    def done(self) -> torch.Tensor:
        """Indices ``(R,)`` of the slots whose puzzle has ended (to refill before the next step)."""
        return self.finished.nonzero().flatten()

    def refill(self, rows: torch.Tensor, puzzle: torch.Tensor, solution: torch.Tensor, min_steps: torch.Tensor,
               targets: torch.Tensor | None = None) -> None:
        """New puzzles ``(R, 81)`` with their solutions, exploration minima ``(R,)`` and DIS targets
        ``(n_sup, R, 81)`` in slots ``rows``: blank answer, step 0, initial latents."""
        self.puzzle[rows], self.solution[rows], self.answer[rows] = puzzle, solution, 0
        self.steps[rows], self.min_steps[rows], self.finished[rows] = 0, min_steps, False
        if self.targets is not None and targets is not None:
            self.targets[:, rows] = targets
        self.carry.reset(self.model, rows)

    def advance(self) -> torch.Tensor:
        """Count the step about to run: returns every slot's 1-based step index ``(B,)``."""
        self.steps += 1
        return self.steps

    def target(self) -> torch.Tensor:
        """Each slot's target for its current step ``(B, 81)``: DIS's ``y†_{s_i}``, or the solution."""
        if self.targets is None:
            return self.solution
        return self.targets[self.steps - 1, torch.arange(len(self), device=self.steps.device)]

    def record(self, pred: torch.Tensor, halted: torch.Tensor) -> None:
        """After a step: the answers ``(B, 81)`` written; slots that halted, or reached ``n_sup``, end."""
        self.answer = pred
        self.finished = halted | (self.steps >= self.n_sup)

    def state_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in FIELDS}
        return {**d, "targets": self.targets, "carry": self.carry.state_dict()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a saved state; refused (``ValueError``) when its batch size differs from this one's."""
        if d["puzzle"].shape != self.puzzle.shape:
            raise ValueError(f"the saved training batch has shape {tuple(d['puzzle'].shape)}, not {tuple(self.puzzle.shape)}")
        for k in FIELDS:
            setattr(self, k, d[k].to(self.puzzle.device))
        if self.targets is not None and d["targets"] is not None:
            self.targets = d["targets"].to(self.puzzle.device)
        self.carry.load_state_dict({k: v.to(self.puzzle.device) if torch.is_tensor(v) else v for k, v in d["carry"].items()})


def train_refill(
    model: TRM,
    ema: EMA | None,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    live: LiveBatch,
    draw: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    gen: torch.Generator,
    opt_step: int,
    n_steps: int,
    ddp: Dist | None = None,
    amp: bool = False,
    progress: float = 0.0,
) -> dict[str, Any]:
    """``n_steps`` optimizer steps with the TRM code's carry (``cfg.refill``, :mod:`train.refill`). Returns logs.

    Before each step every ended slot of ``live`` takes a new puzzle from ``draw(R) -> (puzzle, solution)``,
    each ``(R, 81)``; then one supervision step runs on all ``B`` slots, each at its own step
    index ``s_i``, with the loss of :func:`train_batch` (slot ``i`` weighted by ``w(s_i)``).
    A slot ends when its Q head says halt (once ``s_i`` reaches its exploration minimum) or at
    ``s_i = n_sup``. ``logs["started"]`` counts the puzzles put in.
    """
    ddp, mc, device = ddp or Dist(), model.cfg, live.puzzle.device
    logs: dict[str, Any] = {"loss": [], "cell_accuracy": [], "exact": [], "q_loss": [], "samples": [], "started": 0}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    every = torch.arange(len(live), device=device)
    for _ in range(n_steps):
        rows = live.done()
        if rows.numel():
            p, sol = draw(int(rows.numel()))
            minimum = halt_exploration(cfg, mc.n_sup, len(rows), gen, device) if mc.halting else torch.zeros_like(rows)
            targets = PATHS[cfg.dis_path](p, sol, mc.n_sup, gen) if cfg.scheme == "dis" else None
            live.refill(rows, p, sol, minimum, targets)
            logs["started"] += int(rows.numel())
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, opt_step, progress)
        s = live.advance()
        with autocast:
            out = live.carry.step(model, model.input_tokens(live.puzzle, live.answer), every, s.clone())
        w = step_weight(cfg, s.float(), mc.n_sup)  # 1, or (B,) per slot
        loss = stablemax_cross_entropy(out.logits, live.target(), w[:, None] if torch.is_tensor(w) else None)
        loss, pred = with_halting_loss(mc, cfg, out, loss, live.solution, live.puzzle == 0, logs)
        check_finite(loss, f"at optimizer step {opt_step}")
        optimizer_step(model, opt, ema, loss, cfg, ddp)
        opt_step += 1
        never = torch.zeros(len(live), dtype=torch.bool, device=device)
        halted = (out.q.detach() > 0) & (s >= live.min_steps) if mc.halting else never
        live.record(pred, halted)
    logs["opt_step"] = opt_step
    return logs
