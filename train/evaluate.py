"""Measure a TRM on held-out puzzles: the TRM agent played through the environment.

Each step is one supervision step of the model; a puzzle stops when the model halts
(Q head, when ``halting``) or after ``n_sup`` steps, and its last answer is scored.
Forward passes come from the model's own counter. See :mod:`agents.runner`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.runner import run_episodes, summarize
from agents.trm_agent import TRMAgent
from trm.model import TRM


def evaluate(
    model: TRM,
    puzzles: np.ndarray,
    solutions: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    w: float = 1.0,
    halting: bool = False,
    steps: int | None = None,
) -> dict[str, Any]:
    """``solve_rate``, ``cell_accuracy``, ``forward_passes_per_puzzle``, ``mean_steps``,
    ``dead_compute_share`` and per-step curves (see :func:`agents.runner.summarize`).

    ``steps``: supervision steps per puzzle (default the trained ``n_sup``; more runs the model
    deeper than trained, see :class:`agents.trm_agent.TRMAgent`)."""
    was_training = model.training
    model.reset_counter()
    agent = TRMAgent(model, w=w, halting=halting, steps=steps)
    res = run_episodes(agent, puzzles, solutions, device=device, max_steps=agent.max_steps)
    model.train(was_training)
    out = summarize(res)
    out.pop("search_nodes_per_puzzle")
    out["eval_wall_seconds"] = out.pop("wall_seconds")
    return out
