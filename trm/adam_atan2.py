"""Adam-atan2: Adam whose update ``m / (sqrt(v) + eps)`` is replaced by ``atan2(m, sqrt(v))``.

The optimizer the TRM code trains with. ``atan2(m, sqrt(v))`` equals ``m / sqrt(v)`` where
``|m| << sqrt(v)`` and saturates at ``pi / 2`` elsewhere, so there is no epsilon to tune and
the update is bounded even when ``v`` is tiny. Per parameter, at step ``t``:

    m <- beta1 m + (1 - beta1) g            v <- beta2 v + (1 - beta2) g^2
    theta <- theta (1 - lr lambda) - lr atan2(m / (1 - beta1^t), sqrt(v / (1 - beta2^t)))

with decoupled weight decay ``lambda`` as in AdamW.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class AdamAtan2(torch.optim.Optimizer):
    """Adam-atan2 with decoupled weight decay; ``params`` as for any ``torch.optim`` optimizer."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"AdamAtan2: need lr >= 0, weight_decay >= 0, betas in [0, 1); got {lr}, {weight_decay}, {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.mul_(1 - lr * wd)
                p.add_(torch.atan2(m / (1 - beta1**t), (v / (1 - beta2**t)).sqrt()), alpha=-lr)
        return loss
