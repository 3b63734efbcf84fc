"""Sudoku: parsing, rules, solving, rating, generation, files and augmentation.

Grids are numpy ``int8`` arrays of 81 cells in row-major order, 0 for blank and 1..9
for digits. Every function also takes a 9x9 array or a string, and most take a batch
``(n, 81)`` / ``(n, 9, 9)`` / list of strings, answering in kind. Bad input raises
``ValueError`` with a message that names the problem (and the line, for files).

Difficulty tiers (:data:`TIERS`), by clue count and *rating*, the number of guesses
the search of :mod:`envs.search` needs to find the solution and prove it unique
(0 means naked and hidden singles alone solve the puzzle):

========== ============ ========= ===================================================
tier       clues        rating    meaning
========== ============ ========= ===================================================
easy       36-45        0         many givens, singles solve it
medium     28-35        0         fewer givens, singles solve it
hard       17-35        1-23      dug to minimal, needs some guessing
extreme    17-35        >= 24     dug to minimal, needs as much guessing as top1465
========== ============ ========= ===================================================

``hard`` and ``extreme`` empty cells while the solution stays unique, down to a minimal
puzzle (no given can be removed), and keep it when its rating is inside the tier; about
2% of random minimal puzzles reach 24. The measured clue counts, ratings and rates are in
``docs/results/tiers.md`` (``train/tier_table.py``). The digger rarely reaches fewer
than 21 givens: low-clue puzzles come from the ``sudoku17`` collection
(:mod:`envs.real_sets`). The tier enters the seed: one seed gives unrelated grids in
different tiers.
"""

from __future__ import annotations

import builtins
import csv
import gzip
import os
import re
import stat
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from envs import augmentation, search
from envs.rules import conflict_mask, verified

_PLAIN = re.compile(r"[0-9.]*")  # cells with no separators or spaces
_CHARS = {**{str(d): d for d in range(10)}, ".": 0}


@dataclass(frozen=True)
class Tier:
    """Bounds of one difficulty tier: clues in ``[min_clues, max_clues]``, rating in ``[min_rating, max_rating]``."""

    min_clues: int
    max_clues: int
    min_rating: int
    max_rating: int
    #: the digger empties cells down to a clue target drawn in ``[dig_to, dig_from]``
    #: (``dig_from`` None: ``max_clues``); ``dig_to == dig_from == 17`` digs to a minimal puzzle
    dig_to: int
    dig_from: int | None = None


TIERS: dict[str, Tier] = {
    "easy": Tier(36, 45, 0, 0, 36),
    "medium": Tier(28, 35, 0, 0, 28),
    "hard": Tier(17, 35, 1, 23, 17, 17),
    "extreme": Tier(17, 35, 24, 10**9, 17, 17),
}


# ----------------------------------------------------------------------------- parsing


def parse(text: str | Sequence[str], *, check: bool = True) -> np.ndarray:
    """Parse one puzzle string to ``int8 (81,)``, or a list of strings to ``(n, 81)``.

    Digits 1-9 are givens; '.' and '0' are blanks. Whitespace and the board
    separators ``| - +`` are ignored, so :func:`format` output parses back.
    With ``check`` (default) givens that clash raise ``ValueError``.
    """
    if not isinstance(text, str):
        if not isinstance(text, Sequence) or not all(isinstance(t, str) for t in text):
            raise TypeError(f"parse expects a puzzle string or a sequence of them, got {type(text).__name__}: {text!r:.60}")
        return np.stack([parse(t, check=check) for t in text]) if len(text) else np.zeros((0, 81), np.int8)
    cells = []
    for ch in text:
        if ch in _CHARS:
            cells.append(_CHARS[ch])
        elif not (ch.isspace() or ch in "|-+"):
            raise ValueError(f"bad character {ch!r} at position {len(cells)} of puzzle {text.strip()[:90]!r}")
    if len(cells) != 81:
        raise ValueError(f"a puzzle has 81 cells, got {len(cells)} in {text.strip()[:90]!r}")
    grid = np.array(cells, dtype=np.int8)
    if check:
        _check_givens(grid)
    return grid


def format(grid: Any, *, board: bool = False) -> str | list[str]:  # noqa: A001 - public name from the design
    """Format a grid as an 81-character line ('.' for blanks), or as a 9x9 board.

    A batch gives a list of strings.
    """
    g = as_grids(grid)
    if g.ndim == 2:
        return [format(row, board=board) for row in g]
    chars = ["." if v == 0 else str(int(v)) for v in g]
    if not board:
        return "".join(chars)
    lines = []
    for r in range(9):
        if r in (3, 6):
            lines.append("------+-------+------")
        row = chars[9 * r : 9 * r + 9]
        lines.append(" | ".join(" ".join(row[3 * b : 3 * b + 3]) for b in range(3)))
    return "\n".join(lines)


