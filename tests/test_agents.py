"""Agents on the batched protocol, the episode runner and the benchmark table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agents
import train.benchmark as benchmark
from agents.base import AgentBase
from agents.runner import run_episodes, summarize
from agents.trm_agent import TRMAgent
from envs import sudoku
from trm.config import TRMConfig
from trm.model import TRM


@pytest.fixture(scope="module")
def mixed(tdoku_lines):
    """Real tdoku puzzles plus generated hard (rating 0) and extreme (rating > 0) ones."""
    rows = [(p, s) for p, c, s in tdoku_lines if c == 1]
    hp, hs = sudoku.generate(8, "hard", seed=5)
    ep, es = sudoku.generate(8, "extreme", seed=5)
    p = np.concatenate([sudoku.parse([p for p, _ in rows]), hp, ep])
    s = np.concatenate([sudoku.parse([s for _, s in rows]), hs, es])
    return p, s


def test_solver_solves_everything_and_random_nothing(mixed):
    solver = summarize(run_episodes(agents.make_agent("solver"), *mixed))
    assert solver["solve_rate"] == 1.0 and solver["mean_steps"] == 1.0 and solver["search_nodes_per_puzzle"] >= 1
    rand = summarize(run_episodes(agents.make_agent("random", seed=0), *mixed))
    assert rand["solve_rate"] == 0.0 and 0.05 < rand["cell_accuracy"] < 0.2 and rand["mean_steps"] == 16


def test_propagation_solves_exactly_the_rating_zero_puzzles(mixed):
    res = run_episodes(agents.make_agent("propagation"), *mixed, max_steps=81)
    ratings = sudoku.rate(mixed[0])
    assert np.array_equal(res["solved"], ratings == 0)
    assert (ratings == 0).any() and (ratings > 0).any()
    assert res["forward_passes"].sum() == 0


class _SolveThenRepeat(AgentBase):
    """Writes the solution on its first step and never halts: every later step is dead compute."""

    name = "solve_then_repeat"

    def __init__(self, solutions: np.ndarray) -> None:
        self.solutions = torch.as_tensor(solutions, dtype=torch.long)

    def reset(self, obs):
        return None

    def act(self, obs, state):
        n = obs["puzzle"].shape[0]
        action = torch.cat([self.solutions[:n], torch.zeros(n, 1, dtype=torch.long)], dim=1)
        return action, state, {"forward_passes": torch.ones(n)}


def test_steps_on_a_solved_board_count_as_dead_compute(mixed):
    res = summarize(run_episodes(_SolveThenRepeat(mixed[1]), *mixed, max_steps=5))
    assert res["solve_rate"] == 1.0 and res["mean_steps"] == 5 and res["forward_passes_per_puzzle"] == 5
    assert res["dead_compute_share"] == pytest.approx(4 / 5)
    assert res["solve_rate_per_step"] == [1.0] * 5


def test_trm_agent_counts_forward_passes_and_halts_by_its_q_head(mixed):
    cfg = TRMConfig(hidden=16, layers=1, n_sup=4, T=2, n=2)
    model = TRM(cfg)
    full = summarize(run_episodes(TRMAgent(model), *mixed))
    assert full["forward_passes_per_puzzle"] == 4 * 2 * 3 and full["mean_steps"] == 4
    with torch.no_grad():
        model.q_head.bias.fill_(10.0)  # the Q head now says "halt" after the first step
    halted = summarize(run_episodes(TRMAgent(model, halting=True), *mixed))
    assert halted["forward_passes_per_puzzle"] == 2 * 3 and halted["mean_steps"] == 1


def test_registry_refuses_unknown_names_missing_and_wrong_checkpoints(tmp_path, tiny_dis_checkpoint):
    with pytest.raises(ValueError, match="unknown agent 'alphazero'; known agents: random, propagation"):
        agents.make_agent("alphazero")
    with pytest.raises(FileNotFoundError, match="does not exist; available now: random"):
        agents.make_agent("trm", str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="holds a 'dis' model; expected trm"):
        agents.make_agent("trm", tiny_dis_checkpoint)
    assert agents.make_agent("dis", tiny_dis_checkpoint).name == "dis"


def test_sb3_models_act_through_the_wrapper(tmp_path, mixed):
    from stable_baselines3 import PPO

    from envs.sudoku_env import LatentReasoningSudokuEnv

    model = PPO("MultiInputPolicy", LatentReasoningSudokuEnv(pool_size=4), n_steps=8, batch_size=8, seed=0)
    model.save(tmp_path / "model.zip")
    agent = agents.make_agent("sb3_ppo", str(tmp_path / "model.zip"), trust=True)
    res = summarize(run_episodes(agent, mixed[0][:6], mixed[1][:6], max_steps=3))
    # one pass of the policy network per step and episode, counted by a hook
    assert res["forward_passes_per_puzzle"] == res["mean_steps"] > 0
    (tmp_path / "junk.zip").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a stable-baselines3 PPO model"):
        agents.make_agent("sb3_ppo", str(tmp_path / "junk.zip"), trust=True)


def bench_args(out, ckpt, *extra):
    args = ["--out", str(out), "--puzzles", "4", "--seeds", "3", "--tiers", "easy,extreme", "--guidance", "0,1"]
    return args + ["--agents", "random,propagation,solver,dis", "--checkpoint", f"dis={ckpt}", *extra]


@pytest.mark.slow
def test_benchmark_end_to_end_is_reproducible(tmp_path, tiny_dis_checkpoint):
    payload = benchmark.main(bench_args(tmp_path / "a", tiny_dis_checkpoint))
    benchmark.main(bench_args(tmp_path / "b", tiny_dis_checkpoint))
    a, b = (tmp_path / "a" / "results.csv").read_bytes(), (tmp_path / "b" / "results.csv").read_bytes()
    assert a == b
    assert len(a.decode().strip().splitlines()) == 1 + 2 * 4
    for name in ("table.md", "timing.csv", "results.json", "accuracy_per_step.png", "accuracy_vs_forward_passes.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert (tmp_path / "a" / "advantage_margin.png").exists() and (tmp_path / "a" / "accuracy_vs_guidance.png").exists()
    rows = {(r["agent"], r["tier"]): r for r in payload["rows"]}
    assert rows[("solver", "extreme")]["solve_rate"] == 1.0 and rows[("random", "easy")]["solve_rate"] == 0.0
    assert rows[("dis", "easy")]["forward_passes"] == 18.0
    assert [w for w, _ in payload["guidance_sweep"]["dis"]] == [0.0, 1.0]
    lo, mid, hi = (
        rows[("propagation", "easy")]["solve_lo"],
        rows[("propagation", "easy")]["solve_rate"],
        rows[("propagation", "easy")]["solve_hi"],
    )
    assert lo <= mid <= hi


def test_benchmark_fails_before_work_and_an_interrupt_leaves_no_table(tmp_path, tiny_dis_checkpoint, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--out", str(tmp_path / "x"), "--agents", "solver,nope", "--quick"])
    assert stop.value.code == 2 and "unknown agent 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--out", str(tmp_path / "x"), "--checkpoint", f"trm={tmp_path / 'none.pt'}", "--agents", "trm"])
    assert stop.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    calls = {"n": 0}
    real = benchmark.run_episodes

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] > 6:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(benchmark, "run_episodes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        benchmark.main(bench_args(tmp_path / "c", tiny_dis_checkpoint))
    assert not any(p.name in ("table.md", "results.csv", "results.json") for p in (tmp_path / "c").iterdir())


def test_benchmark_reads_a_tier_from_a_puzzle_file(tmp_path, tdoku_lines):
    unique = [f"{p}:1:{s}" for p, c, s in tdoku_lines if c == 1]
    f = tmp_path / "tdoku_unique.txt"
    f.write_text("\n".join(unique) + "\n")
    args = ["--out", str(tmp_path / "b"), "--tiers", "", "--puzzle-file", f"tdoku={f}", "--agents", "random,solver"]
    payload = benchmark.main(args + ["--seeds", "2", "--puzzles", "4", "--guidance", "1"])
    rows = {(r["agent"], r["tier"]): r for r in payload["rows"]}
    assert rows[("solver", "tdoku")]["solve_rate"] == 1.0 and rows[("solver", "tdoku")]["puzzles"] == 8
    assert rows[("random", "tdoku")]["solve_rate"] == 0.0
    with pytest.raises(SystemExit):
        benchmark.main(["--out", str(tmp_path / "c"), "--puzzle-file", "nofile"])
    assert not (tmp_path / "c").exists()


def test_sb3_agent_halts_at_the_step_count_it_was_trained_for(tmp_path, mixed):
    from stable_baselines3 import PPO

    from envs.sudoku_env import LatentReasoningSudokuEnv

    model = PPO("MultiInputPolicy", LatentReasoningSudokuEnv(pool_size=4, max_steps=3), n_steps=8, batch_size=8, seed=0)
    model.save(tmp_path / "model.zip")
    agent = agents.make_agent("sb3_ppo", str(tmp_path / "model.zip"), trust=True)
    assert agent.max_steps == 3
    res = summarize(run_episodes(agent, mixed[0][:6], mixed[1][:6], max_steps=16))  # more steps than it knows
    assert res["mean_steps"] <= 3
