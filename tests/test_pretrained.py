"""Models to share: config.json + model.safetensors, written from a checkpoint and read by every agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import agents
from agents.runner import run_episodes
from envs import sudoku
from train.benchmark import drop_trained
from trm.checkpoint import load_checkpoint, load_model, model_weights
from trm.config import TRMConfig
from trm.model import TRM
from trm.pretrained import export_checkpoint, from_pretrained, save_pretrained

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def exported(tmp_path, tiny_dis_checkpoint) -> Path:
    return export_checkpoint(tiny_dis_checkpoint, tmp_path / "model")


def test_the_folder_holds_the_config_and_the_average_weights_as_safetensors(exported, tiny_dis_checkpoint):
    from safetensors.torch import load_file

    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "model.safetensors", "train_grids.npy"]
    meta = json.loads((exported / "config.json").read_text())
    ck = load_checkpoint(tiny_dis_checkpoint)
    assert meta["kind"] == "dis" and meta["weights"] == "ema" and meta["config"] == ck["config"]
    saved, ema = load_file(str(exported / "model.safetensors")), model_weights(ck, ema=True)
    assert saved.keys() == ema.keys() and all(torch.equal(saved[k], ema[k]) for k in ema)
    np.testing.assert_array_equal(np.load(exported / "train_grids.npy"), ck["train_grids"].numpy().view(np.uint64))


def test_a_model_round_trips_through_save_and_from_pretrained(tmp_path):
    torch.manual_seed(0)
    model = TRM(TRMConfig(hidden=16, layers=1)).eval()
    model.save_pretrained(str(tmp_path / "m"), kind="dis")
    again = TRM.from_pretrained(str(tmp_path / "m"))
    puzzles, _ = sudoku.generate(4, "easy", seed=3)
    tokens = torch.as_tensor(puzzles, dtype=torch.long)
    y, z = model.initial_state(4)
    a = model.step(model.input_tokens(tokens, tokens), y, z, 1)
    b = again.step(again.input_tokens(tokens, tokens), y, z, 1)
    assert torch.equal(a.logits, b.logits)
    assert not (tmp_path / "m" / "train_grids.npy").exists()


def test_agents_and_the_benchmark_take_the_folder_as_they_take_the_checkpoint(exported, tiny_dis_checkpoint):
    puzzles, solutions = sudoku.generate(8, "easy", seed=5)
    from_ck = run_episodes(agents.make_agent("dis", tiny_dis_checkpoint), puzzles, solutions)
    from_dir = run_episodes(agents.make_agent("dis", str(exported)), puzzles, solutions)
    np.testing.assert_array_equal(from_ck["answers"], from_dir["answers"])
    np.testing.assert_array_equal(from_ck["forward_passes"], from_dir["forward_passes"])
    assert agents.make_agent("search", str(exported), k=2).name == "search"
    # the lineage travels with the folder: the benchmark drops the same training puzzles for both
    ck = load_checkpoint(tiny_dis_checkpoint)
    model, meta = load_model(exported)
    assert torch.equal(meta["train_grids"], ck["train_grids"])


def test_the_benchmark_drops_what_a_folders_lineage_trained_on(exported, tiny_dis_checkpoint):
    from train.held_out import split

    data = split("easy", "", seed=0, pool_size=64, eval_size=8)  # the fixture's training pool
    p = np.concatenate([data.train.puzzles[:12], data.eval_puzzles[:4]])  # 12 trained on, 4 held out
    s = np.concatenate([data.train.solutions[:12], data.eval_solutions[:4]])
    by_ck = drop_trained({"mixed": (p.copy(), s.copy())}, {tiny_dis_checkpoint})
    by_dir = drop_trained({"mixed": (p.copy(), s.copy())}, {str(exported)})
    assert by_ck["dropped_trained"] == by_dir["dropped_trained"] == {"mixed": 12}


def test_an_existing_model_is_not_replaced_unless_asked(exported, tiny_dis_checkpoint):
    with pytest.raises(FileExistsError, match="already holds a model"):
        export_checkpoint(tiny_dis_checkpoint, exported)
    export_checkpoint(tiny_dis_checkpoint, exported, ema=False, overwrite=True)
    assert json.loads((exported / "config.json").read_text())["weights"] == "live"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").write_text('{\n  "format": "latent-reasoning-gym/trm",\n  "kind": dis\n}'),
         r"config.json line 3: not valid JSON"),
        (lambda d: (d / "config.json").write_text('{"format": "other"}'), "is not a Latent Reasoning Gym model config"),
        (lambda d: (d / "config.json").unlink(), "config.json does not exist"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors does not exist"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 40), "not a readable safetensors file"),
        (lambda d: np.save(d / "train_grids.npy", np.array([{"a": 1}], dtype=object)), "not a plain array file"),
        (lambda d: np.savez(open(d / "train_grids.npy", "wb"), a=np.zeros(2)), "not a plain array file"),
        (lambda d: (d / "train_grids.npy").write_bytes(b""), "not a plain array file"),
        (lambda d: _edit_config(d, hidden=16.5), "bad 'config'"),
        (lambda d: _edit_config(d, hidden=32), "does not match"),
        (lambda d: _edit_config(d, bogus=1), "unknown TRMConfig fields"),
    ],
    ids=["bad-json", "format", "no-config", "no-weights", "corrupt-weights", "pickled-grids", "npz-grids", "empty-grids",
         "float-width", "shape", "unknown-field"],
)
def test_a_damaged_folder_is_refused_naming_the_file(exported, damage, message):
    damage(exported)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        from_pretrained(exported)


def _edit_config(d: Path, **changes) -> None:
    meta = json.loads((d / "config.json").read_text())
    meta["config"].update(changes)
    (d / "config.json").write_text(json.dumps(meta))


def test_save_pretrained_refuses_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        save_pretrained(tmp_path / "m", TRM(TRMConfig(hidden=16, layers=1)), kind="sb3_ppo")
    assert not (tmp_path / "m").exists()


def test_the_export_script_runs_from_another_directory(tmp_path, tiny_dis_checkpoint):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "train/export_model.py"), "--checkpoint", tiny_dis_checkpoint, "--out", "shared"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "wrote shared" in r.stdout, r.stderr
    assert (tmp_path / "shared" / "model.safetensors").is_file()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    bench = [sys.executable, str(ROOT / "train/search_curve.py"), "--checkpoint", "shared", "--tiers", "easy",
             "--puzzles", "2", "--ks", "1,2", "--out", "curve"]
    r = subprocess.run(bench, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "curve" / "search.json").is_file()
