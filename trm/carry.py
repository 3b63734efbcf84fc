"""The one recursion-step carry: step the live episodes of a batch and keep their latents ``(y, z)``.

Every loop over supervision steps (supervised deep supervision, the RL rollout, greedy
decoding, test-time search) holds the latents of ``N`` episodes and, at each step, runs
the network only on the rows still going::

    carry = Carry(model, n)                    # y, z = the model's initial state, (N, P + L, D)
    out = carry.step(model, tokens, rows, s)   # model.step on rows, then y[rows], z[rows] <- out.y, out.z

``out.y`` and ``out.z`` come back detached (deep supervision carries them without
gradients) and are stored in the carry's own dtype (float32 by default), so a step run
under bfloat16 autocast hands the next step the same precision as one run without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import torch

from trm.model import TRM


class _HasLatents(Protocol):
    y: torch.Tensor
    z: torch.Tensor


Out = TypeVar("Out", bound=_HasLatents)


class Carry:
    """Latents ``y, z (N, P + L, D)`` of ``N`` episodes, updated in place one supervision step at a time."""

    def __init__(self, model: TRM, n: int, dtype: torch.dtype = torch.float32) -> None:
        # views of the initial state until the first step (a learned one keeps its gradient there)
        self.y, self.z = model.initial_state(n)
        self.dtype, self._owned = dtype, False

    def __len__(self) -> int:
        return self.y.shape[0]

    def reset(self, model: TRM, rows: torch.Tensor) -> None:
        """Put the episodes ``rows`` (indices ``(R,)``) back to the model's initial state (a new puzzle in their slot)."""
        if not self._owned:  # every row still holds the initial state
            return
        y0, z0 = model.initial_state(len(rows))
        self.y[rows] = y0.detach().to(self.dtype)
        self.z[rows] = z0.detach().to(self.dtype)

    def state_dict(self) -> dict[str, torch.Tensor | bool]:
        """The latents and whether they are still the shared initial state (for a checkpoint)."""
        return {"y": self.y.clone(), "z": self.z.clone(), "owned": self._owned}

    def load_state_dict(self, d: dict[str, torch.Tensor | bool]) -> None:
        self.y, self.z, self._owned = d["y"], d["z"], bool(d["owned"])

    def step(
        self,
        model: TRM,
        tokens: torch.Tensor,
        rows: torch.Tensor,
        s: int | torch.Tensor,
        forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int | torch.Tensor], Out] | None = None,
    ) -> Out:
        """One supervision step of the episodes ``rows`` (indices ``(R,)``) from their input ``tokens (R, L)``.

        ``s`` is the 1-based step index (one for all rows, or ``(R,)``); it reaches the model only
        when it embeds the step (``cfg.step_embedding``). ``forward(tokens, y, z, s)`` replaces
        ``model.step`` for a module that wraps it (the RL policy, whose output also carries
        ``y`` and ``z``). Returns that step's output; the carry then holds its latents.
        """
        y, z = self.y[rows], self.z[rows]
        if forward is None:
            out = model.step(tokens, y, z, step=s if model.cfg.step_embedding else None)
        else:
            out = forward(tokens, y, z, s)
        if not self._owned:  # rows that have not stepped yet keep the initial state
            self.y, self.z = (t.detach().to(self.dtype).clone() for t in (self.y, self.z))
            self._owned = True
        self.y[rows] = out.y.detach().to(self.dtype)
        self.z[rows] = out.z.detach().to(self.dtype)
        return out
