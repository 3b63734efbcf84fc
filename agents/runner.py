"""Play one episode per puzzle with any agent through the batched environment, and measure it.

The environment is built with ``terminate_on_solve=False`` and ``step_cost=0`` so that
an episode ends only when the agent halts or at ``max_steps``: the agent's own
decision fixes its compute, and the answer at the end of the episode is what is
scored. The puzzle's solution is used only for scoring.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from agents.base import Agent
from envs.puzzle_pool import PuzzlePool
from envs.vector_env import LatentReasoningSudokuVectorEnv
from trm.losses import advantage_margin


def run_episodes(
    agent: Agent, puzzles: np.ndarray, solutions: np.ndarray | None, *, device: str | torch.device = "cpu", max_steps: int = 16
) -> dict[str, Any]:
    """Per-puzzle results and per-step curves of ``agent`` on ``puzzles (n, 81)``.

    With ``solutions=None`` (a label-free source) the episodes are scored by the
    verifier (solved = complete and conflict-free); cell accuracy is then NaN.

    Returns numpy arrays ``solved``, ``cell_accuracy``, ``steps``, ``forward_passes``,
    ``dead_steps`` (steps that do not raise the score: the reward ``r_t`` with no step
    cost is not positive, which includes every step taken on an already solved board),
    ``search_nodes``, ``answers`` ``(n, 81)`` (the answer each episode ended with),
    ``solved_per_step`` ``(n, steps)`` (each episode's outcome after each step, its final one once ended),
    lists ``cell_accuracy_per_step`` / ``solve_rate_per_step`` (each episode counted
    at its final answer once it has ended), ``forward_passes_per_step`` (counted passes per
    puzzle spent up to and including each step) and ``advantage_margin_per_step`` (mean over
    blanks of the episodes acting, for agents with a guided readout), and ``wall_seconds``.
    """
    n = len(puzzles)
    labelled = solutions is not None
    venv = LatentReasoningSudokuVectorEnv(
        num_envs=n,
        pool=PuzzlePool(np.asarray(puzzles), np.asarray(solutions) if labelled else None, "run_episodes"),
        order="sequential",
        max_steps=max_steps,
        terminate_on_solve=False,
        reward_mode="solution" if labelled else "verifier",
        device=device,
    )
    sol = torch.as_tensor(np.asarray(solutions), dtype=torch.long, device=device) if labelled else None
    obs, _ = venv.reset(seed=0)
    blank = obs["puzzle"] == 0
    t0 = time.perf_counter()
    state = agent.reset(obs)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    z = {k: torch.zeros(n, device=device) for k in ("cell_accuracy", "steps", "forward_passes", "dead_steps", "search_nodes")}
    solved = torch.zeros(n, dtype=torch.bool, device=device)
    answers = obs["puzzle"].clone()
    solved_per_step = []
    curves: dict[str, list[float]] = {"cell_accuracy_per_step": [], "solve_rate_per_step": [], "advantage_margin_per_step": [],
                                      "forward_passes_per_step": []}
    for _ in range(max_steps):
        action, state, info = agent.act(obs, state)
        written = torch.where(obs["puzzle"] > 0, obs["puzzle"], action[:, :81].to(device))  # the env keeps the givens
        answers = torch.where(alive[:, None], written, answers)
        obs, reward, term, trunc, env_info = venv.step(action)
        z["forward_passes"] += torch.where(alive, info["forward_passes"].to(device), 0)
        if "search_nodes" in info:
            z["search_nodes"] += torch.where(alive, info["search_nodes"].to(device), 0)
        z["dead_steps"] += ((reward <= 0) & alive).float()
        z["steps"] += alive.float()
        z["cell_accuracy"] = torch.where(alive, env_info["cell_accuracy"], z["cell_accuracy"])
        solved = torch.where(alive, env_info["solved"], solved)
        if agent.guidance is not None and labelled:
            rows = info["rows"]
            margin = advantage_margin(info["logits_ref"], info["logits"], sol[rows], agent.guidance)
            bl = blank[rows]
            curves["advantage_margin_per_step"].append(float((margin * bl).sum() / bl.sum().clamp(min=1)))
        curves["cell_accuracy_per_step"].append(float(z["cell_accuracy"].mean()))
        curves["solve_rate_per_step"].append(float(solved.float().mean()))
        curves["forward_passes_per_step"].append(float(z["forward_passes"].mean()))
        solved_per_step.append(solved.clone())
        alive &= ~(term | trunc)
        if not alive.any():
            break
    wall = time.perf_counter() - t0
    out = {k: v.cpu().numpy() for k, v in z.items()}
    out["solved"] = solved.cpu().numpy()
    out["answers"] = answers.cpu().numpy()
    out["solved_per_step"] = torch.stack(solved_per_step, 1).cpu().numpy() if solved_per_step else np.zeros((n, 0), bool)
    return {**out, **curves, "wall_seconds": wall}


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Means over puzzles of :func:`run_episodes` results, the shape ``metrics.json`` uses."""
    steps = float(res["steps"].sum())
    return {
        "solve_rate": float(res["solved"].mean()),
        "cell_accuracy": float(res["cell_accuracy"].mean()),
        "forward_passes_per_puzzle": float(res["forward_passes"].mean()),
        "mean_steps": float(res["steps"].mean()),
        "dead_compute_share": float(res["dead_steps"].sum()) / steps if steps else 0.0,
        "search_nodes_per_puzzle": float(res["search_nodes"].mean()),
        "puzzles": len(res["solved"]),
        "solve_rate_per_step": res["solve_rate_per_step"],
        "cell_accuracy_per_step": res["cell_accuracy_per_step"],
        "advantage_margin_per_step": res["advantage_margin_per_step"],
        "forward_passes_per_step": res["forward_passes_per_step"],
        "wall_seconds": res["wall_seconds"],
    }
