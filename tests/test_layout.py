"""The layout as a specification: scripts that run from anywhere, imports that go one way, short functions, one CLI."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal

import pytest

from train import cli, import_graph

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("envs", "trm", "agents", "train")
SCRIPTS = sorted(p for p in (ROOT / "train").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())
MAX_FUNCTION_LINES = 80


def test_there_are_scripts_and_every_one_is_a_file_of_train():
    names = {p.name for p in SCRIPTS}
    assert {"ppo_recursion.py", "train_dis.py", "train_trm.py", "benchmark.py", "demo_env.py", "bench_env.py"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_answers_help_from_another_directory(script, tmp_path):
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "usage:" in r.stdout and "(default:" in r.stdout


def test_no_file_in_train_shadows_a_standard_or_installed_module():
    installed = set(metadata.packages_distributions())
    taken = set(sys.stdlib_module_names) | set(PACKAGES) | installed
    clashes = [p.name for p in (ROOT / "train").glob("*.py") if p.stem in taken and p.stem != "__init__"]
    assert clashes == []


def test_no_script_edits_sys_path():
    offenders = [p.name for p in (ROOT / "train").glob("*.py") if "sys.path" in p.read_text()]
    assert offenders == []


def test_imports_go_one_way(capsys):
    assert import_graph.main(["--root", str(ROOT)]) == 0
    assert "none back up" in capsys.readouterr().out


def test_the_import_check_catches_an_arrow_back_up(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "envs" / "x.py").write_text("def f():\n    from agents.runner import run_episodes\n")
    (tmp_path / "train" / "y.py").write_text("import envs.sudoku\n")
    edges = import_graph.graph(tmp_path)
    assert edges == {("envs", "agents"): 1, ("train", "envs"): 1}
    assert import_graph.upward(edges) == [("envs", "agents")]


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (f"{path.relative_to(ROOT)}:{n.name}", n.end_lineno - n.lineno + 1)
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def test_no_function_is_longer_than_about_80_lines():
    lengths = [f for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) for f in _functions(p)]
    assert len(lengths) > 100
    assert [f for f in lengths if f[1] > MAX_FUNCTION_LINES] == []


def test_docstrings_point_only_to_files_users_have():
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            assert "DESIGN" not in p.read_text(), p


# ----------------------------------------------------------------------------- the one CLI


@dataclass
class _Options:
    out: str = "runs/x"  # where to write
    rate: float = 0.5  # a rate in [0, 1]
    count: int | None = None  # how many (default: no limit)
    fast: bool = False  # go faster
    mode: Literal["a", "b"] = "a"  # one of two modes
    tag: list[str] = field(default_factory=list)  # NAME=VALUE, repeatable

    def validate(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"--rate must lie in [0, 1], got {self.rate}")


def _help(cls, capsys, monkeypatch, **kwargs) -> str:
    """The ``--help`` of dataclass ``cls`` (which must exit 0), on a terminal wide enough for one line per option."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as stop:
        cli.parse(cls, ["--help"], **kwargs)
    out, err = capsys.readouterr()
    assert stop.value.code == 0 and err == "", err
    return out


def test_field_comments_are_the_help_and_defaults_are_shown(capsys, monkeypatch):
    text = _help(_Options, capsys, monkeypatch, description="What the script does,\nline by line.\n")
    assert text.startswith("usage:") and "\n\nWhat the script does,\nline by line.\n\n" in text  # as written
    for fragment in ("where to write (default: runs/x)", "a rate in [0, 1] (default: 0.5)", "--fast, --no-fast"):
        assert fragment in " ".join(text.split()), text
    assert "{a,b}" in text


def test_parse_reads_every_kind_of_option():
    o = cli.parse(_Options, ["--rate", "0.25", "--count", "3", "--fast", "--mode", "b", "--tag", "x=1", "--tag", "y=2"])
    assert o == _Options(out="runs/x", rate=0.25, count=3, fast=True, mode="b", tag=["x=1", "y=2"])
    assert cli.parse(_Options, []) == _Options()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--rate", "2"], "--rate must lie in [0, 1], got 2.0"),
        (["--mode", "c"], "invalid choice: 'c'"),
        (["--count", "x"], "invalid int"),
    ],
)
def test_bad_options_exit_2_with_one_line_naming_the_option(argv, fragment, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.parse(_Options, argv)
    assert stop.value.code == 2 and fragment in capsys.readouterr().err


def test_nested_config_fields_become_flags_and_keep_their_checks(capsys):
    from train.supervised import parse_args

    args = parse_args("dis", ["--hidden", "32", "--no-augment"])
    assert args.model.hidden == 32 and args.training.scheme == "dis" and args.augment is False
    assert parse_args("trm", ["--paper"]).model.hidden == 512
    with pytest.raises(SystemExit):
        parse_args("dis", ["--mixer", "transformer"])
    err = capsys.readouterr().err
    assert "--mixer" in err and "transformer" in err and "attention" in err  # the choices are named


@dataclass
class _Inner:
    width: int = 8  # a width
    mixer: Literal["mlp", "attention"] = "mlp"  # the mixer
    cells: int = field(default=81, metadata={"cli": False})  # fixed by the script, never a flag

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"_Inner.width must be >= 1, got {self.width}")


