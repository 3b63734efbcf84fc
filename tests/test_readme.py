"""The README and the measurement pages as a specification: their code runs, their commands start, their defaults hold.

The scripts are asked through their ``--help``, run as subprocesses from another directory, so these tests read
what a user would see and do not depend on how the options are declared inside the scripts.

Convention for defaults: the README writes a default as an option and its value in inline code followed by
``(default)``, e.g. ```--minutes 2` (default)``, in the same paragraph, list item or table row as the script it
belongs to (the closest ``train/X.py`` before it). A boolean is written ```--flag` (default)`` or
```--no-flag` (default)``.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"
SETUP = ["pip install -e . && python train/ppo_recursion.py", 'pip install -e ".[dev]" && pytest']
CLAIM = re.compile(r"`(--[a-z][a-z0-9-]*)(?: ([^`]+))?`\s+\(default\)")
SCRIPT = re.compile(r"train/\w+\.py")
COMMAND = re.compile(r"(?:python|torchrun --nproc_per_node \S+) (train/\w+\.py)((?: +(?!&&|\||;)[^ ;&|]+)*)")


def split_markdown(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """``(fence info, code)`` of every fenced block, and the prose as blocks: paragraphs, list items, table rows."""
    fences, blocks, current, fence, code = [], [], [], None, []
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if fence is None:
                fence, code = line[3:].strip(), []
            else:
                fences.append((fence, "\n".join(code)))
                fence = None
            continue
        if fence is not None:
            code.append(line)
            continue
        starts = not line.strip() or line.startswith(("|", "- ", "#"))
        if starts and current:
            blocks.append(" ".join(current))
            current = []
        if line.strip():
            current.append(line.strip())
        if line.startswith(("|", "#")):
            blocks.append(" ".join(current))
            current = []
    if current:
        blocks.append(" ".join(current))
    return fences, blocks


def commands_in(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(script, args)`` of every ``python train/X.py ...`` or ``torchrun ... train/X.py ...`` the page shows."""
    fences, blocks = split_markdown(path)
    spans = [line for info, code in fences if info in ("", "bash", "sh") for line in code.splitlines()]
    spans += [s for b in blocks for s in re.findall(r"`([^`]+)`", b)]
    found = [(m.group(1), tuple(shlex.split(m.group(2)))) for s in spans for m in COMMAND.finditer(s)]
    return list(dict.fromkeys(found))


def python_block(containing: str) -> str:
    blocks = [code for info, code in split_markdown(README)[0] if info == "python" and containing in code]
    assert len(blocks) == 1, f"expected one python block of the README with {containing!r}, found {len(blocks)}"
    return blocks[0]


