"""Advantages over recursion steps: GAE against the value heads, or group-relative against a puzzle's other episodes.

Each rollout holds one episode per environment; with ``gamma = 1`` and ``lambda = 1``
(the defaults) GAE is Monte Carlo returns minus ``V``, which is unbiased: the value
head reads a pooled latent that cannot tell a solved board from an almost solved one,
and with ``lambda = 0.95`` its bias on later steps (about +0.45 where the true value
is -0.04) outweighed the step costs a halt saves, so halting was unlearned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from train.distributed import Dist


@dataclass
class AdvantageSettings:
    """How credit is assigned over the steps of an episode."""

    # joint: one advantage per step (one ratio over the whole action); cell: each cell its own return of
    # info["cell_reward"]; shared (--objective group): each cell its own ratio, all sharing the episode's advantage
    credit: Literal["joint", "cell", "shared"] = "joint"
    gamma: float = 1.0  # discount; must be 1: the env's shaping is potential-based only undiscounted
    gae_lambda: float = 1.0  # 1: Monte Carlo returns minus V (see train/rl/advantages.py)

    def __post_init__(self) -> None:
        if self.gamma != 1.0:
            raise ValueError(f"--gamma {self.gamma}: the env's reward is shaped as Phi(s') - Phi(s), which keeps optimal "
                             "policies only undiscounted; use --gamma 1")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"--gae-lambda must lie in [0, 1], got {self.gae_lambda}")


def gae(
    buf: dict[str, torch.Tensor],
    gamma: float,
    lam: float,
    reward: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``[t, env, ...]`` by generalised advantage estimation.

    ``delta_t = r_t + gamma V_{t+1} (1 - done_t) - V_t``, ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}``,
    returns ``A_t + V_t``; steps outside an episode (``valid`` false) get 0, and an
    episode's last step bootstraps from 0. ``reward`` and ``value`` default to the
    buffer's; they may carry trailing dimensions (per-cell terms ``[t, env, 81]``).
    """
    reward = buf["reward"] if reward is None else reward
    value = buf["value"] if value is None else value
    extra = (1,) * (reward.dim() - 2)
    adv = torch.zeros_like(reward)
    next_adv = torch.zeros_like(reward[0])
    next_value = torch.zeros_like(next_adv)
    for t in reversed(range(reward.shape[0])):
        cont = (~buf["done"][t]).float().view(-1, *extra)
        valid = buf["valid"][t].view(-1, *extra)
        delta = reward[t] + gamma * next_value * cont - value[t]
        next_adv = torch.where(valid, delta + gamma * lam * cont * next_adv, 0)
        adv[t] = next_adv
        next_value = torch.where(valid, value[t], 0)
    return adv, adv + value


@dataclass
class Advantages:
    """What the update needs: raw and normalised advantages and value targets.

    Joint credit: ``step``/``step_n``/``step_ret`` ``[t, env]`` for the whole action.
    Per-cell credit: also ``cell``/``cell_n``/``cell_ret`` ``[t, env, 81]`` (each cell's own
    return of its per-cell rewards minus its own baseline), while ``step`` is the shared
    part (solve bonus, step cost) against the pooled baseline, which credits the halt.
    """

    step: torch.Tensor
    step_n: torch.Tensor
    step_ret: torch.Tensor
    cell: torch.Tensor | None = None
    cell_n: torch.Tensor | None = None
    cell_ret: torch.Tensor | None = None


def normalised(x: torch.Tensor, mask: torch.Tensor, ddp: Dist) -> torch.Tensor:
    """``(x - mean) / std`` over the entries where ``mask`` holds, on every process together."""
    m = mask.float()
    count = ddp.sum(m.sum()).clamp(min=1)
    mean = ddp.sum((x * m).sum()) / count
    std = (ddp.sum((((x - mean) ** 2) * m).sum()) / count).sqrt().clamp(min=1e-6)
    return (x - mean) / std


def leave_one_out(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x_i - mean_{j != i} x_j`` within consecutive groups of ``k`` rows; ``x (N, ...)``, ``N`` a multiple of ``k``.

    The other episodes of a group played the same puzzle independently of episode ``i``,
    so their mean return is a baseline that leaves the policy gradient unbiased (RLOO).
    """
    g = x.reshape(-1, k, *x.shape[1:])
    others = (g.sum(1, keepdim=True) - g) / (k - 1)
    return (g - others).reshape(x.shape)


def group_advantages(buf: dict[str, torch.Tensor], credit: str, group_size: int, ddp: Dist) -> Advantages:
    """Group-relative advantages: each episode's return minus the mean return of its group's other episodes.

    Every step of episode ``i`` gets ``A_i = R_i - mean_{j != i} R_j`` (``R`` the undiscounted
    return, ``(N,)``; groups are ``group_size`` consecutive environments). Under per-cell credit
    cell ``c`` gets its own ``R_ic - mean_{j != i} R_jc`` from its per-cell rewards, and the shared
    part (solve bonus, step cost) credits the halt. Under shared credit every blank cell and the halt
    of episode ``i`` get the whole ``A_i``, solve bonus included, each through its own clipped ratio
    (a per-cell ratio does not clip as soon as the joint ratio over some 50 cells does). No value
    head is involved.
    """
    valid, k = buf["valid"], group_size
    ret = buf["reward"].sum(0)
    if credit in ("joint", "shared"):
        adv = torch.where(valid, leave_one_out(ret, k)[None], 0)
        adv_n = normalised(adv, valid, ddp)
        if credit == "joint":
            return Advantages(adv, adv_n, torch.zeros_like(adv))
        cell_mask = valid[..., None] & buf["blank"]
        cell = torch.where(cell_mask, adv[..., None], 0)
        cell_n = torch.where(cell_mask, adv_n[..., None], 0)
        return Advantages(adv, adv_n, torch.zeros_like(adv), cell, cell_n, torch.zeros_like(cell))
    cell_ret = buf["cell_reward"].sum(0)  # (N, 81)
    adv = torch.where(valid, leave_one_out(ret - cell_ret.sum(-1), k)[None], 0)
    cell_mask = valid[..., None] & buf["blank"]
    cell = torch.where(cell_mask, leave_one_out(cell_ret, k)[None], 0)
    zero = torch.zeros_like(cell)
    return Advantages(adv, normalised(adv, valid, ddp), torch.zeros_like(adv), cell, normalised(cell, cell_mask, ddp), zero)


def advantages(buf: dict[str, torch.Tensor], s: AdvantageSettings, ddp: Dist, group_size: int = 0) -> Advantages:
    """GAE for the whole step (joint credit), or per cell plus a shared part (per-cell credit);
    group-relative (:func:`group_advantages`) when ``group_size`` (episodes per puzzle) is given."""
    valid = buf["valid"]
    if group_size:
        return group_advantages(buf, s.credit, group_size, ddp)
    if s.credit == "shared":
        raise ValueError("--credit shared is the group objective's (--objective group)")
    if s.credit == "joint":
        adv, ret = gae(buf, s.gamma, s.gae_lambda)
        return Advantages(adv, normalised(adv, valid, ddp), ret)
    shared = buf["reward"] - buf["cell_reward"].sum(-1)  # solve bonus and step cost
    adv, ret = gae(buf, s.gamma, s.gae_lambda, reward=shared)
    cell, cell_ret = gae(buf, s.gamma, s.gae_lambda, reward=buf["cell_reward"], value=buf["cell_value"])
    cell_mask = valid[..., None] & buf["blank"]
    return Advantages(adv, normalised(adv, valid, ddp), ret, cell, normalised(cell, cell_mask, ddp), cell_ret)
