"""Shared fixtures: the tdoku test puzzles (real data, BSD 2-Clause, see tests/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tdoku_lines() -> list[tuple[str, int, str | None]]:
    """``(puzzle, solution count, solution or None)`` for every line of the tdoku test file."""
    rows = []
    for line in (DATA / "tdoku_test_puzzles.txt").read_text().splitlines():
        parts = line.strip().split(":")
        rows.append((parts[0], int(parts[1]), parts[2] if len(parts) > 2 else None))
    return rows


@pytest.fixture(scope="session")
def real_unique(tdoku_lines):
    """The tdoku puzzles with exactly one solution, and their solutions: ``(n, 81)`` int8 arrays."""
    from envs import sudoku

    rows = [(p, s) for p, c, s in tdoku_lines if c == 1]
    return sudoku.parse([p for p, _ in rows]), sudoku.parse([s for _, s in rows])


@pytest.fixture(scope="session")
def tiny_dis_checkpoint(tmp_path_factory) -> str:
    """A DIS checkpoint of a tiny model (hidden 16, one layer) after three batches."""
    import train.supervised as supervised

    out = tmp_path_factory.mktemp("tiny_dis")
    args = ["--out", str(out), "--steps", "3", "--pool-size", "64", "--eval-size", "8", "--hidden", "16", "--layers", "1"]
    supervised.train(supervised.parse_args("dis", args + ["--batch-size", "8", "--checkpoint-every", "0"]))
    return str(out / "checkpoint.pt")
