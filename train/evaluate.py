"""Roll a TRM out on held-out puzzles and measure it with the environment's scoring.

Each step is one supervision step of the model (a deep recursion) and proposes the
decoded answer ``argmax l_w`` with guided logits ``l_w = l_u + w (l_c - l_u)``
(givens kept). A puzzle stops when the model halts (``q > 0``, when halting is asked
for) or after ``n_sup`` steps; the network runs only on puzzles still going and the
forward passes are read from the model's own counter. The answer at a puzzle's last
step is what is scored, with the potential ``C`` of the environment's reward
(:func:`envs.rules.score`); the puzzle's solution is never used to stop early.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs.rules import score
from trm.losses import advantage_margin, guided_logits
from trm.model import TRM


@torch.no_grad()
def evaluate(
    model: TRM,
    puzzles: np.ndarray,
    solutions: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    w: float = 1.0,
    halting: bool = False,
) -> dict[str, Any]:
    """Exact-match and cell accuracy, forward passes and per-step curves on ``puzzles (n, 81)``.

    Returns ``solve_rate``, ``cell_accuracy`` (on blanks), ``forward_passes_per_puzzle``,
    ``mean_steps``, ``dead_compute_share`` (steps that do not raise ``C`` while the
    answer is unsolved: the environment's reward before step cost is not positive),
    and per supervision step ``solve_rate_per_step``, ``cell_accuracy_per_step`` (each
    puzzle counted with its answer at that step, or its final one once stopped) and
    ``advantage_margin_per_step`` (mean over the blanks of the puzzles still running).
    """
    cfg = model.cfg
    was_training = model.training
    model.eval()
    n = len(puzzles)
    p = torch.as_tensor(np.asarray(puzzles), dtype=torch.long, device=device)
    sol = torch.as_tensor(np.asarray(solutions), dtype=torch.long, device=device)
    blank = p == 0
    blanks = blank.sum(-1).clamp(min=1).float()
    model.reset_counter()
    answer = p.clone()
    c_prev = torch.zeros(n, dtype=torch.long, device=device)
    solved = torch.zeros(n, dtype=torch.bool, device=device)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    steps = torch.zeros(n, device=device)
    y = z = None
    dead = 0
    curves: dict[str, list[float]] = {"solve_rate_per_step": [], "cell_accuracy_per_step": [], "advantage_margin_per_step": []}
    for s in range(1, cfg.n_sup + 1):
        idx = alive.nonzero().squeeze(-1)
        tokens = answer if cfg.input_mode == "previous_answer" else p
        y_in, z_in = model.initial_state(idx.numel()) if y is None else (y[idx], z[idx])
        out = model.step(tokens[idx], y_in, z_in, step=s if cfg.step_embedding else None)
        if y is None:
            y, z = out.y.clone(), out.z.clone()
        else:
            y[idx], z[idx] = out.y, out.z
        pred = guided_logits(out.logits_ref, out.logits, w).argmax(-1)
        answer[idx] = torch.where(p[idx] > 0, p[idx], pred)
        margin = advantage_margin(out.logits_ref, out.logits, sol[idx], w)
        bl = blank[idx]
        curves["advantage_margin_per_step"].append(float((margin * bl).sum() / bl.sum().clamp(min=1)))
        c_new, now_solved, _ = score(p, answer, sol, "solution")
        dead += int(((c_new <= c_prev) & ~now_solved & alive).sum())
        c_prev, solved, steps[idx] = c_new, now_solved, float(s)
        curves["solve_rate_per_step"].append(float(solved.float().mean()))
        curves["cell_accuracy_per_step"].append(float((c_new / blanks).mean()))
        if halting:
            alive[idx[out.q > 0]] = False
        if not alive.any():
            break
    model.train(was_training)
    return {
        "solve_rate": float(solved.float().mean()),
        "cell_accuracy": float((c_prev / blanks).mean()),
        "forward_passes_per_puzzle": model.net.sample_calls / n,
        "mean_steps": float(steps.mean()),
        "dead_compute_share": dead / float(steps.sum()),
        "puzzles": n,
        **curves,
    }
