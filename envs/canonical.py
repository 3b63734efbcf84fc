"""Canonical form of a solution grid under the Sudoku symmetries, to find sets that share a grid.

Two full grids are *equivalent* when one maps to the other by the validity-preserving
symmetries of :mod:`envs.augmentation`: a transposition, permutations of the bands and
of the rows inside each band, of the stacks and of the columns inside each stack, and a
relabeling of the digits (2 x 6^8 x 9! = 1,218,998,108,160 maps). The canonical form is
the lexicographically smallest of all equivalent grids read row by row (the *minlex*
form), so that ``canonical(a) == canonical(b)`` exactly when ``a`` and ``b`` are
equivalent.

How it is found without trying every map. Fix the transposition ``t``, the row ``r0``
that becomes row 0, and the column order ``c`` (stack order and columns inside stacks,
6^4 = 1296 choices). The smallest relabeling makes row 0 read 1..9, which fixes the
digit map ``m``. Two rows of a grid never share a digit in one column, so two distinct
rows compare at their first cell: the smallest arrangement of the remaining rows puts
next the other two rows of ``r0``'s band in order of ``m[g[r, c[0]]]``, then the band
whose smallest first cell is smaller, each band's rows again in that order. So the
minimum runs over 2 x 9 x 1296 = 23,328 candidates, each compared to the best so far
cell by cell and dropped at its first larger cell.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from numba import njit, prange

_PERM3 = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]], np.int64)


@njit(cache=True)
def _column_orders() -> np.ndarray:
    """``(1296, 9)``: every column order that keeps stacks together."""
    out = np.empty((1296, 9), np.int64)
    k = 0
    for sp in range(6):
        for a in range(6):
            for b in range(6):
                for d in range(6):
                    inner = (a, b, d)
                    for s in range(3):
                        stack = _PERM3[sp, s]
                        p = _PERM3[inner[s]]
                        for j in range(3):
                            out[k, 3 * s + j] = 3 * stack + p[j]
                    k += 1
    return out


@njit(cache=True, inline="always")
def _other_bands(first: np.ndarray, b0: int, bands: np.ndarray, rows: np.ndarray) -> None:
    """Rows 3..8 of the smallest arrangement: the two bands other than ``b0``, the one with the
    smaller first cell first, each band's rows by their first cell (``first[r]``)."""
    n = 0
    for b in range(3):
        if b != b0:
            bands[n] = b
            n += 1
    mins0 = min(first[3 * bands[0]], first[3 * bands[0] + 1], first[3 * bands[0] + 2])
    mins1 = min(first[3 * bands[1]], first[3 * bands[1] + 1], first[3 * bands[1] + 2])
    if mins1 < mins0:
        bands[0], bands[1] = bands[1], bands[0]
    for q in range(2):
        b = bands[q]
        r_a, r_b, r_c = 3 * b, 3 * b + 1, 3 * b + 2
        if first[r_b] < first[r_a]:
            r_a, r_b = r_b, r_a
        if first[r_c] < first[r_b]:
            r_b, r_c = r_c, r_b
        if first[r_b] < first[r_a]:
            r_a, r_b = r_b, r_a
        rows[3 + 3 * q], rows[4 + 3 * q], rows[5 + 3 * q] = r_a, r_b, r_c


