"""Loading a model never runs code from it: every path that reads a checkpoint, and SB3's opt-in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import agents
from trm.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class _Runs:
    """Unpickling this calls ``os.system`` (what a hostile checkpoint would hold)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile(tmp_path, tiny_dis_checkpoint):
    """A checkpoint that looks like a DIS one but holds an object whose unpickling runs a command."""
    ck = load_checkpoint(tiny_dis_checkpoint)
    marker = tmp_path / "ran"
    ck["state"]["payload"] = _Runs(marker)
    path = tmp_path / "hostile" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(ck, path)
    return path, marker


def test_a_real_checkpoint_loads_with_weights_only(tiny_dis_checkpoint):
    ck = torch.load(tiny_dis_checkpoint, weights_only=True)  # plain torch.load as a user would call it
    assert ck["kind"] == "dis" and isinstance(ck["rng"]["numpy"]["key"], torch.Tensor)


def test_the_library_refuses_a_checkpoint_that_would_run_code(hostile):
    path, marker = hostile
    for load in (lambda: load_checkpoint(path), lambda: agents.make_agent("dis", str(path)),
                 lambda: agents.make_agent("search", str(path)), lambda: agents.make_agent("trm", str(path))):
        with pytest.raises(ValueError, match="loading never runs code"):
            load()
    assert not marker.exists()


@pytest.mark.parametrize("argv", [
    ["train/train_dis.py", "--init-from", "{ck}", "--steps", "1", "--out", "{tmp}/a"],
    ["train/train_dis.py", "--resume", "--out", "{dir}"],
    ["train/ppo_recursion.py", "--init-from", "{ck}", "--updates", "1", "--out", "{tmp}/b"],
    ["train/expert_iteration.py", "--init-from", "{ck}", "--updates", "1", "--out", "{tmp}/c"],
    ["train/search_curve.py", "--checkpoint", "{ck}", "--out", "{tmp}/d", "--tiers", "easy", "--puzzles", "2"],
    ["train/benchmark.py", "--checkpoint", "dis={ck}", "--agents", "dis", "--out", "{tmp}/e", "--tiers", "easy"],
    ["train/tier_table.py", "--checkpoint", "{ck}", "--out", "{tmp}/f", "--n", "2"],
])
def test_every_script_option_that_reads_a_checkpoint_refuses_it_unrun(hostile, tmp_path, argv):
    path, marker = hostile
    args = [a.format(ck=path, tmp=tmp_path, dir=path.parent) for a in argv]
    r = subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode != 0 and "loading never runs code" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not marker.exists()


def test_sb3_model_files_are_read_only_when_trusted(tmp_path):
    from stable_baselines3 import PPO

    from envs.sudoku_env import LatentReasoningSudokuEnv

    PPO("MultiInputPolicy", LatentReasoningSudokuEnv(pool_size=4), n_steps=8, batch_size=8, seed=0).save(tmp_path / "m.zip")
    with pytest.raises(ValueError, match="pickles that can run code"):
        agents.make_agent("sb3_ppo", str(tmp_path / "m.zip"))
    assert agents.make_agent("sb3_ppo", str(tmp_path / "m.zip"), trust=True).name == "sb3_ppo"


def test_a_fresh_run_never_replaces_a_finished_one_by_accident(tmp_path, capsys):
    import train.supervised as supervised

    out = tmp_path / "run"
    args = ["--out", str(out), "--steps", "1", "--pool-size", "16", "--eval-size", "4", "--hidden", "16", "--layers", "1"]
    supervised.main("dis", "", args)
    before = {n: (out / n).read_bytes() for n in ("checkpoint.pt", "run.json", "metrics.json")}
    events = sorted(p.name for p in (out / "tb").iterdir())
    with pytest.raises(SystemExit) as stop:
        supervised.main("dis", "", [*args, "--seed", "1"])
    assert stop.value.code == 2 or "--resume" in str(stop.value)
    message = str(stop.value) + capsys.readouterr().err
    assert "holds a run" in message and "--resume" in message and "--overwrite" in message
    assert {n: (out / n).read_bytes() for n in before} == before  # nothing lost
    supervised.main("dis", "", [*args, "--seed", "1", "--overwrite"])
    assert __import__("json").loads((out / "run.json").read_text())["seed"] == 1
    assert not set(events) & {p.name for p in (out / "tb").iterdir()}  # the old events went with the old run
    for bad, what in ((["--out", ""], "--out must name a folder"), (["--resume", "--overwrite"], "give one of them")):
        with pytest.raises(SystemExit) as stop:
            supervised.main("dis", "", [*args, *bad] if bad[0] != "--out" else [*args[2:], *bad])
        assert what in str(stop.value) + capsys.readouterr().err


def test_the_package_has_a_version_and_the_licence_it_declares():
    import re

    import envs

    text = (ROOT / "pyproject.toml").read_text()
    assert envs.__version__ == re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    assert 'license = { text = "MIT" }' in text and (ROOT / "LICENSE").read_text().startswith("MIT License")
