"""Agents on one batched protocol (:mod:`agents.base`), and the registry the benchmark uses.

``make_agent(name, checkpoint=None, device="cpu")`` builds one by name:

* ``random``, ``propagation``, ``solver``: no checkpoint;
* ``onepass``, ``trm``, ``dis``: a checkpoint of ``train/onepass.py``, ``trm.py``, ``dis.py``
  (default ``runs/<name>/checkpoint.pt``);
* ``ppo_recursion``: the RL-trained recursive policy of ``train/ppo_recursion.py``, halting
  by its Q head (default ``runs/ppo_recursion/checkpoint.pt``);
* ``sb3_ppo``: a stable-baselines3 model of ``train/sb3_ppo.py`` (default ``runs/sb3_ppo/model.zip``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.base import Agent
from agents.rule_based import PropagationAgent, RandomAgent, SolverAgent

RULE_BASED = {"random": RandomAgent, "propagation": PropagationAgent, "solver": SolverAgent}
DEFAULT_CHECKPOINTS = {
    "onepass": "runs/onepass/checkpoint.pt",
    "trm": "runs/trm/checkpoint.pt",
    "dis": "runs/dis/checkpoint.pt",
    "sb3_ppo": "runs/sb3_ppo/model.zip",
    "ppo_recursion": "runs/ppo_recursion/checkpoint.pt",
}
NAMES = tuple(RULE_BASED) + tuple(DEFAULT_CHECKPOINTS)


def available(checkpoints: dict[str, str] | None = None) -> list[str]:
    """Names that can be built now: rule-based ones, and those whose checkpoint exists."""
    paths = {**DEFAULT_CHECKPOINTS, **(checkpoints or {})}
    return list(RULE_BASED) + [n for n, p in paths.items() if Path(p).is_file()]


def make_agent(name: str, checkpoint: str | None = None, device: str = "cpu", **kw: Any) -> Agent:
    """Build agent ``name``; unknown names and missing checkpoints raise before any work."""
    if name in RULE_BASED:
        return RULE_BASED[name](**kw)
    if name not in DEFAULT_CHECKPOINTS:
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(NAMES)}")
    path = checkpoint or DEFAULT_CHECKPOINTS[name]
    if not Path(path).is_file():
        raise FileNotFoundError(f"agent {name!r}: checkpoint {path} does not exist; available now: {', '.join(available())}")
    if name == "sb3_ppo":
        from agents.sb3_agent import SB3Agent

        return SB3Agent.from_file(path, device=device, name=name)
    from agents.trm_agent import TRMAgent

    if name == "ppo_recursion":
        kw.setdefault("halting", True)
    return TRMAgent.from_checkpoint(path, device=device, kind=name, **kw)
