"""The main job: label-free RL on real 17-clue puzzles from the shipped start, beside its controls, with a test table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train.expert_iteration as expert
import train.ppo_recursion as ppo
from envs import canonical, real_sets
from train import supervised
from train.held_out import split, trained_grids
from train.rl import controls
from train.rl import start as rl_start
from train.rl.controls import measure
from trm import starts
from trm.checkpoint import load_checkpoint, load_model

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_start_is_a_dis_model_trained_with_labels_on_generated_puzzles_only():
    path = starts.resolve("shipped:dis_medium")
    assert Path(path).parent == ROOT / "trm" / "shipped" and starts.names() == ["dis_medium"]
    ck = load_checkpoint(path, kind="dis")  # weights only: loading runs no code
    assert ck["args"]["puzzles"] == "" and ck["args"]["difficulty"] == "medium" and ck["ema"] is None
    assert "optimizer" not in ck and ck["training"]["scheme"] == "dis"
    grids = trained_grids(ck)
    assert len(grids) == ck["args"]["pool_size"]
    for spec in ("sudoku17:test", "top1465:test", "sudoku17:train"):  # no real puzzle's grid among those it trained on
        p, s, _ = real_sets.load_part(spec)
        assert not np.isin(canonical.grid_hash(s), grids).any(), spec


def test_the_shipped_start_solves_fresh_medium_puzzles_and_no_17_clue_one_greedily():
    model, _ = load_model(starts.resolve("shipped:dis_medium"))
    d = split("medium", "", seed=123, pool_size=8, eval_size=64)
    fresh = ~np.isin(canonical.grid_hash(d.eval_solutions), trained_grids(load_checkpoint(starts.resolve("shipped:dis_medium"))))
    m = measure(model, d.eval_puzzles[fresh], d.eval_solutions[fresh], "cpu", False)
    assert fresh.sum() >= 60 and m["solve_rate"] >= 0.8 and m["forward_passes_per_puzzle"] == 18.0
    p, s, _ = real_sets.load_part("sudoku17:test")
    assert measure(model, p[:64], s[:64], "cpu", False)["solve_rate"] <= 0.05  # the gap label-free RL has to close


def test_an_unknown_shipped_start_is_refused_naming_those_shipped(tmp_path):
    with pytest.raises(ValueError, match="no shipped start 'shipped:nope'.*shipped:dis_medium"):
        starts.resolve("shipped:nope")
    assert starts.resolve("runs/x.pt") == "runs/x.pt"
    r = subprocess.run([sys.executable, str(ROOT / "train/ppo_recursion.py"), "--init-from", "shipped:nope", "--out", "run"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no shipped start 'shipped:nope'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_the_main_job_defaults_are_label_free_expert_iteration_on_17_clue_puzzles():
    a = ppo.parse_args([])
    assert (a.puzzles, a.env.reward_mode, a.update.objective) == ("sudoku17", "verifier", "expert")
    assert a.start.init_from == starts.resolve("shipped:dis_medium")  # shipped:dis_medium, resolved when validated
    assert a.forward_passes == ppo.MAIN_JOB_PASSES and a.expert.expert_search == 8 and a.lr == 1e-4
    c = a.control
    assert c.control_dis and c.control_data == "start" and c.parallel_controls and c.self_training
    assert c.test_set == "sudoku17:test"


@pytest.mark.parametrize(("argv", "message"), [
    (["--test-set", "sudoku17"], "--test-set must be a collection's test part"),
    (["--test-set", "top1465:train"], "--test-set must be a collection's test part"),
    (["--parallel-controls", "--forward-passes", "0"], "--parallel-controls trains the controls for --forward-passes"),
    (["--expert-search", "3"], "--expert-search 3 must be a positive divisor of --num-envs 128"),
    (["--expert-search", "0"], "--objective expert searches"),
    (["--init-from", "", "--puzzles", ""], "would warm up with labels on its own pool"),  # RL on generated puzzles
    (["--updates", "3"], "stop RL on it, not on --updates"),
    (["--greedy-first", "--expert-search", "1"], "--greedy-first needs a search to hand the failures to"),
    (["--greedy-first", "--objective", "group"], "--greedy-first belongs to --objective expert"),
])
def test_bad_main_job_settings_stop_with_one_line_and_no_folder(tmp_path, argv, message):
    r = subprocess.run([sys.executable, str(ROOT / "train/ppo_recursion.py"), *argv, "--out", "run"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_self_training_job_is_like_for_like_with_the_rl_run(tmp_path):
    a = ppo.parse_args(["--out", str(tmp_path / "rl"), "--seed", "3", "--lr", "2e-4", "--replay-size", "512",
                        "--replay-batches", "3", "--num-envs", "64", "--pool-size", "100", "--eval-size", "32",
                        "--greedy-first"])
    start = Path(starts.resolve("shipped:dis_medium"))
    st = expert.self_training_args(a, start, 12_345, "cpu")
    same = ("seed", "lr", "ema_decay", "puzzles", "difficulty", "pool_size", "eval_size")
    assert {k: getattr(st, k) for k in same} == {k: getattr(a, k) for k in same}
    assert (st.env.num_envs, st.env.group_size, st.env.reward_mode) == (64, a.env.group_size, "verifier")
    assert (st.expert.replay_size, st.expert.replay_batches, st.expert.expert_search) == (512, 3, 1)  # greedy: K = 1
    assert not st.expert.greedy_first  # c2 is the greedy stage alone
    st.validate()  # it runs as built (K = 1 with greedy first would be refused), in the background too
    job = expert.self_training_job(a, start, 12_345, "cpu")
    assert (job.source, job.train, job.args) == ("self", expert.train, st)
    assert st.forward_passes == 12_345 and st.start.init_from == str(start) and not st.control.control_dis
    assert Path(st.out) == tmp_path / "rl" / "self_training" and not st.control.self_training


@pytest.mark.slow
def test_a_background_control_that_fails_stops_the_run_naming_its_log(tmp_path):
    bad = supervised.default_args("dis", out=str(tmp_path / "c1"), seed=-1)  # refused when the control starts
    bg = controls.BackgroundControls([controls.ControlJob("start", bad, supervised.train)], 1000)
    try:
        with pytest.raises(SystemExit, match=f"background control in {tmp_path / 'c1'} failed .*see .*log.txt"):
            bg.collect(None, "cpu", lambda: False)  # noticed while waiting, before any measurement
    finally:
        bg.stop()
    assert "seed" in (tmp_path / "c1" / "log.txt").read_text()  # its traceback is in its log
    assert torch.get_num_threads() == bg.threads  # the cores are RL's again


@pytest.mark.slow
def test_without_parallel_controls_self_training_trains_after_rl_for_the_passes_rl_spent(tmp_path, tiny_dis_checkpoint,
                                                                                         capsys):
    out = tmp_path / "rl"
    m = expert.main(["--out", str(out), "--init-from", tiny_dis_checkpoint, "--puzzles", "", "--reward-mode", "verifier",
                     "--updates", "2", "--num-envs", "8", "--expert-search", "4", "--pool-size", "32", "--eval-size", "8",
                     "--checkpoint-every", "0", "--self-training", "--no-parallel-controls", "--no-control-dis",
                     "--test-set", ""])
    c2 = m["controls"]["self_training"]
    assert m["controls"]["dis_continued"] is None and c2["data"] == "self"
    assert c2["train_forward_passes"] >= m["train_forward_passes"] > 0  # RL's spent passes, counted by c2's model
    assert load_checkpoint(c2["checkpoint"])["args"]["expert_search"] == 1 and (out / "self_training" / "log.txt").is_file()
    printed = capsys.readouterr().out
    assert f"control: self-training without search for {m['train_forward_passes']:,} training forward passes" in printed
    assert "in the background" not in printed


def test_a_verifier_run_warms_up_with_labels_on_generated_puzzles_never_its_own(tmp_path, monkeypatch):
    seen = {}

    class Warmed(Exception):
        pass

    def capture(a, exclude=None):
        seen.update(puzzles=a.puzzles, difficulty=a.difficulty, minutes=a.minutes, excluded=len(exclude))
        raise Warmed

    monkeypatch.setattr(rl_start.supervised, "train", capture)
    with pytest.raises(Warmed):
        ppo.main(["--init-from", "", "--warm-minutes", "0.5", "--difficulty", "medium", "--eval-size", "16",
                  "--out", str(tmp_path / "run"), "--no-self-training", "--test-set", ""])
    assert seen == {"puzzles": "", "difficulty": "medium", "minutes": 0.5, "excluded": 16}  # RL's held-out kept out too


@pytest.mark.slow
def test_the_main_job_trains_rl_and_both_controls_for_the_same_passes_and_reports_a_test_table(tmp_path, capsys):
    out = tmp_path / "job"
    m = ppo.main(["--out", str(out), "--forward-passes", "8000", "--num-envs", "16", "--eval-size", "16", "--val-size", "16",
                  "--test-size", "24", "--checkpoint-every", "0"])
    rows = m["test"]["rows"]
    c1, c2 = "c1: DIS on the start's labelled source", "c2: self-training without search"
    assert list(rows) == ["start", "after RL", c1, c2]
    dropped = sum(m["test"]["dropped"]["dropped_trained"].values())
    assert m["test"]["set"] == "sudoku17:test" and m["test"]["puzzles"] + dropped == 24
    assert rows["start"]["train_forward_passes"] == 0 and rows["start"]["checkpoint"] == starts.resolve("shipped:dis_medium")
    for name in ("after RL", c1, c2):  # every arm trained at least the budget, counted by its model
        assert rows[name]["train_forward_passes"] >= 8000 and rows[name]["forward_passes_per_puzzle"] == 18.0
    assert (out / "dis_continued" / "log.txt").is_file() and (out / "self_training" / "log.txt").is_file()
    assert load_checkpoint(out / "dis_continued" / "checkpoint.pt")["args"]["difficulty"] == "medium"  # labelled source
    assert load_checkpoint(out / "self_training" / "checkpoint.pt")["args"]["expert_search"] == 1
    assert load_checkpoint(out / "checkpoint.pt", kind="expert_iteration")["args"]["reward_mode"] == "verifier"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["rows"]["after RL"]["solve_rate"] == rows["after RL"]["solve_rate"]
    printed = capsys.readouterr().out
    assert "sudoku17:test, first" in printed and "| after RL minus | points |" in printed
    for control in ("DIS (start data, labelled)", "self-training without search"):  # both beside RL, same budget
        assert f"control: {control} for 8,000 training forward passes, in the background" in printed
