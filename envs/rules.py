"""Sudoku geometry and the rules arithmetic shared by every backend.

A grid is a flat vector of 81 cells in row-major order, holding 0 for an
undecided (blank) cell and 1..9 for a digit. Batches add leading dimensions:
``(..., 81)``.

The functions here are written once and run on numpy arrays *and* torch tensors:
they only use indexing, comparison, ``sum``/``any`` over the last axis and
``matmul``. The lookup tables they need come from :func:`tables`, built for
the backend (and device) of the caller.

Conflict rule, for a cell ``i`` holding digit ``d > 0``::

    conflict[i] = exists unit U containing i with  #{j in U : grid[j] = d} > 1

where the 27 units are the 9 rows, 9 columns and 9 boxes. With the unit
incidence matrix ``M`` (27 x 81) and the one-hot grid ``E`` (81 x 10), the
per-unit digit counts are ``M @ E`` (27 x 10).
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
#: ``CELL_UNITS[i]`` are the three units (row, column, box) that contain cell ``i``.
CELL_UNITS = np.stack([ROW, 9 + COL, 18 + BOX], axis=1).astype(np.int64)


def _incidence() -> np.ndarray:
    m = np.zeros((27, 81), dtype=np.float32)
    for u in range(27):
        m[u, UNITS[u]] = 1.0
    return m


def tables(backend: str = "numpy", device: Any = None) -> dict[str, Any]:
    """Lookup tables for :func:`conflict_mask`, as numpy arrays or torch tensors on ``device``."""
    t = {
        "eye": np.eye(10, dtype=np.float32),
        "incidence_t": _incidence().T.copy(),  # (81, 27)
        "cell_units": CELL_UNITS,
    }
    if backend == "numpy":
        return t
    import torch

    return {k: torch.as_tensor(v, device=device) for k, v in t.items()}


_NUMPY_TABLES = tables("numpy")


def conflict_mask(grid: Any, tab: dict[str, Any] | None = None) -> Any:
    """Boolean mask ``(..., 81)``: True where a filled cell repeats its digit in a row, column or box.

    ``grid`` is an integer array or tensor ``(..., 81)`` with values in 0..9.
    """
    tab = _NUMPY_TABLES if tab is None else tab
    onehot = tab["eye"][grid]  # (..., 81, 10)
    counts = (onehot.swapaxes(-1, -2) @ tab["incidence_t"]).swapaxes(-1, -2)  # (..., 27, 10)
    dup = counts[..., 1:] > 1.5  # (..., 27, 9): digit d+1 appears twice in unit
    per_cell = dup[..., tab["cell_units"], :].any(-2)  # (..., 81, 9)
    mine = onehot[..., 1:] > 0.5  # (..., 81, 9)
    return (per_cell & mine).any(-1)


def score(
    puzzle: Any,
    answer: Any,
    solution: Any | None,
    mode: str,
    tab: dict[str, Any] | None = None,
) -> tuple[Any, Any, Any]:
    """The potential ``C(a)`` of DESIGN section 3, per puzzle.

    Returns ``(score, solved, conflicts)``, each of shape ``(...)``:

    * ``mode="solution"``: ``score`` counts blank cells equal to the solution;
      ``solved`` means the answer equals the solution.
    * ``mode="verifier"``: ``score`` counts blank cells holding a digit that
      conflicts with nothing; ``solved`` means complete and conflict-free. The
      solution is not read (pass ``None``).

    ``conflicts`` is the number of filled cells in conflict, in both modes.
    """
    blank = puzzle == 0
    bad = conflict_mask(answer, tab)
    n_conflicts = bad.sum(-1)
    if mode == "solution":
        right = answer == solution
        return (right & blank).sum(-1), right.all(-1), n_conflicts
    if mode == "verifier":
        ok = (answer > 0) & ~bad
        return (ok & blank).sum(-1), ok.all(-1), n_conflicts
    raise ValueError(f"reward_mode must be 'solution' or 'verifier', got {mode!r}")