@njit(cache=True)
def _minlex(g: np.ndarray, orders: np.ndarray, best: np.ndarray) -> None:
    """Write the minlex form of the full grid ``g (81,)`` into ``best (81,)``."""
    grid = np.empty((2, 9, 9), np.int64)
    for i in range(9):
        for j in range(9):
            grid[0, i, j] = g[9 * i + j]
            grid[1, j, i] = g[9 * i + j]
    m = np.empty(10, np.int64)
    rows = np.empty(9, np.int64)
    first = np.empty(9, np.int64)
    bands = np.empty(3, np.int64)
    have = False
    for t in range(2):
        for r0 in range(9):
            b0 = r0 // 3
            for k in range(orders.shape[0]):
                c = orders[k]
                for j in range(9):
                    m[grid[t, r0, c[j]]] = j + 1
                # row 1 is the smaller (by first cell) of the other two rows of r0's band:
                # compare it with the best row 1 before arranging the rest
                x, y = 3 * b0 + (r0 - 3 * b0 + 1) % 3, 3 * b0 + (r0 - 3 * b0 + 2) % 3
                if m[grid[t, y, c[0]]] < m[grid[t, x, c[0]]]:
                    x, y = y, x
                if have:
                    cmp = 0
                    for j in range(9):
                        v = m[grid[t, x, c[j]]]
                        w = best[9 + j]
                        if v != w:
                            cmp = -1 if v < w else 1
                            break
                    if cmp > 0:
                        continue
                for r in range(9):
                    first[r] = m[grid[t, r, c[0]]]
                rows[0] = r0
                rows[1], rows[2] = x, y
                _other_bands(first, b0, bands, rows)
                # compare rows 1..8 with the best so far (row 0 is always 1..9)
                if not have:
                    for i in range(9):
                        best[i] = i + 1
                    for i in range(1, 9):
                        for j in range(9):
                            best[9 * i + j] = m[grid[t, rows[i], c[j]]]
                    have = True
                    continue
                better = False
                for i in range(1, 9):
                    done = False
                    for j in range(9):
                        v = m[grid[t, rows[i], c[j]]]
                        w = best[9 * i + j]
                        if v != w:
                            better = v < w
                            done = True
                            break
                    if done:
                        break
                if better:
                    for i in range(1, 9):
                        for j in range(9):
                            best[9 * i + j] = m[grid[t, rows[i], c[j]]]


@njit(cache=True, parallel=True)
def _minlex_batch(grids: np.ndarray, orders: np.ndarray) -> np.ndarray:
    out = np.empty_like(grids)
    for k in prange(grids.shape[0]):
        _minlex(grids[k], orders, out[k])
    return out


_ORDERS: np.ndarray | None = None


def canonical(grids: Any) -> np.ndarray:
    """The minlex form of each full solution grid: ``int8 (n, 81)`` for ``(n, 81)``, ``(81,)`` for one.

    ``grids`` must be valid full grids (every cell 1..9, no conflict); anything else raises
    ``ValueError``, since only a solution grid has a symmetry class worth comparing.
    """
    global _ORDERS
    from envs.rules import conflict_mask  # local: envs.rules imports nothing from here

    g = np.asarray(grids)
    single = g.shape in ((81,), (9, 9))
    flat = np.ascontiguousarray(g.reshape(-1, 81), dtype=np.int8) if g.size % 81 == 0 and g.size else None
    if flat is None or (g.ndim > 1 and g.shape[-1] not in (81, 9)):
        raise ValueError(f"canonical() takes full grids shaped (81,), (9, 9) or (n, 81), got shape {g.shape}")
    bad = np.flatnonzero(((flat < 1) | (flat > 9)).any(-1) | conflict_mask(flat).any(-1))
    if bad.size:
        raise ValueError(f"grid [{int(bad[0])}] is not a full valid solution grid")
    if _ORDERS is None:
        _ORDERS = _column_orders()
    out = _minlex_batch(flat, _ORDERS)
    return out[0] if single else out


def grid_hash(solutions: Any) -> np.ndarray:
    """``uint64 (n,)``: a 64-bit hash (BLAKE2b) of each grid's minlex form, equal for equivalent grids.

    With about 5.5e9 classes of grids, two inequivalent grids share a hash with
    probability about 2^-64 per pair.
    """
    if np.asarray(solutions).size == 0:
        return np.zeros(0, np.uint64)
    forms = canonical(np.asarray(solutions).reshape(-1, 81))
    return np.array([int.from_bytes(hashlib.blake2b(f.tobytes(), digest_size=8).digest(), "little") for f in forms],
                    dtype=np.uint64)