def as_grids(x: Any, *, name: str = "grid") -> np.ndarray:
    """Convert a string, list of strings, ``(81,)``, ``(9, 9)``, ``(n, 81)`` or ``(n, 9, 9)`` to int8 ``(..., 81)``."""
    if isinstance(x, str) or (isinstance(x, (list, tuple)) and len(x) and isinstance(x[0], str)):
        return parse(x, check=False)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and a.size and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integers 0..9, got dtype {a.dtype}")
    if a.shape[-2:] == (9, 9):
        a = a.reshape(*a.shape[:-2], 81)
    if a.ndim not in (1, 2) or a.shape[-1] != 81:
        raise ValueError(f"{name} must have shape (81,), (9, 9), (n, 81) or (n, 9, 9), got {tuple(np.shape(x))}")
    if a.size and (a.min() < 0 or a.max() > 9):
        raise ValueError(f"{name} values must lie in 0..9, got range [{a.min()}, {a.max()}]")
    return a.astype(np.int8)


def _cell(i: int) -> str:
    return f"r{i // 9 + 1}c{i % 9 + 1}"


def _check_givens(grid: np.ndarray) -> None:
    bad = np.flatnonzero(conflict_mask(grid))
    if bad.size:
        cells = ", ".join(f"{_cell(i)}={grid[i]}" for i in bad[:6])
        raise ValueError(f"givens conflict: {cells}")


def _like(result: np.ndarray, x: Any) -> np.ndarray:
    """Reshape a flat result back to a 9x9 layout when the input came as 9x9."""
    shape = np.shape(x) if not isinstance(x, (str, list, tuple)) else ()
    return result.reshape(*result.shape[:-1], 9, 9) if shape[-2:] == (9, 9) else result


# ----------------------------------------------------------------------------- rules


def conflicts(grid: Any) -> np.ndarray:
    """Boolean mask, shaped like ``grid``: True where a digit repeats in its row, column or box."""
    g = as_grids(grid)
    return _like(conflict_mask(g), grid)


def is_solution(puzzle: Any, answer: Any) -> bool | np.ndarray:
    """True when ``answer`` is complete, conflict-free and keeps every given of ``puzzle``."""
    p, a = as_grids(puzzle, name="puzzle"), as_grids(answer, name="answer")
    ok = verified(p, a)
    return bool(ok) if ok.ndim == 0 else ok


# ----------------------------------------------------------------------------- search


def _search(puzzle: Any, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    g = as_grids(puzzle, name="puzzle")
    single = g.ndim == 1
    counts, guesses, sols = search.search_batch(np.ascontiguousarray(g.reshape(-1, 81)), int(limit))
    return counts, guesses, sols, single


def solve(puzzle: Any) -> np.ndarray | None | list[np.ndarray | None]:
    """The first solution found, shaped like ``puzzle``; None when it has none.

    A batch gives a list. With several solutions, one of them is returned; use
    :func:`count_solutions` to check uniqueness.
    """
    counts, _, sols, single = _search(puzzle, 1)
    out = [_like(s, puzzle) if c else None for c, s in zip(counts, sols, strict=True)]
    return out[0] if single else out


def unique_solutions(puzzles: Any) -> np.ndarray:
    """``int8 (n, 81)``: the one solution of each of ``puzzles (n, 81)``; ``ValueError`` naming the first without one."""
    g = as_grids(puzzles, name="puzzles").reshape(-1, 81)
    counts, _, sols = search.search_batch(np.ascontiguousarray(g), 2)
    bad = np.flatnonzero(counts != 1)
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"puzzles[{k}] has {'no' if counts[k] == 0 else 'several'} solutions; exactly one is required")
    return sols


