"""The batched agent protocol shared by every method.

An agent plays ``N`` episodes of the vector environment at once::

    state = agent.reset(obs)                          # obs: dict of (N, ...) tensors
    action, state, info = agent.act(obs, state)       # action: (N, 82) int64 tensor

``info["forward_passes"]`` is a float tensor ``(N,)``: the network calls this step
cost each episode, counted at run time (0 for agents without a network). Agents
that search report their own unit as well (``info["search_nodes"]``). An agent
that halts an episode (action column 81 = 1) does no more work on it; the runner
ignores what it proposes there afterwards.

What an agent exposes besides ``reset`` and ``act`` (:class:`Agent`):

* ``name``: its row label in tables;
* ``max_steps``: the most steps it ever takes (``None``: no limit of its own); a runner
  gives it at least that many;
* ``guidance``: the guidance weight ``w`` of its readout ``l_w = l_u + w (l_c - l_u)``, settable,
  or ``None`` for agents without a guided readout. Agents with one also return their
  readouts in ``info``: ``rows`` (the episodes that acted), ``logits_ref`` (``l_u``) and
  ``logits`` (``l_c``), each ``(len(rows), 81, 10)``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Agent(Protocol):
    """What :func:`agents.runner.run_episodes` and ``train/benchmark.py`` drive."""

    name: str
    max_steps: int | None
    guidance: float | None

    def reset(self, obs: dict[str, torch.Tensor]) -> Any: ...

    def act(self, obs: dict[str, torch.Tensor], state: Any) -> tuple[torch.Tensor, Any, dict[str, Any]]: ...


class AgentBase:
    """Defaults of the protocol's attributes: no step limit of its own, no guided readout."""

    name: str = "agent"
    max_steps: int | None = None
    guidance: float | None = None


def make_action(answer: torch.Tensor, halt: torch.Tensor) -> torch.Tensor:
    """``(N, 82)`` action from an answer ``(N, 81)`` and a halt flag ``(N,)``."""
    return torch.cat([answer.long(), halt.long()[:, None]], dim=1)
