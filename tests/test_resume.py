"""Stops that lose nothing: a run killed with SIGKILL after a checkpoint, then resumed, ends bit-identical."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trm.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
RL = ["--updates", "12", "--num-envs", "8", "--pool-size", "32", "--eval-size", "8"]
# PPO on generated puzzles with labels, not the main job's default (label-free expert iteration on real puzzles)
GENERATED_PPO = ["--puzzles", "", "--reward-mode", "solution", "--objective", "ppo", "--test-set", "", "--no-self-training",
                 "--forward-passes", "0", "--no-parallel-controls"]
RL += GENERATED_PPO
TINY = ["--hidden", "16", "--layers", "1", "--batch-size", "8", "--pool-size", "64", "--eval-size", "8"]
CASES = {
    "dis": ("train/train_dis.py", [*TINY, "--steps", "25"], "batch"),
    "trm": ("train/train_trm.py", [*TINY, "--steps", "25", "--n-sup", "3", "--T", "2", "--n", "1"], "batch"),
    "ppo_recursion": ("train/ppo_recursion.py", RL, "update"),
}


def _cmd(script: str, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / script), "--out", str(out), "--minutes", "10", "--checkpoint-every", "0", *extra]


def _saved_count(ckpt: Path, key: str) -> int:
    try:
        return load_checkpoint(ckpt)["state"][key]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_sigkill_after_a_checkpoint_then_resume_ends_bit_identical(kind, tmp_path, tiny_dis_checkpoint):
    script, extra, key = CASES[kind]
    if kind == "ppo_recursion":
        extra = [*extra, "--init-from", tiny_dis_checkpoint]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cmd(script, straight, extra), check=True, capture_output=True, timeout=600, cwd=tmp_path)
    proc = subprocess.Popen(_cmd(script, killed, extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 300
    while _saved_count(killed / "checkpoint.pt", key) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL, "the run ended before it could be killed"
    stopped_at = _saved_count(killed / "checkpoint.pt", key)
    assert 3 <= stopped_at < int(extra[extra.index(f"--{key}s" if key == "update" else "--steps") + 1])
    r = subprocess.run(_cmd(script, killed, [*extra, "--resume"]), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert {k: v for k, v in a["state"].items() if k != "wall_seconds"} == {
        k: v for k, v in b["state"].items() if k != "wall_seconds"
    }
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert ma["solve_rate"] == mb["solve_rate"] and ma["forward_passes_per_puzzle"] == mb["forward_passes_per_puzzle"]
    run = json.loads((killed / "run.json").read_text())
    assert len(run["resumes"]) == 1 and "--resume" in run["resumes"][0]["command"]


@pytest.mark.slow
def test_resume_refuses_other_data_listing_every_difference(tmp_path, capsys):
    from train import supervised

    args = ["--out", str(tmp_path), *TINY, "--steps", "1", "--checkpoint-every", "0"]
    supervised.train(supervised.parse_args("dis", args))
    with pytest.raises(ValueError, match=r"difficulty: 'easy' -> 'hard'; .*seed: 0 -> 1"):
        supervised.train(supervised.parse_args("dis", [*args, "--resume", "--seed", "1", "--difficulty", "hard"]))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_saves_marks_metrics_interrupted_and_exits_130_without_a_traceback(sig, tmp_path):
    out = tmp_path / "run"
    cmd = _cmd("train/train_dis.py", out, [*TINY, "--steps", "100000"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 300
    while _saved_count(out / "checkpoint.pt", "batch") < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["batches"] == load_checkpoint(out / "checkpoint.pt")["state"]["batch"]
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
def test_a_stop_during_the_warm_start_stops_the_rl_job_too(tmp_path):
    out = tmp_path / "rl"
    cmd = [sys.executable, str(ROOT / "train/ppo_recursion.py"), "--out", str(out), "--warm-minutes", "2", "--minutes", "2"]
    cmd += ["--hidden", "16", "--pool-size", "64", "--eval-size", "8", "--warm-eval-size", "4", "--num-envs", "8"]
    cmd += ["--no-control-dis", "--init-from", "", *GENERATED_PPO]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 300
    while _saved_count(out / "warm_dis" / "checkpoint.pt", "batch") < 1 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert json.loads((out / "warm_dis" / "metrics.json").read_text())["interrupted"] is True
    rl = json.loads((out / "metrics.json").read_text())
    assert rl["interrupted"] is True and rl["updates"] == 0


def test_init_from_starts_from_the_checkpoints_weights_and_refuses_another_shape(tmp_path, tiny_dis_checkpoint, capsys):
    from train import supervised
    from trm.checkpoint import model_weights

    # learning rate 0 and no weight decay: one batch leaves the weights where --init-from put them
    args = ["--out", str(tmp_path / "ft"), *TINY, "--steps", "1", "--lr", "0", "--weight-decay", "0", "--difficulty", "medium"]
    supervised.train(supervised.parse_args("dis", [*args, "--init-from", tiny_dis_checkpoint]))
    start, tuned = load_checkpoint(tiny_dis_checkpoint), load_checkpoint(tmp_path / "ft" / "checkpoint.pt")
    for name, w in model_weights(start).items():
        assert torch.equal(tuned["model"][name], w), name
    assert tuned["state"]["batch"] == 1 and tuned["args"]["difficulty"] == "medium"  # fresh counters, its own data
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["args"]["init_from"] == tiny_dis_checkpoint
    bad = [str(tmp_path / "bad") if a == str(tmp_path / "ft") else a for a in args]
    bad[bad.index("--hidden") + 1] = "32"
    with pytest.raises(SystemExit) as stop:  # a bad option: one line, exit status 2
        supervised.parse_args("dis", [*bad, "--init-from", tiny_dis_checkpoint])
    assert stop.value.code == 2 and not (tmp_path / "bad").exists()  # refused before anything was created
    assert re.search(r"--init-from: .*tiny_dis.*another model shape .*hidden: 16 -> 32", capsys.readouterr().err)
    with pytest.raises(SystemExit):
        supervised.parse_args("trm", ["--out", str(tmp_path / "trm"), "--steps", "1", "--init-from", tiny_dis_checkpoint])
    assert "--init-from: checkpoint" in capsys.readouterr().err
