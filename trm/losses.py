"""Losses and readout arithmetic: stable-max cross-entropy, guidance, advantage margin.

Logits are ``(..., V)`` with ``V = 10`` answer values per cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log_stablemax(logits: torch.Tensor) -> torch.Tensor:
    """``log s(l_i) - log sum_j s(l_j)`` with ``s(x) = x + 1`` for ``x >= 0`` and ``1 / (1 - x)`` below.

    TRM's replacement for softmax: it grows linearly instead of exponentially, which
    keeps the loss finite and the gradients tame when logits become large.
    """
    logits = logits.double()
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - torch.clamp(logits, max=0)))
    return torch.log(s) - torch.log(s.sum(-1, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over cells of ``-log stablemax(logits)[target]``; ``weight (...)`` scales cells (e.g. per step)."""
    nll = -log_stablemax(logits).gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    if weight is not None:
        nll = nll * weight
    return nll.mean().float()


def softmax_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy averaged over cells (``logits (..., V)``, ``target (...)``)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1).long())


def guided_logits(logits_ref: torch.Tensor, logits: torch.Tensor, w: float) -> torch.Tensor:
    """``l_w = l_u + w (l_c - l_u)``, i.e. ``pi_w ∝ pi_u^(1-w) pi_c^w`` (w = 1: plain TRM, w = 0: reference)."""
    return logits_ref + w * (logits - logits_ref)


def advantage_margin(logits_ref: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, w: float = 1.0) -> torch.Tensor:
    """``d[y*] - E_{a ~ pi_w} d[a]`` per cell, with residual ``d = l_c - l_u``; shape ``(...)``.

    ``d/dw [-log pi_w(y*)] = -(d[y*] - E_{pi_w} d)``: the guided loss falls as ``w``
    grows exactly when this margin is positive; a step whose margin is not positive
    is dead compute.
    """
    d = (logits - logits_ref).float()
    pi_w = torch.softmax(guided_logits(logits_ref, logits, w).float(), dim=-1)
    return d.gather(-1, target.long().unsqueeze(-1)).squeeze(-1) - (pi_w * d).sum(-1)
