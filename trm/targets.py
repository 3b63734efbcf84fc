"""Deep Improvement Supervision targets: a path from the puzzle to its solution.

A path is ``targets (n_sup, B, 81)``: ``targets[s - 1]`` is the answer that supervision
step ``s`` is trained to produce. Cells are the solution's digit where revealed and 0
(undecided) elsewhere; givens are always revealed. Both generators reveal nested sets
of blanks, so the Hamming distance to the solution never increases along the path,
and the last target is the solution itself.

With ``nb`` blanks, the linear schedule reveals ``k_s = ceil(s * nb / n_sup)`` of them
at step ``s`` (the masking rate of a discrete diffusion falling linearly to 0).
"""

from __future__ import annotations

import numpy as np
import torch

from envs import sudoku


def _quota(blank: torch.Tensor, n_sup: int) -> torch.Tensor:
    """``k_s`` for s = 1..n_sup, shape ``(n_sup, B)``."""
    nb = blank.sum(-1)
    s = torch.arange(1, n_sup + 1, device=blank.device)[:, None]
    return torch.div(s * nb[None] + n_sup - 1, n_sup, rounding_mode="floor")


def _reveal_more(hidden: torch.Tensor, need: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mask of ``need[b]`` cells chosen uniformly at random among ``hidden[b]``."""
    priority = torch.rand(hidden.shape, generator=generator, device=hidden.device)
    priority = priority.masked_fill(~hidden, 2.0)
    rank = priority.argsort(-1).argsort(-1)
    return hidden & (rank < need[:, None])


def linear_path(
    puzzle: torch.Tensor, solution: torch.Tensor, n_sup: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Reveal a random growing subset of the blanks: ``k_s`` of them at step ``s``.

    ``puzzle`` and ``solution`` are ``(B, 81)`` integer tensors; returns ``(n_sup, B, 81)`` int64.
    """
    blank = puzzle == 0
    priority = torch.rand(puzzle.shape, generator=generator, device=puzzle.device).masked_fill(~blank, 2.0)
    rank = priority.argsort(-1).argsort(-1)  # blanks get ranks 0..nb-1 in random order
    reveal = blank[None] & (rank[None] < _quota(blank, n_sup)[:, :, None])
    return torch.where(reveal | ~blank[None], solution[None], 0).long()


def rules_path(
    puzzle: torch.Tensor, solution: torch.Tensor, n_sup: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Reveal what one more round of naked and hidden singles deduces, step by step.

    Each step applies one (non-cascaded) round of singles to the previous target; when
    that reveals fewer than the linear quota ``k_s`` (propagation stalls, as on puzzles
    that need guessing), random blanks are added to reach it, which also makes the last
    step the full solution. Deductions from cells that agree with the unique solution
    are the solution's digits, so the path only ever reveals correct cells.
    """
    blank = puzzle == 0
    quota = _quota(blank, n_sup)
    sol = solution.long()
    current = puzzle.long()
    out = []
    for s in range(n_sup):
        deduced = sudoku.propagate_step(current.cpu().numpy().astype(np.int8))
        revealed = torch.from_numpy(deduced).to(puzzle.device) > 0
        need = (quota[s] - (revealed & blank).sum(-1)).clamp(min=0)
        revealed = revealed | _reveal_more(blank & ~revealed, need, generator)
        current = torch.where(revealed, sol, 0)
        out.append(current)
    return torch.stack(out)


PATHS = {"linear": linear_path, "rules": rules_path}
