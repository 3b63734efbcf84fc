"""A stable-baselines3 model acting in the batched environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import AgentBase, make_action


class SB3Agent(AgentBase):
    """Wraps a trained SB3 policy (e.g. ``PPO`` with ``MultiInputPolicy``).

    The vector env's tensor observations are handed to ``model.predict`` as numpy
    (deterministic actions). Forward passes are the rows that pass through the
    policy's action head, counted by a forward hook as they happen. The policy was
    trained with a step observation ``Discrete(max_steps + 1)``: it halts every episode
    at its ``max_steps`` and never sees a step index it was not trained on.
    """

    def __init__(self, model: Any, name: str = "sb3_ppo") -> None:
        self.model = model
        self.name = name
        self.calls = 0  # rows that went through the policy's action head, counted by a hook
        self.max_steps = int(model.observation_space["step"].n) - 1
        model.policy.action_net.register_forward_hook(self._count)

    def _count(self, module: Any, args: tuple, output: Any) -> None:
        self.calls += args[0].shape[0]

    @classmethod
    def from_file(cls, path: str, *, device: str = "cpu", name: str = "sb3_ppo", trust: bool = False) -> SB3Agent:
        """Load ``path``, a stable-baselines3 ``model.zip``, only with ``trust=True``.

        SB3 stores parts of a model as pickles that can run any code when read, so a model
        file is read only when the caller vouches for it (a file made on this machine);
        otherwise ``ValueError`` before the file is opened.
        """
        from stable_baselines3 import PPO

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"SB3 model {p} does not exist")
        if not trust:
            raise ValueError(f"{p}: a stable-baselines3 model file holds pickles that can run code when read; it is "
                             "read only with trust=True (benchmark.py --trust-sb3), for files you made yourself")
        try:
            model = PPO.load(p, device=device)
        except Exception as e:  # noqa: BLE001 - SB3 raises many kinds for a wrong file
            raise ValueError(f"{p} is not a stable-baselines3 PPO model: {type(e).__name__}: {e}") from None
        return cls(model, name=name)

    def reset(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.ones(obs["answer"].shape[0], dtype=torch.bool, device=obs["answer"].device)

    def act(self, obs: dict[str, torch.Tensor], state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        dev = obs["answer"].device
        np_obs = {k: v.cpu().numpy() for k, v in obs.items()}
        before = self.calls
        acts, _ = self.model.predict(np_obs, deterministic=True)
        calls = (self.calls - before) / state.shape[0]
        acts = torch.as_tensor(np.asarray(acts), dtype=torch.long, device=dev).reshape(-1, 82)
        halt = (acts[:, 81].bool() | (obs["step"] + 1 >= self.max_steps).reshape(-1)) & state
        action = make_action(acts[:, :81], halt | ~state)
        return action, state & ~halt, {"forward_passes": state.float() * calls}
