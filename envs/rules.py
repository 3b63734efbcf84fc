"""Sudoku geometry and the rules arithmetic shared by every backend.

A grid is a flat vector of 81 cells in row-major order, holding 0 for an
undecided (blank) cell and 1..9 for a digit. Batches add leading dimensions:
``(..., 81)``.

The functions here take numpy arrays *and* torch tensors (on any device) and
answer in kind.

Conflict rule, for a cell ``i`` holding digit ``d > 0``::

    conflict[i] = exists unit U containing i with  #{j in U : grid[j] = d} > 1

where the 27 units are the 9 rows, 9 columns and 9 boxes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

ROW = np.repeat(np.arange(9), 9)
COL = np.tile(np.arange(9), 9)
BOX = (ROW // 3) * 3 + COL // 3

#: ``UNITS[u]`` are the 9 cell indices of unit ``u``: rows 0-8, columns 9-17, boxes 18-26.
UNITS = np.concatenate(
    [
        np.arange(81).reshape(9, 9),
        np.arange(81).reshape(9, 9).T,
        np.stack([np.flatnonzero(BOX == b) for b in range(9)]),
    ]
).astype(np.int64)


#: bit 0 of the 4-bit fields of digits 1..9 (field 0, blanks, left out)
_FIELD_LOW = sum(1 << (4 * d) for d in range(1, 10))


def _repeated(unit_sums: Any) -> Any:
    """Per packed unit sum, bit 0 of field ``d`` set when digit ``d`` appears at least twice."""
    return ((unit_sums >> 1) | (unit_sums >> 2) | (unit_sums >> 3)) & _FIELD_LOW


def conflict_mask(grid: Any) -> Any:
    """Boolean mask ``(..., 81)``: True where a filled cell repeats its digit in a row, column or box.

    ``grid`` is an integer numpy array or torch tensor ``(..., 81)`` with values in
    0..9; the mask comes back in kind (and on the tensor's device). numpy arrays and
    CPU tensors go through the compiled :func:`conflict_mask_compiled`; tensors on
    other devices through the batched tensor formula :func:`conflict_mask_packed`.
    The two agree exactly (a test checks it on random grids).
    """
    if isinstance(grid, np.ndarray):
        flat = np.ascontiguousarray(grid.reshape(-1, 81))
        return conflict_mask_compiled(flat).reshape(grid.shape)
    if grid.device.type == "cpu":
        import torch

        flat = grid.reshape(-1, 81).contiguous()
        return torch.from_numpy(conflict_mask_compiled(flat.numpy())).reshape(grid.shape)
    return conflict_mask_packed(grid)


_CELL_UNITS = np.stack([ROW, 9 + COL, 18 + BOX], axis=1).astype(np.int64)


@njit(cache=True, parallel=True)
def conflict_mask_compiled(grids: np.ndarray) -> np.ndarray:
    """:func:`conflict_mask` for a C-contiguous ``(n, 81)`` integer array, compiled with numba.

    Per grid, one pass marks for each unit the digits already seen and those seen
    twice (bit masks), a second pass flags the cells whose digit is repeated in one
    of their three units. Chunks of 64 grids run in parallel.
    """
    n = grids.shape[0]
    out = np.zeros((n, 81), np.bool_)
    for c in prange((n + 63) // 64):
        seen = np.zeros(27, np.int64)
        dup = np.zeros(27, np.int64)
        for j in range(64 * c, min(64 * c + 64, n)):
            seen[:] = 0
            dup[:] = 0
            for i in range(81):
                v = grids[j, i]
                if v:
                    b = np.int64(1) << v
                    for k in range(3):
                        u = _CELL_UNITS[i, k]
                        dup[u] |= seen[u] & b
                        seen[u] |= b
            for i in range(81):
                v = grids[j, i]
                if v:
                    hit = dup[_CELL_UNITS[i, 0]] | dup[_CELL_UNITS[i, 1]] | dup[_CELL_UNITS[i, 2]]
                    out[j, i] = (hit >> v) & 1
    return out


def conflict_mask_packed(grid: Any) -> Any:
    """:func:`conflict_mask` as batched array arithmetic (numpy or torch, any device).

    Counting in packed fields: a cell holding digit ``d`` weighs ``w = 2 ** (4 d)``,
    so the sum over a unit's 9 cells holds, in its 4-bit field ``d``, how many of
    them hold ``d`` (at most 9 < 16: fields never carry into each other). Rows,
    columns and boxes are sums over reshaped views, no gathers. A field >= 2 has one
    of its bits 1-3 set; folding them onto bit 0 gives the unit's repeated digits
    ``R``, and a cell conflicts when ``R & w != 0`` for one of its three units.
    """
    grid = grid.astype(np.int64, copy=False) if isinstance(grid, np.ndarray) else grid.long()
    lead = grid.shape[:-1]
    w = (1 << (4 * grid)).reshape(*lead, 9, 9)
    rc = _repeated(w.sum(-1))[..., :, None] | _repeated(w.sum(-2))[..., None, :]
    w3 = w.reshape(*lead, 3, 3, 3, 3)  # (band, row in band, stack, column in stack)
    box = _repeated(w3.sum(-1).sum(-2))[..., :, None, :, None] & w3
    return (((rc & w).reshape(*lead, 3, 3, 3, 3) | box).reshape(*lead, 81)) != 0


def verified(puzzle: Any, answer: Any) -> Any:
    """``(...)`` bool: ``answer (..., 81)`` is complete, conflict-free and keeps every given of ``puzzle (..., 81)``.

    For a puzzle with one solution this is exactly "``answer`` is the solution", checked
    by the rules alone. Numpy arrays and torch tensors alike (the result comes back in kind).
    """
    return (answer > 0).all(-1) & ~conflict_mask(answer).any(-1) & ((puzzle == 0) | (puzzle == answer)).all(-1)


def cell_scores(puzzle: Any, answer: Any, solution: Any | None, mode: str) -> tuple[Any, Any, Any]:
    """Per-cell terms of the potential: ``(cells (..., 81) bool, solved (...), conflicts (...))``.

    ``cells[i]`` is 1 when blank cell ``i`` counts towards ``C(a)`` (equals the solution, or
    with the verifier holds a digit that conflicts with nothing), so ``C(a) = cells.sum(-1)``
    and the reward splits into per-cell terms ``(cells' - cells) / B`` plus the shared
    solve bonus and step cost. Works on numpy arrays and torch tensors alike.
    """
    blank = puzzle == 0
    bad = conflict_mask(answer)
    n_conflicts = bad.sum(-1)
    if mode == "solution":
        right = answer == solution
        return right & blank, right.sum(-1) == 81, n_conflicts
    if mode == "verifier":
        ok = (answer > 0) & ~bad
        return ok & blank, ok.all(-1), n_conflicts
    raise ValueError(f"reward_mode must be 'solution' or 'verifier', got {mode!r}")


def score(
    puzzle: Any,
    answer: Any,
    solution: Any | None,
    mode: str,
) -> tuple[Any, Any, Any]:
    """The potential ``C(a)`` of the reward (``docs/design.md``, "The environment"), per puzzle.

    Returns ``(score, solved, conflicts)``, each of shape ``(...)``:

    * ``mode="solution"``: ``score`` counts blank cells equal to the solution;
      ``solved`` means the answer equals the solution.
    * ``mode="verifier"``: ``score`` counts blank cells holding a digit that
      conflicts with nothing; ``solved`` means complete and conflict-free. The
      solution is not read (pass ``None``).

    ``conflicts`` is the number of filled cells in conflict, in both modes.
    """
    cells, solved, n_conflicts = cell_scores(puzzle, answer, solution, mode)
    return cells.sum(-1), solved, n_conflicts
