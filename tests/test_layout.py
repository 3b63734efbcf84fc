"""The layout as a specification: scripts that run from anywhere, imports that go one way, short functions, one CLI."""

from __future__ import annotations

import ast
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


def test_field_comments_are_the_help_and_defaults_are_shown():
    text = cli.build_parser(_Options, _Options()).format_help()
    for fragment in ("where to write (default: 'runs/x')", "a rate in [0, 1] (default: 0.5)", "--fast, --no-fast"):
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
            base = supervised.TRMConfig.paper_sudoku if "--paper" in args else supervised.BASE_CONFIGS[scheme]
            parser = cli.build_parser(supervised.Args, supervised.Args(model=base()))
        else:
            mod = importlib.import_module(f"train.{name}")
            parser = cli.build_parser(mod.Args, mod.Args())
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"README command does not parse: python {script} {' '.join(args)}")
