"""Bad input, table-driven: each case names the exception and a fragment the message must contain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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


# ----------------------------------------------------------------------------- the table
# Each row: (id, callable, exception type, fragment of the message). Every case must raise
# that type with a message naming the problem; none may be accepted silently.

P, S = EASY
CLASH = "11" + "." * 79


STRINGS = [
    ("empty", lambda: sudoku.parse(""), ValueError, "81 cells, got 0"),
    ("80 cells", lambda: sudoku.parse("1" * 80), ValueError, "81 cells, got 80"),
    ("82 cells", lambda: sudoku.parse("." * 82), ValueError, "81 cells, got 82"),
    ("bad char", lambda: sudoku.parse("x" + "." * 80), ValueError, "bad character 'x'"),
    ("clash", lambda: sudoku.parse(CLASH), ValueError, "givens conflict"),
    ("int", lambda: sudoku.parse(5), TypeError, "parse expects a puzzle string"),
    ("none", lambda: sudoku.parse(None), TypeError, "got NoneType"),
    ("mixed list", lambda: sudoku.parse(["." * 81, 5]), TypeError, "sequence of them"),
]
ARRAYS = [
    ("80 long", lambda: sudoku.conflicts(np.zeros(80, np.int8)), ValueError, "must have shape"),
    ("digit 10", lambda: sudoku.conflicts(np.full(81, 10)), ValueError, "lie in 0..9"),
    ("digit -1", lambda: sudoku.conflicts(np.full(81, -1)), ValueError, "lie in 0..9"),
    ("9x8", lambda: sudoku.conflicts(np.zeros((2, 9, 8), np.int8)), ValueError, "must have shape"),
    ("floats", lambda: sudoku.conflicts(np.full(81, 1.5)), ValueError, "integers 0..9"),
    ("answer shape", lambda: sudoku.is_solution(P[0], np.zeros(80, np.int8)), ValueError, "answer must have shape"),
    ("limit 0", lambda: sudoku.count_solutions(P[0], limit=0), ValueError, "limit must be >= 1"),
    ("n -1", lambda: sudoku.generate(-1), ValueError, "n must be >= 0"),
    ("n 2.5", lambda: sudoku.generate(2.5), ValueError, "n must be an integer, got 2.5"),
    ("tier", lambda: sudoku.generate(2, "impossible"), ValueError, "unknown difficulty 'impossible'"),
    ("seed str", lambda: sudoku.generate(2, seed="a"), ValueError, "seed must be an integer"),
    ("rate clash", lambda: sudoku.rate(sudoku.parse(CLASH, check=False)), ValueError, "givens conflict"),
    ("wrong solution", lambda: LatentReasoningSudokuEnv(puzzles=(P, P)), ValueError, "solutions[0] does not solve its puzzle"),
    ("solution count", lambda: LatentReasoningSudokuEnv(puzzles=(P, S[:1])), ValueError, "differ in shape"),
    ("no puzzles", lambda: LatentReasoningSudokuEnv(puzzles=np.zeros((0, 81), np.int8)), ValueError, "puzzles is empty"),
]
ACTIONS = [
    ("single before reset", lambda: LatentReasoningSudokuEnv(pool_size=2).step(np.zeros(82, np.int64)), RuntimeError, "reset()"),
    ("single shape", lambda: _single().step(np.zeros(81, np.int64)), ValueError, "action must have shape (82,)"),
    ("single range", lambda: _single().step(np.full(82, 10)), ValueError, "lie in 0..9"),
    ("single floats", lambda: _single().step(np.zeros(82) + 0.5), ValueError, "must hold integers"),
    ("vector before reset", lambda: _vector(False).step(np.zeros((2, 82), np.int64)), RuntimeError, "call reset() before step()"),
    ("vector shape", lambda: _vector().step(np.zeros((2, 81), np.int64)), ValueError, "actions must have shape (2, 82)"),
    ("vector floats", lambda: _vector().step(np.zeros((2, 82)) + 0.5), ValueError, "must be integers"),
    ("vector halt 2", lambda: _vector().step(np.full((2, 82), 2)), ValueError, "halt flag in {0, 1}"),
]


def _single() -> LatentReasoningSudokuEnv:
    env = LatentReasoningSudokuEnv(pool_size=2)
    env.reset(seed=0)
    return env


def _vector(reset: bool = True) -> LatentReasoningSudokuVectorEnv:
    venv = LatentReasoningSudokuVectorEnv(num_envs=2, pool_size=2)
    if reset:
        venv.reset(seed=0)
    return venv


ENV_ARGS = [
    ("difficulty", {"difficulty": "impossible"}, "unknown difficulty 'impossible'"),
    ("order", {"order": "shuffled"}, "order must be 'random' or 'sequential'"),
    ("step cost nan", {"step_cost": float("nan")}, "must be finite"),
    ("solve bonus inf", {"solve_bonus": float("inf")}, "must be finite"),
]


TABLE = STRINGS + ARRAYS + ACTIONS


@pytest.mark.parametrize(("case", "fn", "exc", "fragment"), TABLE, ids=[c[0] for c in TABLE])
def test_bad_strings_arrays_and_actions(case, fn, exc, fragment):
    with pytest.raises(exc) as e:
        fn()
    assert fragment in str(e.value), (case, str(e.value))


@pytest.mark.parametrize("env_cls", [LatentReasoningSudokuEnv, LatentReasoningSudokuVectorEnv], ids=["single", "vector"])
@pytest.mark.parametrize(("case", "kwargs", "fragment"), ENV_ARGS, ids=[c[0] for c in ENV_ARGS])
def test_more_env_arguments_both_envs_refuse(env_cls, case, kwargs, fragment):
    with pytest.raises(ValueError) as e:
        env_cls(**kwargs)
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("." * 81 + ":2\n", ":1: puzzle has 2 solutions (declared in the file)"),
        ("." * 81 + ":x\n", ":1: solution count must be an integer"),
        (f"{sudoku.format(P[0])}:1:{sudoku.format(P[0])}\n", ":1: the given solution does not solve the puzzle"),
        ("source,question,answer,rating\nx,a\n", ":2: expected 4 fields, got 2"),
        ("." * 81 + "\n", ":1: puzzle has several solutions"),
        ("." * 40 + "\n", ":1: a puzzle has 81 cells, got 40"),
    ],
)
def test_more_bad_files(tmp_path, content, fragment):
    f = tmp_path / "bad.txt"
    f.write_text(content)
    with pytest.raises(ValueError) as e:
        sudoku.load(f)
    assert str(f) in str(e.value) and fragment in str(e.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nofile.txt"):
        sudoku.load(tmp_path / "nofile.txt")


def _script_parsers():
    from train import benchmark, cli, compare_supervision, ppo_recursion, sb3_ppo, supervised

    return {
        "compare": lambda argv: cli.parse(compare_supervision.Args, argv),
        "dis": lambda argv: supervised.parse_args("dis", argv),
        "trm": lambda argv: supervised.parse_args("trm", argv),
        "ppo": ppo_recursion.parse_args,
        "bench": lambda argv: cli.parse(benchmark.Args, argv),
        "sb3": lambda argv: cli.parse(sb3_ppo.Args, argv),
    }


CLI = [
    ("dis", ["--minutes", "nan"], "--minutes must be a finite number above 0, got nan"),
    ("dis", ["--minutes", "-1"], "--minutes must be a finite number above 0, got -1.0"),
    ("dis", ["--steps", "-5"], "--steps must be at least 1, got -5"),
    ("dis", ["--eval-size", "0"], "--eval-size must be at least 1, got 0"),
    ("dis", ["--pool-size", "0"], "--pool-size must be at least 1, got 0"),
    ("dis", ["--device", "cuda:99"], "--device cuda:99"),
    ("dis", ["--device", "tpu"], "--device: 'tpu' is not a device name"),
    ("dis", ["--difficulty", "impossible"], "--difficulty must be one of"),
    ("dis", ["--puzzles", "nofile.txt"], "--puzzles: no file nofile.txt"),
    ("dis", ["--hidden", "0"], "TRMConfig.hidden must be >= 1, got 0"),
    ("dis", ["--lr", "nan"], "TrainConfig.lr must be a finite number >= 0"),
    ("dis", ["--paper"], "--paper is the TRM paper's recipe"),
    ("dis", ["--resume"], "--resume: no checkpoint at"),
    ("dis", ["--seed", "x"], "invalid int value: 'x'"),
    ("dis", ["--checkpoint-every", "-1"], "--checkpoint-every must be a finite number of minutes >= 0"),
    ("trm", ["--beta2", "1.5"], "beta1, beta2 and ema_decay must lie in [0, 1)"),
    ("ppo", ["--minibatches", "0"], "--minibatches must be at least 1, got 0"),
    ("ppo", ["--num-envs", "0"], "--num-envs must be at least 1, got 0"),
    ("ppo", ["--gamma", "0.9"], "--gamma 0.9"),
    ("ppo", ["--objective", "sac"], "invalid choice: 'sac'"),
    ("ppo", ["--init-from", "missing.pt"], "--init-from: checkpoint missing.pt does not exist"),
    ("ppo", ["--lr", "inf"], "--lr must be a finite number >= 0, got inf"),
    ("bench", ["--puzzles", "0"], "--puzzles must be at least 1, got 0"),
    ("bench", ["--tiers", "impossible"], "unknown tier 'impossible'"),
    ("bench", ["--puzzle-file", "noequals"], "--puzzle-file expects NAME=PATH, got 'noequals'"),
    ("bench", ["--guidance", "a,b"], "--guidance must be comma-separated numbers"),
    ("sb3", ["--num-envs", "0"], "--num-envs must be at least 1, got 0"),
    ("dis", ["--seed", "-1"], "--seed must lie in [0, 2**32), got -1"),
    ("dis", ["--seed", str(2**40)], "--seed must lie in [0, 2**32)"),
    ("dis", ["--pool-size", "10000000000"], "--pool-size and --eval-size: about"),
    ("dis", ["--eval-size", "10000000000"], "GiB of memory needed; cpu has"),
    ("dis", ["--hidden", "10000000"], "the model (--hidden, --layers, --expansion) and --batch-size: about"),
    ("ppo", ["--num-envs", "100000000000"], "--num-envs: about"),
    ("bench", ["--guidance", "0,nan"], "--guidance must be finite numbers"),
    ("bench", ["--puzzle-file", "f=a.txt", "--puzzle-file", "f=b.txt"], "--puzzle-file names 'f' twice"),
    ("bench", ["--puzzle-file", "easy=a.txt"], "'easy' is the name of a tier or collection"),
    ("bench", ["--seed", str(2**32)], "--seed must lie in [0, 2**32)"),
    ("compare", ["--resume"], "--resume: no run to continue under"),
    ("compare", ["--seeds", "0,-3"], "--seeds must lie in [0, 2**32), got -3"),
    ("bench", ["--puzzle-file", "sudoku17:dev=a.txt"], "'sudoku17:dev' is the name of a tier or collection"),
    *([("dis", ["--device", "mps"], "no MPS (Apple GPU) support")] if not torch.backends.mps.is_available() else []),
    ("sb3", ["--resume"], "--resume: no checkpoint at"),
]


@pytest.mark.parametrize(("script", "argv", "fragment"), CLI, ids=[f"{s}{' '.join(a)}" for s, a, _ in CLI])
def test_bad_options_exit_2_with_one_line_and_create_nothing(script, argv, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        _script_parsers()[script](["--out", str(out), *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and fragment in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line, naming the option
    assert not out.exists()


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit):
        _script_parsers()["dis"](["--out", str(tmp_path / "afile")])
    assert "exists and is not a folder" in capsys.readouterr().err


ROOT = Path(__file__).resolve().parents[1]


def _script(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("argv", [
    ["train/benchmark.py", "--agents", "random", "--tiers", "easy"],
    ["train/search_curve.py", "--checkpoint", "{ck}"],
    ["train/tier_table.py"],
    ["train/ppo_recursion.py"],
    ["train/sb3_ppo.py"],
], ids=lambda a: a[0])
def test_every_script_refuses_an_out_that_is_a_file(tmp_path, tiny_dis_checkpoint, argv):
    (tmp_path / "afile").write_text("kept")
    r = _script(tmp_path, *[a.format(ck=tiny_dis_checkpoint) for a in argv], "--out", "afile")
    assert r.returncode == 2 and "--out afile: exists and is not a folder" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "afile").read_text() == "kept"


def test_search_curve_refuses_infinite_sampling_settings(tmp_path, tiny_dis_checkpoint):
    for flag, value in (("--temperature", "inf"), ("--temperature", "0"), ("--latent-noise", "nan")):
        r = _script(tmp_path, "train/search_curve.py", "--checkpoint", tiny_dis_checkpoint, flag, value, "--out", "c")
        assert r.returncode == 2 and f"{flag} must be a finite number" in r.stderr, r.stderr
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("script", ["train/train_dis.py", "train/ppo_recursion.py", "train/sb3_ppo.py"])
def test_a_bad_puzzle_file_stops_a_run_with_one_line_and_no_folder(tmp_path, script):
    (tmp_path / "bad.txt").write_text("." * 81 + "\n" + "4" * 2 + "." * 79 + "\n")
    r = _script(tmp_path, script, "--puzzles", "bad.txt", "--out", "deep/run", "--minutes", "0.05")
    assert r.returncode == 2 and "bad.txt:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "deep").exists()  # neither the run folder nor the parent it would have made


def test_a_resume_names_a_corrupt_run_record_and_another_start(tmp_path, tiny_dis_checkpoint, capsys):
    from train import supervised

    run = tmp_path / "run"
    tiny = ["--steps", "1", "--pool-size", "64", "--eval-size", "8", "--hidden", "16", "--layers", "1", "--batch-size", "8",
            "--checkpoint-every", "0"]
    supervised.train(supervised.parse_args("dis", ["--out", str(run), *tiny]))
    with pytest.raises(SystemExit):  # the run started from scratch: a resume may not name a start
        supervised.main("dis", "", ["--out", str(run), "--resume", "--init-from", tiny_dis_checkpoint, *tiny])
    assert "--init-from: none -> " in capsys.readouterr().err
    (run / "run.json").write_text('{\n  "config": oops\n}')
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit):
        supervised.parse_args("dis", ["--out", str(run), "--resume", *tiny])
    assert f"{run / 'run.json'} line 2: not valid JSON" in capsys.readouterr().err
    (run / "run.json").write_text("{}")
    (run / "metrics.json").write_text("{\n\n  broken")
    with pytest.raises(SystemExit):
        supervised.parse_args("dis", ["--out", str(run), "--resume", *tiny])
    assert f"{run / 'metrics.json'} line 3: not valid JSON" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before


def test_library_refusals_of_puzzles_that_are_not_proper(tmp_path):
    from envs.sudoku_env import LatentReasoningSudokuEnv

    s = EASY[1][:1]
    p = s.copy()
    p[0, :40] = 0  # 41 givens left in their rows: many completions
    assert sudoku.count_solutions(p[0], 2) == 2
    with pytest.raises(ValueError, match=r"puzzles\[0\] has several solutions"):
        LatentReasoningSudokuEnv(puzzles=(p, s))
    with pytest.raises(ValueError, match="it has several solutions"):
        sudoku.rate(p[0])


def test_puzzle_files_that_are_not_plain_or_have_odd_lines(tmp_path):
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        sudoku.load(fifo)  # would block forever on open()
    with pytest.raises(ValueError, match="not a regular file"):
        sudoku.load(tmp_path)
    good = sudoku.format(EASY[0][:1])[0]
    f = tmp_path / "ff.txt"
    f.write_text(good + "\f\n" + CLASH + "\n")  # a form feed inside line 1: line 2 is still line 2
    with pytest.raises(ValueError, match=r"ff.txt:2: givens conflict"):
        sudoku.load(f)
    cr = tmp_path / "cr.txt"
    cr.write_bytes((good + "\r" + CLASH + "\r").encode())  # old Mac line endings
    with pytest.raises(ValueError, match=r"cr.txt:2: givens conflict"):
        sudoku.load(cr)
    c = tmp_path / "dup.csv"
    c.write_text("question,answer,answer\n" + good + ",x,y\n")
    with pytest.raises(ValueError, match=r"dup.csv:1: CSV header names 'answer' more than once"):
        sudoku.load(c)
