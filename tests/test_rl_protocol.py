"""The protocol that measures label-free RL against its controls: budgets in forward passes, the shared
credit of the group objective, per-seed controls, and the protocol end to end on the real 17-clue puzzles."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train.expert_iteration as expert
import train.ppo_recursion as ppo
import train.rl_protocol as protocol
import train.supervised as supervised
from train.distributed import Dist
from train.rl.advantages import advantages

ROOT = Path(__file__).resolve().parents[1]


def test_shared_credit_gives_every_blank_cell_its_episodes_group_advantage_solve_bonus_included(capsys):
    # two groups of two episodes of one puzzle; episode 1 solves its board at step 1 (bonus 1.0)
    valid = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)
    reward = torch.tensor([[-0.02, -0.02, -0.02, -0.02], [0.0, 0.98, -0.02, 0.0]])
    blank = torch.zeros(2, 4, 81, dtype=torch.bool)
    blank[..., :3] = True  # three blank cells per board
    buf = {"valid": valid, "reward": reward, "cell_reward": torch.zeros(2, 4, 81), "blank": blank}
    args = ppo.parse_args(["--objective", "group", "--group-size", "2", "--num-envs", "4", "--credit", "shared"])
    adv = advantages(buf, args.advantage, Dist(), group_size=2)
    expected = torch.tensor([-0.02 - 0.96, 0.96 + 0.02, -0.04 + 0.02, -0.02 + 0.04])  # R_i - R_other
    assert torch.allclose(adv.step, torch.where(valid, expected[None], 0.0))
    # each blank cell of every running step carries its episode's advantage: the solver's cells get +0.98
    assert torch.allclose(adv.cell[1, 1, :3], torch.full((3,), 0.98))
    assert torch.allclose(adv.cell[0, 0, :3], torch.full((3,), -0.98))
    assert torch.all(adv.cell[..., 3:] == 0) and torch.all(adv.cell[~valid] == 0)  # givens and finished episodes: none
    assert torch.allclose(adv.cell_n[1, 1, 0], adv.step_n[1, 1]) and torch.allclose(adv.cell_n[0, 2, 1], adv.step_n[0, 2])
    with pytest.raises(SystemExit):
        ppo.parse_args(["--credit", "shared"])
    assert "--credit shared is the group objective's" in capsys.readouterr().err


def tiny_dis_args(out, *extra):
    return ["--out", str(out), "--pool-size", "64", "--eval-size", "8", "--hidden", "16", "--layers", "1",
            "--batch-size", "8", "--checkpoint-every", "0", "--eval-limit", "4", *extra]


def test_a_forward_pass_budget_stops_training_at_the_models_own_count(tmp_path):
    m = supervised.train(supervised.parse_args("dis", tiny_dis_args(tmp_path / "dis", "--forward-passes", "1000")))
    per_batch = 8 * 18  # batch 8, six supervision steps of three network calls
    assert 1000 <= m["train_forward_passes"] < 1000 + per_batch and m["batches"] == -(-1000 // per_batch)
    assert m["interrupted"] is False
    with pytest.raises(SystemExit):
        supervised.parse_args("dis", tiny_dis_args(tmp_path / "bad", "--forward-passes", "-1")).validate()


@pytest.mark.slow
def test_an_rl_run_stops_at_its_forward_pass_budget_and_its_control_gets_as_many(tmp_path, tiny_dis_checkpoint, capsys):
    argv = ["--out", str(tmp_path), "--init-from", tiny_dis_checkpoint, "--num-envs", "8", "--pool-size", "32",
            "--eval-size", "8", "--minutes", "5", "--checkpoint-every", "0", "--forward-passes", "600", "--seed", "3",
            "--lr", "1e-4", "--control-data", "both", "--val-size", "8"]
    m = expert.main(argv)
    assert m["train_forward_passes"] >= 600 and m["updates"] >= 1
    for source, folder in (("dis_continued", "dis_continued"), ("dis_on_rl_data", "dis_on_rl_data")):
        c = m["controls"][source]
        assert c["train_forward_passes"] >= m["train_forward_passes"] and c["optimizer_steps"] > 0
        run = json.loads((tmp_path / folder / "run.json").read_text())
        # a fine-tune of the start with this run's seed, never a resumed copy of the start run
        assert run["args"]["seed"] == 3 and run["args"]["init_from"] == tiny_dis_checkpoint and not run["args"]["resume"]
        assert run["training"]["lr"] == 1e-4 and run["training"]["lr_min_ratio"] == 1.0
    assert re.search(r"\| DIS on its own data instead of RL \([0-9,]+ passes, [0-9.]+ min\), all steps \|",
                     capsys.readouterr().out)


@pytest.mark.slow
def test_the_protocol_trains_every_arm_per_seed_on_equal_passes_and_tables_paired_differences(
    tmp_path, tiny_dis_checkpoint, capsys
):
    out = tmp_path / "protocol"
    argv = ["--start", tiny_dis_checkpoint, "--out", str(out), "--seeds", "0,1", "--forward-passes", "1500",
            "--num-envs", "8", "--expert-search", "4", "--group-size", "4", "--replay-batches", "1", "--val-size", "16",
            "--eval-size", "16", "--search-size", "4", "--search-k", "2", "--families", "expert,group"]
    p = protocol.main(argv)
    for seed in ("0", "1"):
        arms = p["runs"][seed]["arms"]
        assert min(arms[rl]["train_forward_passes"] for rl in ("rl_expert", "rl_group")) >= 1500
        spent = max(arms[rl]["train_forward_passes"] for rl in ("rl_expert", "rl_group"))
        for arm in ("c1_dis_source", "c2_self_training", "c4_dis_labelled"):
            assert arms[arm]["train_forward_passes"] >= spent  # each control trained for what its RL arm spent
        root = out / f"seed{seed}"
        c1 = json.loads((root / "c1_dis_source" / "run.json").read_text())
        c4 = json.loads((root / "c4_dis_labelled" / "run.json").read_text())
        c2 = json.loads((root / "c2_self_training" / "run.json").read_text())
        rl = json.loads((root / "rl_expert" / "run.json").read_text())
        group = json.loads((root / "rl_group" / "run.json").read_text())
        assert group["args"]["objective"] == "group" and group["args"]["credit"] == "shared"
        assert group["args"]["reward_mode"] == "verifier" and group["args"]["seed"] == int(seed)
        assert c1["data"] == "generated:easy" and c4["data"] == "collection:sudoku17:train"  # the start's source; RL's
        assert {r["args"]["seed"] for r in (c1, c2, c4, rl)} == {int(seed)}  # every arm its seed's own stream
        assert rl["args"]["reward_mode"] == c2["args"]["reward_mode"] == "verifier"
        assert rl["args"]["expert_search"] == 4 and c2["args"]["expert_search"] == 1  # c2: greedy answers only
        assert rl["args"]["lr"] == c2["args"]["lr"] == c1["training"]["lr"] == 1e-4
    assert p["sets"] == {"sudoku17:val": 16}
    table = (out / "table_val.md").read_text()
    for row in ("| start |", "| rl_expert |", "| rl_group |", "| c1_dis_source |", "| c2_self_training |",
                "| c4_dis_labelled |", "| rl_expert - c1 |", "| rl_group - c2 |", "| rl_group - start, search K = 2 |",
                "| start, search K = 2 |", "| rl_expert, search K = 2 |"):
        assert row in table
    with pytest.raises(SystemExit):  # a second protocol in the same folder needs --resume
        protocol.main(argv)
    assert "add --resume" in capsys.readouterr().err
    again = protocol.main([*argv, "--resume"])  # finished arms are read back, not retrained
    assert again["runs"]["0"]["arms"] == p["runs"]["0"]["arms"]
    rl_metrics = out / "seed1" / "rl_expert" / "metrics.json"  # as a stop (SIGTERM, Ctrl-C) leaves an arm
    stopped = {**json.loads(rl_metrics.read_text()), "interrupted": True}
    rl_metrics.write_text(json.dumps(stopped))
    third = protocol.main([*argv, "--resume"])  # the stopped arm resumes from its checkpoint; it is not read back
    assert json.loads(rl_metrics.read_text())["interrupted"] is False and "resumes" in json.loads(
        (out / "seed1" / "rl_expert" / "run.json").read_text())
    assert third["runs"]["0"]["arms"] == p["runs"]["0"]["arms"]


def test_an_arm_counts_as_finished_only_when_it_ran_to_its_budget(tmp_path):
    assert protocol.finished(tmp_path) is None  # never ran
    (tmp_path / "metrics.json").write_text(json.dumps({"interrupted": True, "train_forward_passes": 10}))
    assert protocol.finished(tmp_path) is None  # stopped early: resume or rerun it
    (tmp_path / "metrics.json").write_text(json.dumps({"interrupted": False, "train_forward_passes": 10}))
    assert protocol.finished(tmp_path)["train_forward_passes"] == 10


def test_protocol_refuses_bad_settings_before_creating_anything(tmp_path, tiny_dis_checkpoint, capsys):
    cases = [
        (["--start", str(tmp_path / "missing.pt")], "--start: no checkpoint"),
        (["--start", tiny_dis_checkpoint, "--seeds", "1,1"], "--seeds must be distinct"),
        (["--start", tiny_dis_checkpoint, "--puzzles", "sudoku17:test"], "--puzzles must be a collection's training part"),
        (["--start", tiny_dis_checkpoint, "--expert-search", "3"], "must divide --num-envs 128"),
        (["--start", tiny_dis_checkpoint, "--lr", "nan"], "--lr must be a finite number"),
        (["--start", tiny_dis_checkpoint, "--families", "expert,ppo"], "--families must list some of expert, hybrid, group"),
        (["--start", tiny_dis_checkpoint, "--families", "hybrid", "--expert-search", "1"], "--expert-search must be at least 2"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            protocol.main(["--out", str(tmp_path / "p"), *extra])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_protocol_help_runs_from_another_directory(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train" / "rl_protocol.py"), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--forward-passes" in r.stdout and "c2_self_training" in r.stdout
