"""The PPO-style update over one rollout: the clipped ratio (``ppo``, ``group``) or policy improvement (``pi``).

* ``ppo``: ``min(r A, clip(r, 1 - eps, 1 + eps) A)`` on normalised GAE advantages, an entropy
  bonus and a value loss; the approximate KL ``E[(r - 1) - log r]`` is monitored, epochs
  stop early above ``target_kl`` and the run stops (keeping its last checkpoint) above ``abort_kl``;
* ``group``: the clipped ratio with group-relative advantages (:func:`train.rl.advantages.group_advantages`)
  instead of the value heads;
* ``pi``: policy improvement ``pi_new ∝ pi_ref exp(A / beta)`` (CFGRL-style), fitted by
  advantage-weighted maximum likelihood ``-E[w log pi(a | s)]``, ``w = exp(A / beta)``
  normalised to mean 1 and capped at ``max_weight``; ``pi_ref`` is the readout that sampled the rollout.

Every loss is normalised by global counts, so with several processes an update equals
the single-process update on the same global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from agents.recursion_policy import PolicySettings, cell_log_probs, factored_log_probs
from train.distributed import Dist
from train.rl.advantages import Advantages
from train.run_folder import Diverged, check_finite


@dataclass
class UpdateSettings:
    """The objective and its optimisation over one rollout."""

    objective: Literal["ppo", "pi", "group", "expert"] = "ppo"  # PPO, policy improvement, group-relative PPO, or expert
    # iteration with the verified search (train/expert_iteration.py's run; --expert-search, --replay-size, --replay-batches)
    epochs: int = 2  # passes over each rollout
    minibatches: int = 4  # minibatches per epoch
    grad_clip: float = 1.0  # gradient-norm clip per minibatch (0: off)
    clip: float = 0.2  # PPO's ratio clip epsilon
    ent_coef: float = 1e-3  # entropy bonus
    vf_coef: float = 0.5  # value-loss weight
    target_kl: float = 0.05  # stop an update's epochs once the approximate KL exceeds this
    abort_kl: float = 2.0  # stop the run (keeping the last checkpoint) above this KL
    beta: float = 0.5  # temperature of the pi objective
    max_weight: float = 20.0  # cap of the pi objective's normalised weights

    def __post_init__(self) -> None:
        for name in ("epochs", "minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("grad_clip", "clip", "ent_coef", "vf_coef", "target_kl", "abort_kl", "beta", "max_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
        if self.beta <= 0:
            raise ValueError(f"--beta must be above 0, got {self.beta}")

    @property
    def grouped(self) -> bool:
        """Whether the baseline is the group (the value heads are then not trained)."""
        return self.objective == "group"


def clipped(ratio: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's per-sample loss ``-min(r A, clip(r, 1 - eps, 1 + eps) A)``."""
    return -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, adv_n: torch.Tensor, s: UpdateSettings, ddp: Dist,
    n_mb: torch.Tensor,
) -> torch.Tensor:
    """Per-sample policy loss of one minibatch under joint credit.

    ``ppo`` and ``group``: :func:`clipped` on normalised advantages.
    ``pi``: ``-w log pi`` with ``w = exp(A / beta)`` normalised to mean 1 over the global
    minibatch (the maximum subtracted is the global one, so every rank uses the same
    scale) and capped at ``max_weight``.
    """
    if s.objective in ("ppo", "group"):
        return clipped((logp - old_logp).exp(), adv_n, s.clip)
    raw = adv / s.beta
    top = raw.max().detach() if raw.numel() else torch.tensor(-math.inf, device=raw.device)
    w = torch.exp(raw - ddp.max(top))
    w = (w / (ddp.sum(w.sum()) / n_mb).clamp(min=1e-12)).clamp(max=s.max_weight).detach()
    return -w * logp


