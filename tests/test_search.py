"""Test-time search with the rules as verifier: symmetries, the verifier, the agent, the K sweep and the benchmark row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import agents
from agents.runner import run_episodes
from agents.search_agent import SearchAgent
from agents.trm_agent import TRMAgent
from envs import augmentation, sudoku
from envs.rules import verified
from trm.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]


def test_inverse_symmetry_undoes_every_random_symmetry(real_unique):
    p, s = (torch.as_tensor(x, dtype=torch.long) for x in real_unique)
    src, digit = augmentation.random_symmetry(len(p), torch.Generator().manual_seed(3))
    view_p, view_s = augmentation.apply(src, digit, p, s)
    assert not torch.equal(view_p, p)
    assert all(sudoku.is_solution(a.numpy(), b.numpy()) for a, b in zip(view_p, view_s, strict=True))  # a symmetry keeps validity
    back_p, back_s = augmentation.apply(*augmentation.inverse(src, digit), view_p, view_s)
    assert torch.equal(back_p, p) and torch.equal(back_s, s)
    i_src, i_digit = augmentation.identity(2)
    assert torch.equal(augmentation.apply(i_src, i_digit, p[:2])[0], p[:2])


def test_verifier_accepts_exactly_complete_conflict_free_grids_that_keep_the_givens(real_unique):
    p, s = (torch.as_tensor(x, dtype=torch.long) for x in real_unique)
    assert verified(p, s).all()
    wrong = s.clone()
    blank = int((p[0] == 0).nonzero()[0])
    wrong[0, blank] = wrong[0, blank] % 9 + 1  # one blank changed: a conflict
    incomplete = s.clone()
    incomplete[1, blank] = 0
    relabelled = s.clone()
    relabelled[2] = torch.tensor([0, 2, 3, 4, 5, 6, 7, 8, 9, 1])[s[2]]  # conflict-free, but the givens are lost
    ok = verified(p[:3], torch.cat([wrong[:1], incomplete[1:2], relabelled[2:3]]))
    assert not ok.any()


@pytest.fixture(scope="module")
def tiny_model(tiny_dis_checkpoint):
    model, _ = load_model(tiny_dis_checkpoint, "dis")
    return model


def test_one_trajectory_is_greedy_decoding(tiny_model, real_unique):
    p, s = real_unique
    greedy = run_episodes(TRMAgent(tiny_model), p, s, max_steps=6)
    search = run_episodes(SearchAgent(tiny_model, k=1), p, s, max_steps=6)
    assert np.array_equal(greedy["cell_accuracy"], search["cell_accuracy"])
    assert np.array_equal(greedy["forward_passes"], search["forward_passes"])


def test_search_finds_verified_answers_that_greedy_misses_and_counts_every_trajectory(tiny_model, real_unique):
    p, s = real_unique
    near = s.copy()
    rng = np.random.default_rng(0)
    for row in near:  # two blanks per puzzle: the untrained model rarely fills both right greedily
        row[rng.choice(81, 2, replace=False)] = 0
    greedy = run_episodes(SearchAgent(tiny_model, k=1), near, s, max_steps=6)
    search = run_episodes(SearchAgent(tiny_model, k=32, temperature=3.0), near, s, max_steps=6)
    assert search["solved"].mean() > greedy["solved"].mean()
    assert search["solved"].mean() >= 0.75  # 32 tries at two blanks: most puzzles, not necessarily all
    per_step = greedy["forward_passes"].max() / 6  # one trajectory's calls per step
    # a puzzle stops once verified: K trajectories were paid for each step it took, no more
    assert np.allclose(search["forward_passes"], 32 * per_step * search["steps"])
    assert (search["steps"][search["solved"]] < 6).mean() > 0.5
    # the runner returns the answer each episode ended with: the solved ones are the solutions
    assert np.array_equal(search["answers"][search["solved"]], s[search["solved"]])
    assert (search["answers"][near > 0] == near[near > 0]).all()  # the givens are kept


def test_search_agent_refuses_bad_settings(tiny_model):
    for kw in ({"k": 0}, {"temperature": 0.0}, {"latent_noise": -1.0}):
        with pytest.raises(ValueError):
            SearchAgent(tiny_model, **kw)


def test_search_is_a_benchmark_agent(tiny_dis_checkpoint, real_unique):
    agent = agents.make_agent("search", agents.checkpoint_path("search", {"dis": tiny_dis_checkpoint}))
    assert agent.k == 16 and agent.name == "search"
    r = run_episodes(agent, real_unique[0][:3], real_unique[1][:3], max_steps=6)
    assert r["forward_passes"].min() > 0


@pytest.mark.slow
def test_search_curve_script_from_another_directory(tmp_path, tiny_dis_checkpoint, real_unique):
    f = tmp_path / "unlabelled.txt"  # a puzzle file with no solutions: the search reads none
    f.write_text("\n".join(sudoku.format(real_unique[0])) + "\n")
    out = tmp_path / "curve"
    cmd = [sys.executable, str(REPO / "train" / "search_curve.py"), "--checkpoint", tiny_dis_checkpoint, "--tiers", "easy",
           "--puzzle-file", f"tdoku={f}", "--puzzles", "6", "--ks", "1,2", "--chunk", "4", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "search.json").read_text())["rows"]
    assert [(x["tier"], x["k"]) for x in rows] == [("easy", 1), ("easy", 2), ("tdoku", 1), ("tdoku", 2)]
    assert all(x["puzzles"] == 6 for x in rows)
    assert rows[1]["forward_passes_per_puzzle"] > rows[0]["forward_passes_per_puzzle"]
    assert (out / "search_curve.png").stat().st_size > 0 and "| tdoku | 2 |" in (out / "search.md").read_text()
    bad = subprocess.run(cmd[:2] + ["--checkpoint", str(tmp_path / "none.pt")], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "none.pt" in bad.stderr
