"""The recursive policy RL trains: one TRM supervision step per action, its distributions, and the policy as an agent.

One step is ``model.step(x, y, z, s)`` (carried by :class:`trm.carry.Carry`); its
conditional readout gives a factorised categorical over the 10 values of every blank
cell, its Q head a Bernoulli halt flag, and value heads read the new answer state::

    log pi(a | s) = sum_{blank cells i} log p_i[a_i] + log Bern(halt; sigmoid(q)),
    p_i = softmax(l_c / T)_i  (or stable-max, ``policy_dist``)

:class:`PolicyAgent` plays the sampled policy on the batched agent protocol
(:mod:`agents.base`), so the RL rollout and :func:`agents.runner.run_episodes` step it
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from agents.base import AgentBase, make_action
from trm.carry import Carry
from trm.losses import log_stablemax
from trm.model import TRM


@dataclass
class PolicySettings:
    """How the policy turns logits into a distribution over each cell's digit."""

    policy_dist: Literal["softmax", "stablemax"] = "softmax"  # the cells' sampling distribution over the logits
    temperature: float = 1.0  # the logits are divided by this before the distribution

    def __post_init__(self) -> None:
        if not (0 < self.temperature < float("inf")):
            raise ValueError(f"--temperature must be a finite number above 0, got {self.temperature}")


class PolicyStep(NamedTuple):
    """One recursion step of the policy: ``logits (B, 81, 10)``, halt logit ``q (B,)``, pooled ``value (B,)``,
    per-cell ``cell_value (B, 81)`` and the new latents ``y, z (B, P + 81, D)`` (a tuple, so DDP finds the tensors)."""

    logits: torch.Tensor
    q: torch.Tensor
    value: torch.Tensor
    cell_value: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor


class RecursionPolicy(nn.Module):
    """The TRM plus value heads; ``forward`` is one recursion step with its distributions.

    ``value = v(mean_L y')`` is the baseline of the whole step (and of the halt under
    per-cell credit); ``cell_value_i = v_c(y'_i)`` is cell ``i``'s own baseline. Both read
    the latents after the step, a function of the state alone (not of the sampled action).
    """

    def __init__(self, model: TRM) -> None:
        super().__init__()
        self.trm = model
        self.value = nn.Linear(model.cfg.hidden, 1)
        self.cell_value = nn.Linear(model.cfg.hidden, 1)
        for head in (self.value, self.cell_value):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, tokens: torch.Tensor, y: torch.Tensor, z: torch.Tensor, step: torch.Tensor) -> PolicyStep:
        out = self.trm.step(tokens, y, z, step=step if self.trm.cfg.step_embedding else None)
        cells = self.trm.cells(out.y)  # (B, L, D): the value heads read the cells, not the prefix
        value = self.value(cells.mean(1)).squeeze(-1)
        return PolicyStep(out.logits.float(), out.q.float(), value, self.cell_value(cells).squeeze(-1), out.y, out.z)


# ----------------------------------------------------------------------------- log-probability


