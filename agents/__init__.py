"""Agents on one batched protocol (:mod:`agents.base`), and the registry the benchmark uses.

``make_agent(name, checkpoint=None, device="cpu")`` builds one by name:

* ``random``, ``propagation``, ``solver``: no checkpoint;
* ``onepass``, ``trm``, ``dis``: a checkpoint of ``train/train_onepass.py``, ``train_trm.py``,
  ``train_dis.py`` (default ``runs/<name>/checkpoint.pt``), or a pretrained folder of one
  (``config.json`` + ``model.safetensors``, :mod:`trm.pretrained`): every model agent takes either;
* ``trm+halt``: the TRM checkpoint's model halting by its Q head (TRM's own halting);
* ``ppo_recursion``: the RL-trained recursive policy of ``train/ppo_recursion.py``, halting
  by its Q head (default ``runs/ppo_recursion/checkpoint.pt``);
* ``expert_iteration``: the policy of ``train/expert_iteration.py``, every step run
  (default ``runs/expert_iteration/checkpoint.pt``);
* ``sb3_ppo``: a stable-baselines3 model of ``train/sb3_ppo.py`` (default ``runs/sb3_ppo/model.zip``);
* ``search``: test-time search over 16 trajectories of the DIS checkpoint with the rules as
  verifier (:class:`agents.search_agent.SearchAgent`; ``k=`` sets another count).
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
    "trm+halt": "runs/trm/checkpoint.pt",
    "dis": "runs/dis/checkpoint.pt",
    "sb3_ppo": "runs/sb3_ppo/model.zip",
    "ppo_recursion": "runs/ppo_recursion/checkpoint.pt",
    "expert_iteration": "runs/expert_iteration/checkpoint.pt",
    "search": "runs/dis/checkpoint.pt",
}
CHECKPOINT_OF = {"trm+halt": "trm", "search": "dis"}  # agents that read another agent's checkpoint
HALTING = ("trm+halt", "ppo_recursion")  # agents that halt by their Q head
NAMES = tuple(RULE_BASED) + tuple(DEFAULT_CHECKPOINTS)


def checkpoint_path(name: str, checkpoints: dict[str, str] | None = None) -> str:
    """Where agent ``name`` reads its checkpoint: given, given for the agent it shares one with, or the default."""
    checkpoints = checkpoints or {}
    return checkpoints.get(name) or checkpoints.get(CHECKPOINT_OF.get(name, name)) or DEFAULT_CHECKPOINTS[name]


def available(checkpoints: dict[str, str] | None = None) -> list[str]:
    """Names that can be built now: rule-based ones, and those whose checkpoint exists."""
    return list(RULE_BASED) + [n for n in DEFAULT_CHECKPOINTS if Path(checkpoint_path(n, checkpoints)).exists()]


def make_agent(name: str, checkpoint: str | None = None, device: str = "cpu", **kw: Any) -> Agent:
    """Build agent ``name``; unknown names and missing or unfit checkpoints raise before any work."""
    if name in RULE_BASED:
        return RULE_BASED[name](**kw)
    if name not in DEFAULT_CHECKPOINTS:
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(NAMES)}")
    path = checkpoint or DEFAULT_CHECKPOINTS[name]
    if not Path(path).exists():
        raise FileNotFoundError(f"agent {name!r}: checkpoint {path} does not exist; available now: {', '.join(available())}")
    if name == "sb3_ppo":
        from agents.sb3_agent import SB3Agent

        return SB3Agent.from_file(path, device=device, name=name, trust=kw.get("trust", False))
    if name == "search":
        from agents.search_agent import SearchAgent

        kw.setdefault("k", 16)
        return SearchAgent.from_checkpoint(path, device=device, name=name, **kw)
    from agents.trm_agent import TRMAgent

    kw.setdefault("halting", name in HALTING)
    agent = TRMAgent.from_checkpoint(path, device=device, kind=CHECKPOINT_OF.get(name, name), name=name, **kw)
    if name == "trm+halt" and not agent.cfg.halting:
        raise ValueError(f"agent 'trm+halt': {path} was trained without a halting head (--halting false); leave the agent out")
    return agent