@dataclass
class _Outer:
    seed: int = 0  # a seed
    inner: _Inner = field(default_factory=_Inner)


def _usage_error(cls, argv, capsys, monkeypatch, **kwargs) -> str:
    """The stderr of ``cli.parse(cls, argv)``, which must exit 2 with one line and nothing on stdout."""
    monkeypatch.setattr(sys, "argv", ["/somewhere/train/demo.py"])
    with pytest.raises(SystemExit) as stop:
        cli.parse(cls, argv, **kwargs)
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == "", (out, err)
    assert err.startswith("demo.py: error: ") and err.endswith(" (see --help)\n") and err.count("\n") == 1, err
    assert "usage:" not in err and "\u256d" not in err and "Traceback" not in err, err  # no usage block, no box
    return err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--fast=yes"], ["--fast"]),
        (["--nope", "1"], ["unrecognized arguments: --nope 1"]),
        (["--mode", "c"], ["argument --mode: invalid choice: 'c'", "'a', 'b'"]),
        (["--count", "x"], ["argument --count: invalid int value: 'x'"]),
        (["--rate", "fast"], ["argument --rate: invalid float value: 'fast'"]),
        (["--rate"], ["argument --rate: expected one argument"]),
        (["--out", "--fast"], ["argument --out: expected one argument"]),
        (["stray"], ["unrecognized arguments: stray"]),
    ],
)
def test_every_usage_error_is_one_line_naming_the_option(argv, fragments, capsys, monkeypatch):
    err = _usage_error(_Options, argv, capsys, monkeypatch)
    assert all(f in err for f in fragments), err


def test_an_unknown_option_and_a_bad_choice_of_a_script_are_one_line(capsys, monkeypatch):
    from train.ppo_recursion import Args

    assert "unrecognized arguments: --no-such-option" in _usage_error(Args, ["--no-such-option"], capsys, monkeypatch)
    assert "argument --objective: invalid choice: 'sac'" in _usage_error(Args, ["--objective", "sac"], capsys, monkeypatch)


def test_prefixes_of_options_are_refused(capsys, monkeypatch):
    from train.supervised import Args

    err = _usage_error(Args, ["--see", "3"], capsys, monkeypatch, defaults=Args())
    assert "unrecognized arguments: --see 3" in err and "did you mean --seed?" in err
    assert "unrecognized arguments: --hid 32" in _usage_error(Args, ["--hid", "32"], capsys, monkeypatch)  # nested too
    assert "unrecognized arguments: --ra 0.1" in _usage_error(_Options, ["--ra", "0.1"], capsys, monkeypatch)
    assert cli.parse(Args, ["--seed", "3"]).seed == 3


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--rate", "0.1", "--rate", "0.2"], "--rate"),
        (["--rate=0.1", "--count", "2", "--rate", "0.1"], "--rate"),
        (["--fast", "--no-fast"], "--fast"),
        (["--fast", "--fast"], "--fast"),
        (["--mode", "a", "--mode", "b"], "--mode"),
    ],
)
def test_a_repeated_option_is_refused(argv, option, capsys, monkeypatch):
    err = _usage_error(_Options, argv, capsys, monkeypatch)
    assert f"argument {option}: given more than once" in err, err


def test_a_nested_options_repeated_and_a_list_option_repeatable(capsys, monkeypatch):
    assert "argument --width: given more than once" in _usage_error(_Outer, ["--width", "2", "--width", "3"], capsys, monkeypatch)
    assert cli.parse(_Options, ["--tag", "a=1", "--tag", "a=1"]).tag == ["a=1", "a=1"]