def minibatch_loss(
    policy: nn.Module, buf: dict, at: tuple, adv: Advantages, s: UpdateSettings, ps: PolicySettings, ddp: Dist,
    n_mb: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample loss (policy + value - entropy bonus) on the samples ``at = (t_idx, e_idx)``, and its parts."""
    t_idx = at[0]
    out = policy(buf["tokens"][at], buf["y"][at], buf["z"][at], (t_idx + 1).float())
    blank = buf["blank"][at]
    f = factored_log_probs(cell_log_probs(out.logits, ps.policy_dist, ps.temperature), out.q, buf["cells"][at],
                           buf["halt"][at], blank)
    logp = f.cell_logp.sum(-1) + f.halt_logp
    # the group is the baseline of --objective group: the value heads are not trained there
    v_loss = torch.zeros_like(logp) if s.grouped else 0.5 * (out.value - adv.step_ret[at]) ** 2
    if adv.cell is None:
        pg = policy_loss(logp, buf["logp"][at], adv.step[at], adv.step_n[at], s, ddp, n_mb)
    else:
        cell_ratio = (f.cell_logp - buf["cell_logp"][at]).exp()
        pg = (clipped(cell_ratio, adv.cell_n[at], s.clip) * blank).sum(-1)
        pg = pg + clipped((f.halt_logp - buf["halt_logp"][at]).exp(), adv.step_n[at], s.clip)
        bl = blank.float()
        if not s.grouped:
            v_loss = v_loss + 0.5 * (((out.cell_value - adv.cell_ret[at]) ** 2) * bl).sum(-1) / bl.sum(-1).clamp(min=1)
    ent = f.cell_entropy + f.halt_entropy
    per_sample = pg + s.vf_coef * v_loss - s.ent_coef * ent
    return per_sample, {"log_ratio": logp - buf["logp"][at], "value_loss": v_loss, "entropy_per_blank": f.cell_entropy}


def minibatch_groups(n_global: int, minibatches: int, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Minibatch index ``(n_local,)`` of this process's environments ``rows``: a permutation of the global
    indices drawn from ``generator`` (the same on every rank), so each minibatch is the same set of
    episodes whatever the number of processes."""
    perm_group = torch.empty(n_global, dtype=torch.long)
    perm_group[torch.randperm(n_global, generator=generator)] = torch.arange(n_global) % minibatches
    return perm_group.to(rows.device)[rows]


def update(
    policy: nn.Module,
    opt: torch.optim.Optimizer,
    buf: dict[str, torch.Tensor],
    adv: Advantages,
    s: UpdateSettings,
    ps: PolicySettings,
    ddp: Dist,
    generator: torch.Generator,
    rows: torch.Tensor | None = None,
) -> dict[str, float]:
    """``s.epochs`` passes of ``s.minibatches`` minibatches over one rollout ``buf`` with advantages ``adv``.

    ``rows`` are the global indices of this process's environments (default ``0..N-1``).
    Returns the update's statistics; raises :class:`Diverged` when the KL passes ``abort_kl``.
    """
    valid = buf["valid"]
    dev, n_local = valid.device, valid.shape[1]
    rows = torch.arange(n_local, device=dev) if rows is None else rows
    count = ddp.sum(valid.sum().float())
    n_global = int(ddp.sum(torch.tensor(float(n_local), device=dev)).item())
    stats = {"approx_kl": 0.0, "clip_frac": 0.0, "loss": 0.0, "value_loss": 0.0, "entropy_per_blank": 0.0, "epochs": 0}
    module = policy.module if hasattr(policy, "module") else policy
    for _ in range(s.epochs):
        group = minibatch_groups(n_global, s.minibatches, rows, generator)
        kl_sum = torch.zeros((), device=dev)
        for g in range(s.minibatches):
            at = (valid & (group == g)[None, :]).nonzero(as_tuple=True)
            n_mb = ddp.sum(torch.tensor(float(at[0].numel()), device=dev)).clamp(min=1)
            per_sample, parts = minibatch_loss(policy, buf, at, adv, s, ps, ddp, n_mb)
            # sum over this rank / global count, times world: DDP's gradient average becomes the global mean
            loss = per_sample.sum() / n_mb * ddp.world
            check_finite(loss, "in an RL update")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if s.grad_clip > 0:
                nn.utils.clip_grad_norm_(module.parameters(), s.grad_clip)
            opt.step()
            with torch.no_grad():
                log_ratio = parts["log_ratio"]
                ratio = log_ratio.exp()
                kl_sum += ((ratio - 1) - log_ratio).sum()
                stats["clip_frac"] += float(ddp.sum(((ratio - 1).abs() > s.clip).float().sum()) / count)
                stats["loss"] += float(ddp.sum(per_sample.sum().detach()) / count)
                for key in ("value_loss", "entropy_per_blank"):
                    stats[key] += float(ddp.sum(parts[key].sum().detach()) / count)
        kl = float(ddp.sum(kl_sum) / count)
        stats["approx_kl"], stats["epochs"] = kl, stats["epochs"] + 1
        if not math.isfinite(kl) or kl > s.abort_kl:
            raise Diverged(f"approximate KL {kl:.3g} exceeds --abort-kl {s.abort_kl}; a lower --lr keeps updates smaller")
        if kl > s.target_kl:
            break
    return stats
