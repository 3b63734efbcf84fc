"""The Sudoku engine: parsing, rules, solver against tdoku's puzzles, rating, generation, files, augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from envs import real_sets, sudoku


def fixed_point(grid: np.ndarray) -> np.ndarray:
    """Apply rounds of singles until nothing changes."""
    while True:
        nxt = sudoku.propagate_step(grid)
        if np.array_equal(nxt, grid):
            return grid
        grid = nxt


# ----------------------------------------------------------------------------- parsing


def test_parse_format_roundtrip_in_every_layout(tdoku_lines):
    text = tdoku_lines[0][0]
    g = sudoku.parse(text)
    assert g.shape == (81,) and g.dtype == np.int8
    assert sudoku.format(g) == text
    assert np.array_equal(sudoku.parse(sudoku.format(g, board=True)), g)
    assert np.array_equal(sudoku.parse(text.replace(".", "0")), g)
    batch = sudoku.parse([t for t, _, _ in tdoku_lines[:5]])
    assert batch.shape == (5, 81)
    assert sudoku.format(batch) == [t for t, _, _ in tdoku_lines[:5]]
    assert sudoku.format(g.reshape(9, 9)) == text


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("1" * 80, "81 cells, got 80"),
        ("." * 82, "81 cells, got 82"),
        ("x" + "." * 80, "bad character 'x' at position 0"),
        ("11" + "." * 79, "givens conflict: r1c1=1, r1c2=1"),
        ("1" + "." * 8 + "1" + "." * 71, "givens conflict: r1c1=1, r2c1=1"),
    ],
)
def test_parse_rejects_bad_puzzles_naming_the_problem(text, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        sudoku.parse(text)


def test_array_inputs_are_checked():
    with pytest.raises(ValueError, match="shape"):
        sudoku.conflicts(np.zeros(80, dtype=int))
    with pytest.raises(ValueError, match=r"0\.\.9"):
        sudoku.conflicts(np.full(81, 10))


# ----------------------------------------------------------------------------- rules


def test_conflicts_and_is_solution(tdoku_lines):
    puzzle, _, sol_text = tdoku_lines[0]
    sol = sudoku.parse(sol_text)
    assert not sudoku.conflicts(sol).any()
    assert sudoku.is_solution(puzzle, sol)
    broken = sol.copy()
    broken[[0, 1]] = broken[[1, 0]]  # swap two cells of row 1: columns and boxes now clash
    mask = sudoku.conflicts(broken)
    assert mask[0] and mask[1]
    assert not sudoku.is_solution(puzzle, broken)
    incomplete = sol.copy()
    incomplete[5] = 0
    assert not sudoku.is_solution(puzzle, incomplete)
    assert sudoku.conflicts(sol.reshape(9, 9)).shape == (9, 9)


# ----------------------------------------------------------------------------- solver


def test_solver_agrees_with_every_tdoku_line(tdoku_lines):
    for puzzle, count, sol_text in tdoku_lines:
        found = sudoku.solve(puzzle)
        if count == 0:
            assert found is None, puzzle
            continue
        assert found is not None and sudoku.is_solution(puzzle, found), puzzle
        if sol_text is not None:
            assert sudoku.format(found) == sol_text


def test_count_solutions_matches_the_declared_counts(tdoku_lines):
    puzzles = [p for p, _, _ in tdoku_lines]
    declared = np.array([c for _, c, _ in tdoku_lines])
    assert np.array_equal(sudoku.count_solutions(puzzles, limit=10_000), declared)
    assert np.array_equal(sudoku.count_solutions(puzzles, limit=2), np.minimum(declared, 2))
    assert sudoku.count_solutions(puzzles[0]) == 1


def test_rating_is_zero_exactly_when_singles_solve_the_puzzle(tdoku_lines):
    unique = [p for p, c, _ in tdoku_lines if c == 1]
    for text in unique:
        g = sudoku.parse(text)
        solved_by_singles = bool((fixed_point(g) > 0).all())
        assert (sudoku.rate(g) == 0) == solved_by_singles, text
    assert any(sudoku.rate(t) > 0 for t in unique) and any(sudoku.rate(t) == 0 for t in unique)


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("tier", list(sudoku.TIERS))
def test_generated_puzzles_are_unique_and_inside_their_tier(tier):
    puzzles, solutions = sudoku.generate(40, tier, seed=7)
    bounds = sudoku.TIERS[tier]
    assert puzzles.shape == solutions.shape == (40, 81)
    assert np.all(sudoku.count_solutions(puzzles, limit=2) == 1)
    assert np.all(sudoku.is_solution(puzzles, solutions))
    clues = (puzzles > 0).sum(1)
    ratings = sudoku.rate(puzzles)
    assert clues.min() >= bounds.min_clues and clues.max() <= bounds.max_clues
    assert ratings.min() >= bounds.min_rating and ratings.max() <= bounds.max_rating
    if bounds.max_rating == 0:
        assert all((fixed_point(p) > 0).all() for p in puzzles)
    else:
        assert not any((fixed_point(p) > 0).all() for p in puzzles)


def test_tiers_get_harder_in_clues_and_rating():
    clues, ratings = {}, {}
    for tier in ("easy", "medium", "hard", "extreme"):
        p, _ = sudoku.generate(30, tier, seed=1)
        clues[tier] = (p > 0).sum(1).mean()
        ratings[tier] = sudoku.rate(p).mean()
    assert clues["easy"] > clues["medium"] > clues["hard"]
    assert ratings["medium"] == 0 < ratings["hard"] < ratings["extreme"]
    # extreme is as hard as a real hard list: its median rating at least half of top1465's, by the same rater
    top = sudoku.rate(real_sets.load_part("top1465:test", solve=False)[0])
    assert np.median(sudoku.rate(sudoku.generate(30, "extreme", seed=1)[0])) >= np.median(top) / 2


def test_generation_is_seeded():
    a, _ = sudoku.generate(5, "medium", seed=3)
    b, _ = sudoku.generate(5, "medium", seed=3)
    c, _ = sudoku.generate(5, "medium", seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="unknown difficulty 'insane'"):
        sudoku.generate(1, "insane")


# ----------------------------------------------------------------------------- augmentation


def test_augment_preserves_validity_and_uniqueness():
    puzzles, solutions = sudoku.generate(50, "medium", seed=2)
    p2, s2 = sudoku.augment(puzzles, solutions, seed=0)
    assert not np.array_equal(p2, puzzles)
    assert np.all(sudoku.is_solution(p2, s2))
    assert np.all(sudoku.count_solutions(p2) == 1)
    assert np.array_equal((p2 > 0).sum(1), (puzzles > 0).sum(1))
    # the symmetry keeps singles-solvability (rating 0 stays 0)
    assert np.all(sudoku.rate(p2) == 0)
    p3, _ = sudoku.augment(puzzles, solutions, seed=0)
    assert np.array_equal(p2, p3)


# ----------------------------------------------------------------------------- files


def test_load_reads_the_three_formats(tmp_path, tdoku_lines):
    rows = [(p, s) for p, c, s in tdoku_lines if c == 1]
    csv_file = tmp_path / "extreme.csv"
    csv_file.write_text("source,question,answer,rating\n" + "".join(f"src,{p},{s},3\n" for p, s in rows))
    tdoku_file = tmp_path / "unique.txt"
    tdoku_file.write_text("".join(f"{p}:1:{s}\n" for p, s in rows))
    plain_file = tmp_path / "plain.txt"
    plain_file.write_text("# a comment\n\n" + "".join(f"{p.replace('.', '0')}\n" for p, _ in rows))
    want_p = sudoku.parse([p for p, _ in rows])
    want_s = sudoku.parse([s for _, s in rows])
    for f in (csv_file, tdoku_file, plain_file):
        p, s = sudoku.load(f)
        assert np.array_equal(p, want_p) and np.array_equal(s, want_s), f
    p, s = sudoku.load(plain_file, solve=False)
    assert s is None and np.array_equal(p, want_p)


def test_load_names_file_and_line_for_bad_puzzles(tmp_path, tdoku_lines):
    good = tdoku_lines[0][0]
    f = tmp_path / "bad.txt"
    f.write_text(f"{good}\n{good[:-1]}\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: a puzzle has 81 cells, got 80"):
        sudoku.load(f)
    f.write_text(f"{good}\n{good}\n{'55' + good[2:]}\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: givens conflict"):
        sudoku.load(f)
    # the real file declares puzzles with 0 and several solutions: reported, never treated as unique
    with pytest.raises(ValueError, match=r"tdoku_test_puzzles\.txt:19: puzzle has 0 solutions"):
        sudoku.load("tests/data/tdoku_test_puzzles.txt")
    no_solution = next(p for p, c, _ in tdoku_lines if c == 0)
    several = next(p for p, c, _ in tdoku_lines if c > 1)
    f.write_text(f"{good}\n{no_solution}\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: puzzle has no solution"):
        sudoku.load(f)
    f.write_text(f"{several}\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: puzzle has several solutions"):
        sudoku.load(f)
    f.write_text(f"{good}:1:{'1' * 81}\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: the given solution does not solve the puzzle"):
        sudoku.load(f)
    f.write_text("source,question,answer,rating\nx,{good},{good}\n".replace("{good}", good))
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected 4 fields, got 3"):
        sudoku.load(f)


def test_compiled_and_packed_conflict_rules_agree_on_random_and_real_grids(tdoku_lines):
    import torch

    from envs.rules import conflict_mask_compiled, conflict_mask_packed

    rng = np.random.default_rng(0)
    grids = rng.integers(0, 10, size=(500, 81))
    grids[:100] = np.where(rng.random((100, 81)) < 0.7, 0, grids[:100])  # sparse grids too
    real = sudoku.parse([s for _, c, s in tdoku_lines if c == 1])
    grids = np.concatenate([grids, real, sudoku.parse([p for p, _, _ in tdoku_lines])])
    compiled = conflict_mask_compiled(np.ascontiguousarray(grids))
    assert np.array_equal(compiled, conflict_mask_packed(grids))
    assert torch.equal(torch.from_numpy(compiled), conflict_mask_packed(torch.from_numpy(grids)))
    assert not compiled[500 : 500 + len(real)].any() and compiled[:400].any()
