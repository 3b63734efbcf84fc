"""A TRM, DIS, one-pass or RL-trained model from a checkpoint, acting one supervision step per env step."""

from __future__ import annotations

from typing import Any

import torch

from agents.base import AgentBase, make_action
from trm.carry import Carry
from trm.checkpoint import load_model
from trm.config import TRMConfig
from trm.losses import guided_logits
from trm.model import TRM, confidence

KINDS = ("trm", "dis", "onepass", "ppo_recursion", "expert_iteration")


class TRMAgent(AgentBase):
    """Greedy decoding of the guided logits ``l_w = l_u + w (l_c - l_u)``, ``w = guidance``.

    Each ``act`` runs one supervision step (a deep recursion) on the episodes still
    going, carrying ``(y, z)`` in the agent state. An episode halts after ``steps``
    supervision steps (``max_steps``; default the trained ``n_sup``), or earlier when ``halting`` is on and the Q head says so
    (``q > 0``), or when ``halt_threshold`` is set and the confidence statistic
    :func:`trm.model.confidence` of the new readout exceeds it (halting without a
    trained head: the no-RL control of learned halting). ``info`` carries ``forward_passes`` (from the model's counter), and the
    readouts ``logits_ref``/``logits`` of the episodes in ``info["rows"]``.

    Deeper than trained (``steps > n_sup``): a model that embeds the step index sees it clamped,
    every step past ``n_sup`` reading the embedding of step ``n_sup``; the others need nothing.
    """

    def __init__(
        self, model: TRM, *, w: float = 1.0, halting: bool = False, halt_threshold: float | None = None, name: str | None = None,
        steps: int | None = None,
    ) -> None:
        if steps is not None and steps < 1:
            raise ValueError(f"steps (supervision steps at test time) must be at least 1, got {steps}")
        self.model = model.eval()
        self.cfg: TRMConfig = model.cfg
        self.guidance = float(w)
        self.halting = halting
        self.halt_threshold = halt_threshold
        self.max_steps = steps or self.cfg.n_sup
        self.name = name or "trm"

    @classmethod
    def from_checkpoint(
        cls, path: str, *, device: str | torch.device = "cpu", kind: str | tuple[str, ...] = KINDS, ema: bool = True, **kw: Any
    ) -> TRMAgent:
        """Load the (EMA, when saved) weights of a ``train/train_trm.py``, ``train_dis.py``, ``train_onepass.py``
        ``ppo_recursion.py`` or ``expert_iteration.py`` run."""
        model, ck = load_model(path, kind, ema)
        kw.setdefault("name", ck["kind"])
        return cls(model.to(device), **kw)

    def reset(self, obs: dict[str, torch.Tensor]) -> dict[str, Any]:
        n = obs["answer"].shape[0]
        return {"carry": Carry(self.model, n), "step": 0, "active": torch.ones(n, dtype=torch.bool, device=obs["answer"].device)}

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        cfg, model = self.cfg, self.model
        s = state["step"] + 1
        active = state["active"]
        idx = active.nonzero().squeeze(-1)
        n = active.shape[0]
        tokens = model.input_tokens(obs["puzzle"], obs["answer"])
        before = model.net.sample_calls
        out = state["carry"].step(model, tokens[idx], idx, min(s, cfg.n_sup) if cfg.step_embedding else s)
        calls = (model.net.sample_calls - before) / max(1, idx.numel())
        answer = obs["answer"].clone()
        answer[idx] = torch.where(
            obs["puzzle"][idx] > 0, obs["puzzle"][idx], guided_logits(out.logits_ref, out.logits, self.guidance).argmax(-1)
        )
        halt = torch.zeros(n, dtype=torch.bool, device=answer.device)
        stop = (out.q > 0) if self.halting else torch.zeros(idx.numel(), dtype=torch.bool, device=answer.device)
        if self.halt_threshold is not None:
            stop = stop | (confidence(out.logits) > self.halt_threshold)
        halt[idx] = stop | (s >= self.max_steps)
        fp = torch.zeros(n, device=answer.device)
        fp[idx] = calls
        new_state = {**state, "step": s, "active": active & ~halt}
        info = {"forward_passes": fp, "rows": idx, "logits_ref": out.logits_ref, "logits": out.logits}
        return make_action(answer, halt), new_state, info