def count_solutions(puzzle: Any, limit: int = 2) -> int | np.ndarray:
    """Number of solutions, counted up to ``limit`` (so ``limit`` means "at least that many")."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    counts, _, _, single = _search(puzzle, limit)
    return int(counts[0]) if single else counts


def rate(puzzle: Any) -> int | np.ndarray:
    """Guesses the search needs to solve ``puzzle`` and prove it unique; 0 when singles solve it.

    A puzzle whose givens conflict, that has no solution or that has several (the count
    of guesses proves uniqueness, so it is defined for proper puzzles only) has no rating:
    ``ValueError``.
    """
    counts, guesses, _, single = _search(puzzle, 2)
    g = as_grids(puzzle, name="puzzle").reshape(-1, 81)
    bad = np.flatnonzero(conflict_mask(g).any(-1) | (counts != 1))
    if bad.size:
        k = int(bad[0])
        what = ("givens conflict" if conflict_mask(g[k]).any() else
                "it has no solution" if counts[k] == 0 else "it has several solutions")
        raise ValueError(f"cannot rate puzzle{'' if single else f' [{k}]'}: {what}")
    return int(guesses[0]) if single else guesses


def propagate_step(grids: Any) -> np.ndarray:
    """One round of naked and hidden singles (not cascaded) on each grid; shaped like the input."""
    g = as_grids(grids)
    out = search.singles_round(np.ascontiguousarray(g.reshape(-1, 81)))
    return _like(out.reshape(g.shape), grids)


def generate(n: int, difficulty: str = "easy", seed: int = 0, *, max_tries: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` puzzles of a tier, each with exactly one solution.

    Returns ``puzzles, solutions``, both ``int8 (n, 81)``. The same seed gives the same puzzles.
    """
    if difficulty not in TIERS:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose one of {sorted(TIERS)}")
    for name, v in (("n", n), ("seed", seed)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    t = TIERS[difficulty]
    chunks = -(-n // search.GENERATE_CHUNK)
    max_tries = max(1000, 200 * search.GENERATE_CHUNK) if max_tries is None else max_tries
    # the tier enters the seed: one seed gives unrelated grids in different tiers
    seeds = np.random.SeedSequence([seed, zlib.crc32(difficulty.encode())]).generate_state(max(chunks, 1)).astype(np.int64)
    hi = t.max_clues if t.dig_from is None else t.dig_from
    p, s, _, tries = search.generate_kernel(n, t.min_clues, t.max_clues, t.dig_to, hi, t.min_rating, t.max_rating, seeds,
                                            max_tries)
    if (tries < 0).any():
        raise RuntimeError(f"generating {n} {difficulty} puzzles took more than {max_tries} attempts for one chunk of "
                           f"{search.GENERATE_CHUNK}; pass a larger max_tries")
    return p, s


# ----------------------------------------------------------------------------- files


def _read_lines(path: str | os.PathLike) -> tuple[str, list[str]]:
    """The file's lines, UTF-8 with or without a byte-order mark; other encodings raise ``ValueError`` naming the file."""
    path = os.fspath(path)
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read forever
        raise ValueError(f"{path}: not a regular file (a folder, FIFO or device); puzzles are read from plain files")
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: not a readable gzip file ({e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (undecodable byte at offset {e.start}); puzzle files are UTF-8") from None
    # lines end at "\n", "\r\n" or "\r" only: str.splitlines would also break at form feeds and other
    # separators, and the line numbers in error messages would no longer be those of an editor
    return path, re.split(r"\r\n|\r|\n", text)


def _parse_line(text: str, path: str, lineno: int, check: bool = True) -> np.ndarray:
    try:
        return parse(text, check=check)
    except ValueError as e:
        raise ValueError(f"{path}:{lineno}: {e}") from None


def load(path: str | os.PathLike, *, solve: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read puzzles from a file; returns ``puzzles (n, 81)`` and ``solutions (n, 81)`` (int8).

    Formats, detected from the content:

    * Sudoku-Extreme CSV with header ``source,question,answer,rating`` ('.' blanks);
    * tdoku's ``puzzle:count[:solution]``, one per line;
    * one 81-character puzzle per line.

    A path ending in ``.gz`` is read through gzip.

    Blank lines and lines starting with '#' are skipped. Every puzzle must have
    exactly one solution: a file that declares another count, a given solution that
    is not a solution of its puzzle, or (with ``solve``) a puzzle whose search finds
    none or several raises ``ValueError`` naming the file and line. With
    ``solve=False`` puzzles without a solution in the file are not searched and
    ``solutions`` is None when the file holds none (a label-free source).
    """
    path, lines = _read_lines(path)
    first = next((ln for ln in lines if ln.strip() and not ln.startswith("#")), "")
    puzzles: list[str] = []
    solutions: list[str | None] = []
    linenos: list[int] = []
    header = [h.strip().lower() for h in next(csv.reader([first]))] if "," in first else []
    if "question" in header or "answer" in header:  # a CSV: columns found by their names, in any order
        if "question" not in header or "answer" not in header:
            raise ValueError(f"{path}:1: CSV header must name 'question' and 'answer', got {first!r}")
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise ValueError(f"{path}:1: CSV header names {', '.join(map(repr, repeated))} more than once")
        qi, ai = header.index("question"), header.index("answer")
        start = lines.index(first) + 1
        for lineno, row in enumerate(csv.reader(lines[start:]), start=start + 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{lineno}: expected {len(header)} fields, got {len(row)}")
            puzzles.append(row[qi])
            solutions.append(row[ai])
            linenos.append(lineno)
    else:
        for lineno, line in enumerate(lines, start=1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = s.split(":")
            puzzles.append(parts[0])
            sol = None
            if len(parts) > 1:
                try:
                    declared = int(parts[1])
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: solution count must be an integer, got {parts[1]!r}") from None
                if declared != 1:
                    raise ValueError(
                        f"{path}:{lineno}: puzzle has {declared} solutions (declared in the file); exactly one is required"
                    )
                if len(parts) > 2:
                    sol = parts[2]
            solutions.append(sol)
            linenos.append(lineno)
    if not puzzles:
        raise ValueError(f"{path}: no puzzles found")
    P = _parse_column(puzzles, linenos, path)
    given = [k for k, s in enumerate(solutions) if s is not None]
    parsed = list(_parse_column([solutions[k] for k in given], [linenos[k] for k in given], path)) if given else []
    grids: list[np.ndarray | None] = [None] * len(puzzles)
    for k, s in zip(given, parsed, strict=True):
        grids[k] = s
    return _checked(P, grids, linenos, path, solve)


def _parse_column(texts: list[str], linenos: list[int], path: str) -> np.ndarray:
    """``(n, 81)`` int8 grids from a file's puzzle strings, givens not yet checked.

    When every string is 81 plain characters (digits and '.'), all are converted in one
    numpy call; otherwise line by line, so that an error names its line.
    """
    stripped = [t.strip() for t in texts]
    joined = "".join(stripped)
    if len(joined) == 81 * len(stripped) and builtins.all(len(t) == 81 for t in stripped) and _PLAIN.fullmatch(joined):
        codes = np.frombuffer(joined.encode("ascii"), np.uint8).reshape(-1, 81)
        return np.where(codes == ord("."), 0, codes - ord("0")).astype(np.int8)
    return np.stack([_parse_line(t, path, k, check=False) for t, k in zip(texts, linenos, strict=True)])


def _checked(
    P: np.ndarray, solutions: list[np.ndarray | None], linenos: list[int], path: str, solve: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check a file's puzzles ``P (n, 81)`` and given solutions in batched calls; search the rest when ``solve``."""
    bad = np.flatnonzero(conflict_mask(P).any(-1))
    if bad.size:
        try:
            _check_givens(P[bad[0]])
        except ValueError as e:
            raise ValueError(f"{path}:{linenos[bad[0]]}: {e}") from None
    given = [k for k, s in enumerate(solutions) if s is not None]
    if given:
        ok = is_solution(P[given], np.stack([solutions[k] for k in given]))
        for k in np.asarray(given)[~np.atleast_1d(ok)][:1]:
            raise ValueError(f"{path}:{linenos[k]}: the given solution does not solve the puzzle")
    if solve:
        counts, _, found = search.search_batch(P, 2)
        for k in np.flatnonzero(counts != 1):
            what = "no solution" if counts[k] == 0 else "several solutions"
            raise ValueError(f"{path}:{linenos[k]}: puzzle has {what}; exactly one is required")
        S = np.stack([s if s is not None else found[k] for k, s in enumerate(solutions)])
        return P, S
    if builtins.all(s is None for s in solutions):
        return P, None
    if builtins.any(s is None for s in solutions):
        k = next(k for k, s in enumerate(solutions) if s is None)
        raise ValueError(f"{path}:{linenos[k]}: some lines carry a solution and this one does not; use solve=True")
    return P, np.stack(solutions)


# ----------------------------------------------------------------------------- augmentation


def augment(
    puzzles: Any, solutions: Any | None = None, *, seed: int | np.random.Generator | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Apply one random validity-preserving symmetry per puzzle (the same to its solution).

    Digit relabeling, transposition, band and stack permutations, and row and column
    permutations inside them (see :mod:`envs.augmentation`). Returns the new puzzles,
    or ``(puzzles, solutions)`` when solutions are given.
    """
    p = as_grids(puzzles, name="puzzles")
    flat = p.reshape(-1, 81)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    src, digit = augmentation.random_symmetry(flat.shape[0], gen)
    grids = [torch.from_numpy(flat.astype(np.int64))]
    if solutions is not None:
        s = as_grids(solutions, name="solutions")
        if s.shape != p.shape:
            raise ValueError(f"puzzles and solutions differ in shape: {p.shape} vs {s.shape}")
        grids.append(torch.from_numpy(s.reshape(-1, 81).astype(np.int64)))
    out = [g.numpy().astype(np.int8).reshape(p.shape) for g in augmentation.apply(src, digit, *grids)]
    return out[0] if solutions is None else (out[0], out[1])