def cell_log_probs(logits: torch.Tensor, dist: str = "softmax", temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities ``(B, 81, 10)`` of each cell's digit: ``log softmax(l / T)`` or ``log stablemax(l / T)``.

    Stable-max (``s(x) = x + 1`` for ``x >= 0``, ``1 / (1 - x)`` below, normalised) is the
    distribution DIS and TRM train with; softmax of the same logits is far sharper.
    """
    scaled = logits / temperature
    return log_stablemax(scaled).float() if dist == "stablemax" else torch.log_softmax(scaled, -1)


@dataclass
class Factored:
    """The factorised policy's pieces per sample: ``cell_logp (B, 81)`` (0 off the blanks), ``halt_logp (B,)``,
    ``cell_entropy (B,)`` (mean over blanks, nats) and ``halt_entropy (B,)``."""

    cell_logp: torch.Tensor
    halt_logp: torch.Tensor
    cell_entropy: torch.Tensor
    halt_entropy: torch.Tensor


def factored_log_probs(
    logp_all: torch.Tensor, q: torch.Tensor, cells: torch.Tensor, halt: torch.Tensor, blank: torch.Tensor
) -> Factored:
    """Per-cell and halt log-probabilities and entropies of actions ``cells (B, 81)``, ``halt (B,)``."""
    bl = blank.float()
    cell_logp = logp_all.gather(-1, cells[..., None]).squeeze(-1) * bl
    cell_ent = (-(logp_all.exp() * logp_all).sum(-1) * bl).sum(-1) / bl.sum(-1).clamp(min=1)
    halt_logp = -F.binary_cross_entropy_with_logits(q, halt.float(), reduction="none")
    p = torch.sigmoid(q)
    halt_ent = -(p * F.logsigmoid(q) + (1 - p) * F.logsigmoid(-q))
    return Factored(cell_logp, halt_logp, cell_ent, halt_ent)


def log_prob_entropy(
    logits: torch.Tensor,
    q: torch.Tensor,
    cells: torch.Tensor,
    halt: torch.Tensor,
    blank: torch.Tensor,
    dist: str = "softmax",
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log pi(a | s)`` and the policy entropy per sample ``(B,)``.

    ``log pi(a | s) = sum over blank cells i of log p_i[cells_i] + log Bern(halt; sigmoid(q))`` with
    ``p_i`` from :func:`cell_log_probs`; the entropy is the mean per-blank categorical
    entropy (nats) plus the halt flag's.
    Shapes: ``logits (B, 81, 10)``, ``q (B,)``, ``cells (B, 81)``, ``halt (B,)``, ``blank (B, 81)``.
    """
    f = factored_log_probs(cell_log_probs(logits, dist, temperature), q, cells, halt, blank)
    return f.cell_logp.sum(-1) + f.halt_logp, f.cell_entropy + f.halt_entropy


# ----------------------------------------------------------------------------- the policy as an agent


class PolicyAgent(AgentBase):
    """The stochastic policy on the agent protocol: every blank cell's digit and the halt flag sampled.

    Each ``act`` runs one step on the episodes in ``state["active"]`` (a caller whose env ends
    episodes on its own, e.g. on a solved board, sets it before the call) and draws from
    torch's global generator: cells from :func:`cell_log_probs`, then the halt from
    ``Bernoulli(sigmoid(q))``. Besides ``forward_passes`` (the model's own count), ``info``
    carries what a rollout stores for the update: ``rows``, the step's inputs ``tokens``,
    ``y``, ``z`` and ``blank``, the actions ``cells``/``halt``, their log-probabilities
    (:class:`Factored` as ``factored``), ``value``, ``cell_value``, and ``greedy``, the
    argmax answer of the same readout (givens kept), all ``(len(rows), ...)``.
    """

    def __init__(self, policy: RecursionPolicy, settings: PolicySettings | None = None, name: str = "sampled policy") -> None:
        self.policy = policy
        self.settings = settings or PolicySettings()
        self.max_steps = policy.trm.cfg.n_sup
        self.name = name

    def reset(self, obs: dict[str, torch.Tensor]) -> dict[str, Any]:
        n, dev = obs["puzzle"].shape[0], obs["puzzle"].device
        return {"carry": Carry(self.policy.trm, n), "step": 0, "active": torch.ones(n, dtype=torch.bool, device=dev)}

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        trm, carry, s = self.policy.trm, state["carry"], state["step"] + 1
        puzzle = obs["puzzle"]
        n, dev = puzzle.shape[0], puzzle.device
        idx = state["active"].nonzero().squeeze(-1)
        tokens = trm.input_tokens(puzzle, obs["answer"])[idx]
        p_idx = puzzle[idx]
        blank = p_idx == 0
        y_in, z_in = carry.y[idx], carry.z[idx]
        before = trm.net.sample_calls
        out = carry.step(trm, tokens, idx, torch.full((idx.numel(),), s, device=dev), forward=self.policy)
        logp_all = cell_log_probs(out.logits, self.settings.policy_dist, self.settings.temperature)
        cells = torch.distributions.Categorical(logits=logp_all).sample()
        halt = torch.bernoulli(torch.sigmoid(out.q)).long()
        answer = torch.zeros(n, 81, dtype=torch.long, device=dev)
        stop = torch.zeros(n, dtype=torch.long, device=dev)
        answer[idx], stop[idx] = cells, halt
        fp = torch.zeros(n, device=dev)
        fp[idx] = (trm.net.sample_calls - before) / max(1, idx.numel())
        info = {
            "forward_passes": fp, "rows": idx, "tokens": tokens, "y": y_in, "z": z_in, "blank": blank, "cells": cells,
            "halt": halt, "factored": factored_log_probs(logp_all, out.q, cells, halt, blank), "value": out.value,
            "cell_value": out.cell_value, "greedy": torch.where(blank, logp_all.argmax(-1), p_idx),
        }
        done = stop.bool() | (s >= self.max_steps)
        return make_action(answer, stop), {**state, "step": s, "active": state["active"] & ~done}, info
