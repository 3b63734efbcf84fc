"""Agents without a network: random guessing, rule-based propagation, and the exact solver."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.base import AgentBase, make_action
from envs import search, sudoku


def _zeros(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.zeros(obs["answer"].shape[0], device=obs["answer"].device)


class RandomAgent(AgentBase):
    """Proposes a uniformly random digit 1-9 for every cell at every step and never halts."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def reset(self, obs: dict[str, torch.Tensor]) -> torch.Generator:
        return torch.Generator(device=obs["answer"].device).manual_seed(self.seed)

    def act(self, obs: dict[str, torch.Tensor], state: torch.Generator) -> tuple[torch.Tensor, Any, dict[str, Any]]:
        n = obs["answer"].shape[0]
        guess = torch.randint(1, 10, (n, 81), generator=state, device=obs["answer"].device)
        return make_action(guess, torch.zeros(n)), state, {"forward_passes": _zeros(obs)}


class PropagationAgent(AgentBase):
    """One round of naked and hidden singles per step; halts when a round adds nothing.

    Rule-based iterative refinement on the same "each step improves the answer"
    interface: it solves exactly the puzzles that singles alone solve (rating 0).
    """

    name = "propagation"

    def reset(self, obs: dict[str, torch.Tensor]) -> None:
        return None

    def act(self, obs: dict[str, torch.Tensor], state: None) -> tuple[torch.Tensor, None, dict[str, Any]]:
        answer = obs["answer"].cpu().numpy()
        nxt = sudoku.propagate_step(answer.astype(np.int8)).astype(np.int64)
        halt = (nxt == answer).all(1) | (nxt > 0).all(1)
        action = make_action(torch.from_numpy(nxt), torch.from_numpy(halt)).to(obs["answer"].device)
        return action, None, {"forward_passes": _zeros(obs)}


class SolverAgent(AgentBase):
    """The oracle upper bound: backtracking search solves each puzzle in one step, then halts.

    Its compute is reported as search nodes (the root plus one node per guess).
    """

    name = "solver"

    def reset(self, obs: dict[str, torch.Tensor]) -> None:
        return None

    def act(self, obs: dict[str, torch.Tensor], state: None) -> tuple[torch.Tensor, None, dict[str, Any]]:
        puzzles = np.ascontiguousarray(obs["puzzle"].cpu().numpy().astype(np.int8))
        _, guesses, solutions = search.search_batch(puzzles, 1)
        dev = obs["answer"].device
        action = make_action(torch.from_numpy(solutions.astype(np.int64)), torch.ones(len(puzzles))).to(dev)
        nodes = torch.from_numpy(guesses + 1).float().to(dev)
        return action, None, {"forward_passes": _zeros(obs), "search_nodes": nodes}