def _env() -> dict[str, str]:
    env = dict(os.environ, COLUMNS="100")  # one column of option boxes
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@functools.cache
def run_help(script: str, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python ROOT/script *args --help`` from a directory outside the repository."""
    if not (ROOT / script).is_file():
        pytest.fail(f"{script} is named by the docs but does not exist")
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args, "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=_elsewhere(),
        env=_env(),
    )


@functools.cache
def _elsewhere() -> str:
    return tempfile.mkdtemp(prefix="readme_help_")


def help_defaults(text: str) -> dict[str, tuple[list[str], str]]:
    """Every option name of a ``--help`` text (tyro's boxed table or plain) -> (the names of its entry, its ``(default: X)``)."""
    out: dict[str, tuple[list[str], str]] = {}
    entries: list[list[str]] = []
    for raw in text.splitlines():
        inner = raw.strip().removeprefix("│").removesuffix("│").rstrip()
        if re.match(r"^ {0,3}-", inner):
            entries.append([inner.strip()])
        elif entries and inner.strip() and not re.match(r"^[╭╰─]", raw.strip()):
            entries[-1].append(inner.strip())
    for lines in entries:
        names = re.findall(r"--[\w-]+", re.split(r"\s{2,}", lines[0])[0])
        # the last "(default: X)" of the entry: a help line may itself say "(default: ...)"
        m = re.search(r".*\(default: (.*?)\)\s*$", " ".join(" ".join(lines).split()))
        if names and m:
            for name in names:
                out[name] = (names, m.group(1))
    return out


def default_claims() -> list[tuple[str, str, str | None]]:
    """``(script, flag, value or None)`` for every default the README names (the convention's own example aside)."""
    claims = []
    for block in split_markdown(README)[1]:
        for m in CLAIM.finditer(block):
            if m.group(1) == "--flag":
                continue
            scripts = [s.group(0) for s in SCRIPT.finditer(block[: m.start()])]
            assert scripts, f"README: default {m.group(0)!r} names no script before it in its paragraph: {block[:120]!r}"
            claims.append((scripts[-1], m.group(1), m.group(2)))
    return claims


def same_default(flag: str, value: str | None, names: list[str], default: str) -> bool:
    if value is None:  # a boolean: --flag (default) says True, --no-flag (default) says False
        return default == ("False" if flag.startswith("--no-") and flag != names[0] else "True")
    d = default.strip()
    if len(d) >= 2 and d[0] == d[-1] and d[0] in "'\"":
        d = d[1:-1]
    try:
        return float(value) == float(d)
    except ValueError:
        return value.strip() == d


# ----------------------------------------------------------------------------- the README's shape


def test_the_readme_opens_with_the_two_setup_commands():
    fences = split_markdown(README)[0]
    assert fences[0] == ("bash", "\n".join(SETUP))


def test_every_relative_link_of_the_readme_and_the_results_pages_resolves():
    for page in [README, *sorted(RESULTS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: broken link {target}"


def test_every_results_page_is_indexed():
    index = (RESULTS / "README.md").read_text()
    assert [p.name for p in sorted(RESULTS.glob("*.md")) if p.name != "README.md" and f"]({p.name})" not in index] == []


# ----------------------------------------------------------------------------- the README's code runs


def test_the_environment_snippet_runs():
    exec(compile(python_block("gym.make_vec"), "README.md: the environment", "exec"), {})


def test_the_quick_start_solves_puzzles_with_a_checkpoint(tiny_dis_checkpoint, capsys):
    code = python_block("run_episodes(")
    assert code.count('"runs/dis/checkpoint.pt"') == 1
    code = code.replace('"runs/dis/checkpoint.pt"', repr(tiny_dis_checkpoint))
    exec(compile(code, "README.md: quick start", "exec"), {})
    out = capsys.readouterr().out
    assert "solved:" in out and "forward passes each" in out


def test_the_sharing_snippet_exports_a_folder_an_agent_loads(tiny_dis_checkpoint, tmp_path):
    code = python_block("export_checkpoint(")
    code = code.replace('"runs/dis/checkpoint.pt"', repr(tiny_dis_checkpoint)).replace('"models/dis"', repr(str(tmp_path / "m")))
    scope: dict = {}
    exec(compile(code, "README.md: sharing a model", "exec"), scope)
    assert scope["agent"].name == "dis" and (tmp_path / "m" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- the README's commands and defaults

README_COMMANDS = commands_in(README)


def test_the_readme_shows_the_main_commands():
    scripts = {s for s, _ in README_COMMANDS}
    assert {"train/ppo_recursion.py", "train/expert_iteration.py", "train/train_dis.py", "train/train_trm.py"} <= scripts
    assert not [a for s, a in README_COMMANDS if "expert" in a], "expert iteration is train/expert_iteration.py"


@pytest.mark.parametrize(("script", "args"), README_COMMANDS, ids=lambda x: x if isinstance(x, str) else " ".join(x)[:60])
def test_every_readme_command_starts_from_another_directory(script, args):
    r = run_help(script, args)
    assert r.returncode == 0 and "usage:" in r.stdout, f"python {script} {' '.join(args)} --help:\n{r.stderr[-2000:]}"


def test_the_readme_names_defaults_and_each_one_is_the_scripts_default():
    claims = default_claims()
    prose = " ".join(split_markdown(README)[1])
    assert len(claims) >= 10 and len(re.findall(r"\(default\)", prose)) == len(claims) + 1  # + the convention's example
    wrong = []
    for script, flag, value in claims:
        r = run_help(script)
        assert r.returncode == 0, r.stderr[-2000:]
        defaults = help_defaults(r.stdout)
        assert flag in defaults, f"README names {flag} for {script}, which has no such option"
        names, default = defaults[flag]
        if not same_default(flag, value, names, default):
            wrong.append(f"{script} {flag}: README says {value}, --help says {default}")
    assert wrong == []


def test_the_help_parser_reads_argparse_entries():
    text = (
        "usage: x\n\nA description (default: not this)\n\noptions:\n  -h, --help  show this help message and exit\n"
        "  --minutes MINUTES  RL budget (default: 2.0)\n  --resume, --no-resume\n                        continue\n"
        "                        (default: False)\n  --steps STEPS  stop (default: only --minutes) (default: None)\n"
        "  --mode MODE  a mode (default:\n                        'answer_and_givens')\n"
    )
    d = help_defaults(text)
    assert d["--minutes"] == (["--minutes"], "2.0") and d["--no-resume"] == (["--resume", "--no-resume"], "False")
    assert d["--steps"][1] == "None" and d["--mode"][1] == "'answer_and_givens'"
    assert same_default("--minutes", "2", *d["--minutes"]) and same_default("--mode", "answer_and_givens", *d["--mode"])
    assert same_default("--no-resume", None, *d["--no-resume"]) and not same_default("--resume", None, *d["--resume"])


# ----------------------------------------------------------------------------- the results pages' commands

DRIVER = """
import contextlib, io, json, runpy, sys
results = []
for script, args in json.loads(sys.stdin.read()):
    sys.argv = [script, *args, "--help"]
    out, err, code = io.StringIO(), io.StringIO(), None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = stop.code
    results.append({"code": code, "usage": "usage:" in out.getvalue(), "err": err.getvalue()[-500:]})
print(json.dumps(results))
"""


def docstring_commands() -> list[tuple[str, tuple[str, ...]]]:
    """``(script, args)`` of every ````python train/X.py ...```` a module docstring of ``train/`` shows."""
    found = []
    for path in sorted((ROOT / "train").rglob("*.py")):
        doc = " ".join((ast.get_docstring(ast.parse(path.read_text())) or "").split())
        shown = re.finditer(r"``python (train/\w+\.py)((?: [^`]+)?)``", doc)
        found += [(m.group(1), tuple(shlex.split(m.group(2)))) for m in shown if "[" not in m.group(2)]  # not a synopsis
    return list(dict.fromkeys(found))


def test_every_command_of_the_results_pages_and_docstrings_starts_from_another_directory(tmp_path):
    """One process runs each command's ``--help`` (its entry point and option parsing), to keep the test quick."""
    shown = docstring_commands()
    assert ("train/ppo_recursion.py", ()) in shown and len(shown) >= 10
    commands = [c for page in sorted(RESULTS.glob("*.md")) for c in commands_in(page)] + shown
    commands = list(dict.fromkeys(commands))
    assert len(commands) >= 10
    missing = sorted({s for s, _ in commands if not (ROOT / s).is_file()})
    commands = [c for c in commands if (ROOT / c[0]).is_file()]
    (tmp_path / "driver.py").write_text(DRIVER)
    payload = json.dumps([(str(ROOT / s), list(a)) for s, a in commands])
    r = subprocess.run(
        [sys.executable, "driver.py"], input=payload, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env()
    )
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(r.stdout)
    failed = [
        f"{s} {' '.join(a)}: {x['err']}" for (s, a), x in zip(commands, results, strict=True) if x["code"] or not x["usage"]
    ]
    assert failed == [] and missing == [], f"failed: {failed}; docs/results name scripts that do not exist: {missing}"