def test_choices_of_literal_fields_are_shown_also_in_a_nested_dataclass(capsys, monkeypatch):
    assert "--mode {a,b}" in " ".join(_help(_Options, capsys, monkeypatch).split())
    text = " ".join(_help(_Outer, capsys, monkeypatch).split())
    assert "--mixer {mlp,attention}" in text and "the mixer (default: mlp)" in text
    assert "--width INT" in text and "--inner." not in text  # flat flags, no prefix
    assert cli.parse(_Outer, ["--mixer", "attention"]).inner == _Inner(mixer="attention")
    assert "argument --mixer: invalid choice: 'rnn'" in _usage_error(_Outer, ["--mixer", "rnn"], capsys, monkeypatch)


def test_fields_marked_cli_false_are_no_options(capsys, monkeypatch):
    from train.supervised import Args
    from trm.config import TrainConfig, TRMConfig

    assert "--cells" not in _help(_Outer, capsys, monkeypatch)
    assert "unrecognized arguments: --cells 9" in _usage_error(_Outer, ["--cells", "9"], capsys, monkeypatch)
    assert cli.parse(_Outer, [], defaults=_Outer(inner=_Inner(cells=9))).inner.cells == 9  # kept from the defaults
    configs = (*dataclasses.fields(TRMConfig), *dataclasses.fields(TrainConfig))
    hidden = [f.name for f in configs if not f.metadata.get("cli", True)]
    assert {"seq_len", "vocab", "scheme"} <= set(hidden)
    text = _help(Args, capsys, monkeypatch, defaults=Args(model=TRMConfig.dis(), training=TrainConfig.dis()))
    assert "--hidden INT" in text and not any(f"--{n.replace('_', '-')} " in text for n in hidden), text
    assert "unrecognized arguments: --scheme trm" in _usage_error(Args, ["--scheme", "trm"], capsys, monkeypatch)


def test_values_may_start_with_a_dash_and_nested_checks_are_usage_errors(capsys, monkeypatch):
    o = cli.parse(_Options, ["--out", "--batch-size 16", "--count", "-3"])
    assert (o.out, o.count) == ("--batch-size 16", -3)
    assert cli.parse(_Options, ["--out=--fast"]).out == "--fast"
    assert cli.parse(_Options, ["--count", "None"]).count is None
    assert "--rate must lie in [0, 1], got -0.5" in _usage_error(_Options, ["--rate", "-0.5"], capsys, monkeypatch)
    assert "_Inner.width must be >= 1, got 0" in _usage_error(_Outer, ["--width", "0"], capsys, monkeypatch)


def _imports(path: Path) -> set[str]:
    """The top-level names of the modules ``path`` imports."""
    names: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            names |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            names.add(n.module.split(".")[0])
    return names


def test_cli_is_the_only_module_that_imports_tyro():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    importers = [p.relative_to(ROOT).as_posix() for p in files if "tyro" in _imports(p)]
    assert importers == ["train/cli.py"]


def readme_commands() -> list[tuple[str, list[str]]]:
    """``(script, args)`` of every ``python train/X.py ...`` (or ``torchrun ... train/X.py ...``) command the README
    shows, in code blocks and inline code."""
    import re
    import shlex

    code, prose, fence = [], [], None
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
        elif fence is None:
            prose.append(line)
        elif fence in ("", "bash", "sh"):
            code.append(line)
    spans = code + re.findall(r"`([^`]+)`", " ".join(prose))
    out = []
    for span in spans:
        for m in re.finditer(r"(?:python|torchrun --nproc_per_node \S+) (train/\w+\.py)((?: +(?!&&|\||;)[^ ;&|]+)*)", span):
            out.append((m.group(1), shlex.split(m.group(2))))
    return out


def test_the_readme_shows_commands_and_each_one_parses_with_its_scripts_options():
    import importlib

    from train import supervised

    commands = readme_commands()
    assert len(commands) >= 10 and any(s == "train/train_trm.py" and "--paper" in a for s, a in commands)
    for script, args in commands:
        name = Path(script).stem
        if name.startswith("train_"):
            scheme = name.removeprefix("train_")
            cls, defaults = supervised.Args, supervised.default_args(scheme, "--paper" in args)
        else:
            mod = importlib.import_module(f"train.{name}")
            cls, defaults = mod.Args, mod.Args()
        try:
            cli.read(cls, args, defaults=defaults)  # the options and their values, not validate()'s checks of files
        except SystemExit:
            pytest.fail(f"README command does not parse: python {script} {' '.join(args)}")
