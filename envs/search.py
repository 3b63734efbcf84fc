"""Compiled Sudoku search: singles propagation, fewest-candidates branching, generation.

Everything here is numba-compiled and works on flat ``int8[81]`` grids (0 = blank).
Candidates are bit masks: bit ``d`` (1..9) set means digit ``d`` is still allowed.

Propagation repeats two rules until neither fires:

* naked single: a blank cell with exactly one candidate takes it;
* hidden single: a digit with exactly one possible cell in a unit goes there.

A cell with no candidate, or a digit with no place in a unit that lacks it, is a
contradiction. When propagation stalls the search branches on the blank cell with
the fewest candidates (lowest index on ties), trying its digits in increasing order
(or in random order, for generating full grids).

*Guesses* count the trial placements made at branch points. The rating of a puzzle
is the number of guesses the search makes to find its solutions and prove there are
no more (a search with ``limit=2``): 0 exactly when singles alone solve it.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from envs.rules import BOX, COL, ROW, UNITS

_ROW = ROW.astype(np.int64)
_COL = COL.astype(np.int64)
_BOX = BOX.astype(np.int64)
_UNITS = UNITS.astype(np.int64)
_ALL = np.int64(0x3FE)  # bits 1..9


@njit(cache=True, inline="always")
def _popcount(x):
    c = 0
    while x:
        x &= x - 1
        c += 1
    return c


@njit(cache=True, inline="always")
def _low_digit(bit):
    d = 0
    while bit > 1:
        bit >>= 1
        d += 1
    return d


@njit(cache=True)
def _masks(g, rows, cols, boxes):
    """Fill the used-digit masks of every unit; False when two givens clash."""
    rows[:] = 0
    cols[:] = 0
    boxes[:] = 0
    for i in range(81):
        v = g[i]
        if v:
            b = np.int64(1) << v
            if (rows[_ROW[i]] | cols[_COL[i]] | boxes[_BOX[i]]) & b:
                return False
            rows[_ROW[i]] |= b
            cols[_COL[i]] |= b
            boxes[_BOX[i]] |= b
    return True


@njit(cache=True)
def _propagate(g, rows, cols, boxes):
    """Apply naked and hidden singles to ``g`` in place until a fixed point.

    Returns False on a contradiction. ``rows/cols/boxes`` must hold the masks of ``g``.
    """
    changed = True
    while changed:
        changed = False
        for i in range(81):
            if g[i] == 0:
                cand = _ALL & ~(rows[_ROW[i]] | cols[_COL[i]] | boxes[_BOX[i]])
                if cand == 0:
                    return False
                if cand & (cand - 1) == 0:
                    g[i] = _low_digit(cand)
                    rows[_ROW[i]] |= cand
                    cols[_COL[i]] |= cand
                    boxes[_BOX[i]] |= cand
                    changed = True
        for u in range(27):
            if u < 9:
                used = rows[u]
            elif u < 18:
                used = cols[u - 9]
            else:
                used = boxes[u - 18]
            for d in range(1, 10):
                b = np.int64(1) << d
                if used & b:
                    continue
                count = 0
                pos = -1
                for k in range(9):
                    i = _UNITS[u, k]
                    if g[i] == 0 and not ((rows[_ROW[i]] | cols[_COL[i]] | boxes[_BOX[i]]) & b):
                        count += 1
                        pos = i
                if count == 0:
                    return False
                if count == 1:
                    g[pos] = d
                    rows[_ROW[pos]] |= b
                    cols[_COL[pos]] |= b
                    boxes[_BOX[pos]] |= b
                    used |= b
                    changed = True
    return True


@njit(cache=True)
def _pick(g, rows, cols, boxes):
    """The blank cell with the fewest candidates and its mask; (-1, 0) when full."""
    best = -1
    best_n = 10
    best_mask = np.int64(0)
    for i in range(81):
        if g[i] == 0:
            cand = _ALL & ~(rows[_ROW[i]] | cols[_COL[i]] | boxes[_BOX[i]])
            n = _popcount(cand)
            if n < best_n:
                best, best_n, best_mask = i, n, cand
                if n == 2:
                    break
    return best, best_mask


@njit(cache=True)
def search(puzzle, limit, solution_out, randomize):
    """Count solutions of ``puzzle`` up to ``limit``; return ``(count, guesses)``.

    The first solution found is written to ``solution_out``. With ``randomize``
    the digits of a branch cell are tried in random order (numba's RNG).
    """
    rows = np.zeros(9, np.int64)
    cols = np.zeros(9, np.int64)
    boxes = np.zeros(9, np.int64)
    stack = np.empty((82, 81), np.int8)
    cell = np.empty(82, np.int64)
    rem = np.empty(82, np.int64)
    work = puzzle.copy()
    if not _masks(work, rows, cols, boxes):
        return 0, 0
    count = 0
    guesses = 0
    depth = 0
    while True:
        if _propagate(work, rows, cols, boxes):
            c, mask = _pick(work, rows, cols, boxes)
            if c < 0:
                count += 1
                if count == 1:
                    solution_out[:] = work
                if count >= limit:
                    break
            else:
                stack[depth, :] = work
                cell[depth] = c
                rem[depth] = mask
                depth += 1
        while depth > 0 and rem[depth - 1] == 0:
            depth -= 1
        if depth == 0:
            break
        m = rem[depth - 1]
        if randomize:
            k = np.random.randint(_popcount(m))
            for _ in range(k):
                m &= m - 1
        bit = m & -m
        rem[depth - 1] ^= bit
        work[:] = stack[depth - 1]
        work[cell[depth - 1]] = _low_digit(bit)
        guesses += 1
        _masks(work, rows, cols, boxes)
    return count, guesses


@njit(cache=True, parallel=True)
def search_batch(puzzles, limit):
    """:func:`search` over ``puzzles (n, 81)``, in parallel over the cores: returns ``counts, guesses, first solutions``."""
    n = puzzles.shape[0]
    counts = np.zeros(n, np.int64)
    guesses = np.zeros(n, np.int64)
    sols = np.zeros((n, 81), np.int8)
    for k in prange(n):
        counts[k], guesses[k] = search(puzzles[k], limit, sols[k], False)
    return counts, guesses, sols


@njit(cache=True)
def singles_round(grids):
    """One round of naked and hidden singles on each grid of ``(n, 81)``, not cascaded.

    Every single visible in the *current* grid is placed at once; nothing deduced
    from a placement of this round is used in the same round. Grids with a
    contradiction are returned unchanged. Returns the new grids.
    """
    out = grids.copy()
    rows = np.zeros(9, np.int64)
    cols = np.zeros(9, np.int64)
    boxes = np.zeros(9, np.int64)
    for k in range(grids.shape[0]):
        g = grids[k]
        if not _masks(g, rows, cols, boxes):
            continue
        for i in range(81):
            if g[i] == 0:
                cand = _ALL & ~(rows[_ROW[i]] | cols[_COL[i]] | boxes[_BOX[i]])
                if cand != 0 and cand & (cand - 1) == 0:
                    out[k, i] = _low_digit(cand)
        for u in range(27):
            for d in range(1, 10):
                b = np.int64(1) << d
                count = 0
                pos = -1
                for j in range(9):
                    i = _UNITS[u, j]
                    if g[i] == d:
                        count = 2
                        break
                    if g[i] == 0 and not ((rows[_ROW[i]] | cols[_COL[i]] | boxes[_BOX[i]]) & b):
                        count += 1
                        pos = i
                if count == 1:
                    out[k, pos] = d
    return out


@njit(cache=True)
def _generate_chunk(puzzles, solutions, ratings, min_clues, max_clues, dig_low, dig_high, min_rating, max_rating, seed,
                    max_tries):
    """Fill ``puzzles``, ``solutions``, ``ratings`` (one chunk, in order) from numba's RNG seeded with ``seed``.

    For each puzzle: a random full grid (randomized search on the empty grid), then
    cells are emptied in random order while the puzzle keeps a unique solution and a
    rating <= ``max_rating``, down to a clue target drawn uniformly in
    ``[dig_low, dig_high]`` (``dig_low == dig_high == 17`` digs to a minimal puzzle).
    The result is kept when its clue count and rating lie inside the bounds, otherwise
    a new grid is tried. Returns the attempts used, or -1 when ``max_tries`` ran out.
    """
    np.random.seed(seed)
    empty = np.zeros(81, np.int8)
    scratch = np.zeros(81, np.int8)
    full = np.zeros(81, np.int8)
    tries = 0
    k = 0
    while k < puzzles.shape[0]:
        tries += 1
        if tries > max_tries:
            return -1
        search(empty, 1, full, True)
        target = np.random.randint(dig_low, dig_high + 1)
        p = full.copy()
        clues = 81
        order = np.random.permutation(81)
        for j in range(81):
            if clues <= target:
                break
            i = order[j]
            v = p[i]
            p[i] = 0
            cnt, g = search(p, 2, scratch, False)
            if cnt != 1 or g > max_rating:
                p[i] = v
            else:
                clues -= 1
        cnt, g = search(p, 2, scratch, False)
        if cnt == 1 and min_clues <= clues <= max_clues and min_rating <= g <= max_rating:
            puzzles[k] = p
            solutions[k] = full
            ratings[k] = g
            k += 1
    return tries


GENERATE_CHUNK = 8  # puzzles per independently seeded chunk: the output does not depend on the thread count


@njit(cache=True, parallel=True)
def generate_kernel(n, min_clues, max_clues, dig_low, dig_high, min_rating, max_rating, seeds, max_tries):
    """Generate ``n`` puzzles with a unique solution, clues and rating inside the bounds.

    The puzzles are made in chunks of :data:`GENERATE_CHUNK`, chunk ``c`` from its own
    seed ``seeds[c]`` (see :func:`_generate_chunk`), in parallel over the cores; so the
    same seeds give the same puzzles on any machine, and the first chunks of a larger
    ``n`` are the puzzles of a smaller one. Returns ``puzzles (n, 81)``,
    ``solutions (n, 81)``, ``ratings (n,)`` and the attempts of each chunk (-1 where a
    chunk ran out of its ``max_tries``).
    """
    puzzles = np.zeros((n, 81), np.int8)
    solutions = np.zeros((n, 81), np.int8)
    ratings = np.zeros(n, np.int64)
    chunks = (n + GENERATE_CHUNK - 1) // GENERATE_CHUNK
    tries = np.zeros(chunks, np.int64)
    for c in prange(chunks):
        a, b = c * GENERATE_CHUNK, min(n, (c + 1) * GENERATE_CHUNK)
        tries[c] = _generate_chunk(puzzles[a:b], solutions[a:b], ratings[a:b], min_clues, max_clues, dig_low, dig_high,
                                   min_rating, max_rating, seeds[c], max_tries)
    return puzzles, solutions, ratings, tries
