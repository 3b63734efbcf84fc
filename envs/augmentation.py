"""Validity-preserving Sudoku symmetries, batched in torch (CPU or GPU).

A symmetry is a cell permutation ``src`` (81,) and a digit relabeling ``digit``
(10,) with ``digit[0] = 0``; applied to a grid ``g`` it gives
``g'[i] = digit[g[src[i]]]``. The cell permutations are built from

* a permutation of the three bands, and of the three rows inside each band;
* a permutation of the three stacks, and of the three columns inside each stack;
* an optional transposition.

Each of these maps rows to rows (or to columns), boxes to boxes, and so maps a
valid grid to a valid grid and a puzzle's unique solution to the transformed
puzzle's unique solution. The same transform must be applied to a puzzle and its
solution, which :func:`apply` does for any number of aligned grids.
"""

from __future__ import annotations

import torch


def _line_permutation(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``(n, 9)`` permutations of 0..8 that keep the three groups of three together."""
    groups = torch.rand(n, 3, generator=generator, device=device).argsort(-1)  # (n, 3)
    inner = torch.rand(n, 3, 3, generator=generator, device=device).argsort(-1)  # (n, 3, 3)
    return (groups[:, :, None] * 3 + inner).reshape(n, 9)


def random_symmetry(
    n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` random symmetries: ``src (n, 81)`` int64 and ``digit (n, 10)`` int64."""
    device = torch.device(device)
    rows = _line_permutation(n, generator, device)
    cols = _line_permutation(n, generator, device)
    src = rows[:, :, None] * 9 + cols[:, None, :]  # (n, 9, 9)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    src = torch.where(flip[:, None, None], src.transpose(1, 2), src).reshape(n, 81)
    digits = torch.rand(n, 9, generator=generator, device=device).argsort(-1) + 1
    digit = torch.cat([torch.zeros(n, 1, dtype=torch.long, device=device), digits], dim=1)
    return src, digit


def apply(src: torch.Tensor, digit: torch.Tensor, *grids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Apply the symmetries ``(src, digit)`` to each of ``grids``, all ``(n, 81)`` integer tensors."""
    return tuple(digit.gather(1, g.long().gather(1, src)).to(g.dtype) for g in grids)


def identity(n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` identity symmetries in the form of :func:`random_symmetry`."""
    device = torch.device(device)
    src = torch.arange(81, device=device).expand(n, 81).clone()
    return src, torch.arange(10, device=device).expand(n, 10).clone()


def inverse(src: torch.Tensor, digit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetries that undo ``(src, digit)``: ``apply(*inverse(s, d), *apply(s, d, g)) == g``.

    ``apply`` maps ``g`` to ``h[i] = digit[g[src[i]]]``, so ``g[j] = digit^-1[h[src^-1[j]]]``.
    """
    return src.argsort(-1), digit.argsort(-1)
