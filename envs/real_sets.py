"""Real puzzle collections shipped with the package, each with one fixed train/test split by line.

Two collections that nobody on this project wrote (credits and licences in
``envs/data/README.md``):

============ ======= ====================== ======================================================
name         puzzles test lines (1-based)   what
============ ======= ====================== ======================================================
``sudoku17`` 39,158  35,159-39,158 (4,000)  17-clue puzzles (Gordon Royle's collection), CC BY 2.5
``top1465``  465     266-465 (200)          hard puzzles of the top1465 list
============ ======= ====================== ======================================================

Every script names them the same way (``--puzzles sudoku17``, ``puzzles="sudoku17:test"``):

* ``NAME`` or ``NAME:train``: the training part, the lines before the test lines, minus
  every line whose solution grid is equivalent (see :mod:`envs.canonical`) to the grid of
  a test puzzle of *any* collection;
* ``NAME:test``: the test lines, for evaluation only.

The canonical-grid hash of every line and the dropped training lines are computed once
by :func:`build_manifest` and stored in ``envs/data/grids.npz`` and
``envs/data/splits.json`` (a test recomputes both), so loading never canonicalizes the
39,158 grids.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
MANIFEST = DATA / "splits.json"
GRIDS = DATA / "grids.npz"
PARTS = ("train", "test")


@dataclass(frozen=True)
class RealSet:
    """One collection: its file in ``envs/data`` and the first line (1-based) of its test part."""

    file: str
    test_from: int
    credit: str


REAL_SETS: dict[str, RealSet] = {
    "sudoku17": RealSet("sudoku17.txt.gz", 35_159, "Gordon Royle, minimum Sudoku collection, University of Western Australia"),
    "top1465": RealSet("top1465.txt.gz", 266, "the top1465 list of hard puzzles (Guenter Stertenbrink's magictour collection)"),
}


def parse_spec(spec: str) -> tuple[str, str] | None:
    """``(name, part)`` for ``"sudoku17"``, ``"sudoku17:train"`` or ``"sudoku17:test"``; None for anything else.

    A name with an unknown part (``"sudoku17:dev"``) raises ``ValueError``.
    """
    name, _, part = str(spec).partition(":")
    if name not in REAL_SETS:
        return None
    part = part or "train"
    if part not in PARTS:
        raise ValueError(f"{spec!r}: unknown part {part!r} of {name}; choose {name}:train or {name}:test")
    return name, part


@functools.cache
def _read(name: str) -> np.ndarray:
    """Every puzzle of collection ``name`` in file order, ``int8 (n, 81)``, givens checked, not solved."""
    from envs import sudoku

    p, _ = sudoku.load(DATA / REAL_SETS[name].file, solve=False)
    return p


def _lines(name: str, part: str) -> np.ndarray:
    """The 1-based line numbers of ``part`` of ``name`` (the files hold one puzzle per line, no blanks)."""
    n, first = len(_read(name)), REAL_SETS[name].test_from
    if part == "test":
        return np.arange(first, n + 1)
    dropped = set(_manifest()["dropped_train_lines"][name])
    return np.array([ln for ln in range(1, first) if ln not in dropped], dtype=np.int64)


@functools.cache
def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def load_part(spec: str, *, solve: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """``puzzles (n, 81)``, their ``solutions`` (None unless ``solve``) and their 1-based ``lines`` in the file.

    ``solve`` searches every puzzle and checks it has exactly one solution (about 1.5 s for
    the 35,000 training puzzles of ``sudoku17`` on 2 cores).
    """
    parsed = parse_spec(spec)
    if parsed is None:
        raise ValueError(f"unknown puzzle collection {spec!r}; choose one of {', '.join(REAL_SETS)} (with :train or :test)")
    name, part = parsed
    lines = _lines(name, part)
    puzzles = _read(name)[lines - 1]
    if not solve:
        return puzzles, None, lines
    return puzzles, _unique(name, puzzles, lines), lines


def _unique(name: str, puzzles: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The one solution of each puzzle; ``ValueError`` naming the file and line of the first without one."""
    from envs import search

    counts, _, solutions = search.search_batch(np.ascontiguousarray(puzzles), 2)
    bad = np.flatnonzero(counts != 1)
    if bad.size:  # the shipped files are checked by a test; this guards an edited copy
        what = "no solution" if counts[bad[0]] == 0 else "several solutions"
        raise ValueError(f"{DATA / REAL_SETS[name].file}:{int(lines[bad[0]])}: puzzle has {what}; exactly one is required")
    return solutions


def dropped_lines(name: str) -> int:
    """How many training lines of ``name`` were dropped for sharing a grid with a test puzzle."""
    return len(_manifest()["dropped_train_lines"][name])


def grid_hashes(name: str, lines: np.ndarray) -> np.ndarray:
    """``uint64``: the canonical-grid hash (:func:`envs.canonical.grid_hash`) of each 1-based line of ``name``."""
    return _grids()[name][np.asarray(lines) - 1]


def test_grid_hashes() -> np.ndarray:
    """``uint64 (m,)``: the distinct grid hashes of every collection's test part."""
    return np.unique(np.concatenate([grid_hashes(name, _lines(name, "test")) for name in REAL_SETS]))


@functools.cache
def _grids() -> dict[str, np.ndarray]:
    with np.load(GRIDS, allow_pickle=False) as z:
        return {name: z[name] for name in REAL_SETS}


def build_manifest() -> tuple[dict, dict[str, np.ndarray]]:
    """Recompute ``splits.json`` and ``grids.npz`` from the files (about 15 s on 2 cores).

    Every puzzle must have exactly one solution. A training line is dropped when its
    solution grid is equivalent to the grid of a test puzzle of any collection.
    """
    from envs import canonical

    hashes = {}
    for name in REAL_SETS:
        p = _read(name)
        hashes[name] = canonical.grid_hash(_unique(name, p, np.arange(1, len(p) + 1)))
    held = np.concatenate([h[REAL_SETS[name].test_from - 1:] for name, h in hashes.items()])
    dropped = {name: (np.flatnonzero(np.isin(h[: REAL_SETS[name].test_from - 1], held)) + 1).tolist()
               for name, h in hashes.items()}
    return {"dropped_train_lines": dropped}, hashes
