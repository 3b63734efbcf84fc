"""Bad input, table-driven: each case names the exception and a fragment the message must contain."""

from __future__ import annotations

import numpy as np
import pytest

from envs import sudoku
from envs.sudoku_env import LatentReasoningSudokuEnv
from envs.vector_env import LatentReasoningSudokuVectorEnv

EASY = sudoku.generate(2, "easy", seed=0)
FULL = EASY[1][:1]  # a solved grid: a "puzzle" with no blank


@pytest.mark.parametrize("env_cls", [LatentReasoningSudokuEnv, LatentReasoningSudokuVectorEnv], ids=["single", "vector"])
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"augment": "no"}, "augment must be True or False, got 'no'"),
        ({"teacher": 1}, "teacher must be True or False"),
        ({"max_steps": 2.7}, "max_steps must be an integer, got 2.7"),
        ({"pool_size": 3.0}, "pool_size must be an integer"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"reward_mode": "score"}, "reward_mode must be one of"),
        ({"puzzles": (FULL, FULL)}, "puzzles[0] has no blank cell"),
    ],
)
def test_both_envs_refuse_the_same_bad_arguments(env_cls, kwargs, fragment):
    with pytest.raises(ValueError) as e:
        env_cls(**kwargs)
    assert fragment in str(e.value)


def test_vector_env_refuses_sizes_that_are_not_integers_and_lists_of_seeds():
    with pytest.raises(ValueError, match="num_envs must be an integer, got 2.5"):
        LatentReasoningSudokuVectorEnv(num_envs=2.5)
    venv = LatentReasoningSudokuVectorEnv(num_envs=2, pool_size=4)
    with pytest.raises(ValueError, match=r"seed must be one int.*\[1, 2\]"):
        venv.reset(seed=[1, 2])
    obs, _ = venv.reset(seed=[3])  # one seed in a list is that seed
    again, _ = venv.reset(seed=3)
    assert np.array_equal(obs["puzzle"], again["puzzle"])


def test_rate_refuses_invalid_puzzles(tdoku_lines):
    clash = "11" + "." * 79
    with pytest.raises(ValueError, match="givens conflict"):
        sudoku.rate(sudoku.parse(clash, check=False))
    none = next(p for p, c, _ in tdoku_lines if c == 0)
    with pytest.raises(ValueError, match="no solution"):
        sudoku.rate(sudoku.parse(none, check=False))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\xff\xfe1\x002\x00", "not UTF-8 text"),
        ("question,source\n" + "." * 81 + ",x\n", "must name 'question' and 'answer'"),
        ("11" + "." * 79 + "\n", ":1: givens conflict"),
        ("", "no puzzles found"),
    ],
)
def test_bad_files_raise_value_errors_naming_the_file(tmp_path, content, fragment):
    f = tmp_path / "bad.txt"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as e:
        sudoku.load(f)
    assert str(f) in str(e.value) and fragment in str(e.value)


def test_a_byte_order_mark_and_csv_columns_in_any_order_are_read(tmp_path):
    p, s = EASY
    rows = [f"{b},0,{a},gen" for a, b in zip(sudoku.format(p), sudoku.format(s), strict=True)]
    f = tmp_path / "reordered.csv"
    f.write_text("answer,rating,question,source\n" + "\n".join(rows) + "\n", encoding="utf-8-sig")
    P, S = sudoku.load(f)
    assert np.array_equal(P, p) and np.array_equal(S, s)
