"""RL over recursion steps: the main job end to end, label-free training, bad input, DDP, and SB3."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist

import train.expert_iteration as expert
import train.ppo_recursion as ppo
from agents.recursion_policy import PolicySettings, RecursionPolicy, cell_log_probs, log_prob_entropy
from envs import sudoku
from envs.vector_env import LatentReasoningSudokuVectorEnv
from train.distributed import Dist
from train.held_out import split
from train.rl import controls
from train.rl.advantages import advantages, gae, leave_one_out
from train.rl.rollout import rollout
from train.rl.update import policy_loss
from train.run_folder import Diverged
from trm.checkpoint import load_checkpoint, load_model
from trm.config import TRMConfig
from trm.model import TRM


def ppo_update(policy, opt, buf, argv, ddp, generator, rows=None):
    """One PPO update of ``buf`` under the settings the command line ``argv`` gives."""
    pins = ["--puzzles", "", "--reward-mode", "solution", "--init-from", "", "--test-set", ""]  # not the main job's data
    a = ppo.parse_args([*pins, *(argv if "--objective" in argv else ["--objective", "ppo", *argv])])
    adv = advantages(buf, a.advantage, ddp, a.env.group_size if a.update.grouped else 0)
    return ppo.update(policy, opt, buf, adv, a.update, a.policy, ddp, generator, rows)


def rl_args(out, ckpt, *extra):
    """A tiny RL run's options on generated puzzles with labels (not the main job's real puzzles); one given in
    ``extra`` replaces the one here (the CLI takes an option once)."""
    base = {"--out": str(out), "--init-from": ckpt, "--updates": "2", "--num-envs": "8", "--pool-size": "32"}
    base |= {"--eval-size": "8", "--minutes": "5", "--checkpoint-every": "0", "--puzzles": "", "--reward-mode": "solution"}
    base |= {"--test-set": "", "--forward-passes": "0"}
    flags = [f for f in ("--no-self-training", "--no-parallel-controls") if f.replace("--no-", "--") not in extra]
    return [t for option, value in base.items() if option not in extra for t in (option, value)] + flags + list(extra)


def ppo_args(out, ckpt, *extra):
    """:func:`rl_args` under a PPO-style objective (``ppo`` unless ``extra`` names one)."""
    return rl_args(out, ckpt, *(() if "--objective" in extra else ("--objective", "ppo")), *extra)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ppo", "pi"])
def test_rl_run_end_to_end_writes_metrics_and_a_before_after_table(tmp_path, tiny_dis_checkpoint, objective, capsys):
    m = ppo.main(ppo_args(tmp_path, tiny_dis_checkpoint, "--objective", objective))
    for key in ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle", "train_forward_passes", "wall_seconds"):
        assert key in m
    assert m["updates"] == 2 and m["train_forward_passes"] > 0
    assert m["before"]["fixed"]["forward_passes_per_puzzle"] == 18.0
    out = capsys.readouterr().out
    assert "| after RL, greedy, Q-head halting |" in out and "| after RL, sampled policy |" in out
    sampled = m["after"]["sampled"]  # the stochastic policy: passes counted by the model, 3 per step here
    assert 1 <= sampled["mean_steps"] <= 6 and sampled["forward_passes_per_puzzle"] == pytest.approx(3 * sampled["mean_steps"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["objective"] == objective
    # the RL checkpoint is a policy the benchmark's TRM agent can load
    from agents.trm_agent import TRMAgent

    agent = TRMAgent.from_checkpoint(str(tmp_path / "checkpoint.pt"), kind="ppo_recursion", halting=True)
    assert agent.cfg.n_sup == 6 and agent.cfg.halt_confidence  # the DIS init gained the halting feature


def test_pooled_halt_keeps_the_initial_model_shape(tmp_path, tiny_dis_checkpoint):
    m = ppo.main(ppo_args(tmp_path, tiny_dis_checkpoint, "--pooled-halt", "--updates", "1"))
    assert m["updates"] == 1
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert not ck["config"]["halt_confidence"] and "q_confidence" not in ck["model"]
    assert ck["ema"] is None  # PPO keeps no weight average unless --ema-decay asks for one


@pytest.mark.slow
def test_resume_continues_from_the_saved_update(tmp_path, tiny_dis_checkpoint):
    ppo.main(ppo_args(tmp_path, tiny_dis_checkpoint))
    m = ppo.main(ppo_args(tmp_path, tiny_dis_checkpoint, "--resume", "--updates", "3"))
    assert m["updates"] == 3


@pytest.mark.slow
def test_verifier_mode_trains_from_a_source_without_solutions(tmp_path, tiny_dis_checkpoint):
    puzzles, _ = sudoku.generate(40, "easy", seed=9)
    f = tmp_path / "unlabelled.txt"
    f.write_text("\n".join(sudoku.format(puzzles)) + "\n")
    data = split("easy", str(f), seed=0, pool_size=1, eval_size=8, need_solutions=False)
    assert data.train.solutions is None and data.eval_solutions is None  # the training reward is the rules alone
    m = ppo.main(ppo_args(tmp_path / "run", tiny_dis_checkpoint, "--puzzles", str(f), "--reward-mode", "verifier"))
    assert m["reward_mode"] == "verifier" and 0.0 <= m["solve_rate"] <= 1.0
    assert np.isnan(m["cell_accuracy"])  # held-out accuracy needs labels; solve rate is the verifier's


def test_bad_init_checkpoints_fail_at_once(tmp_path, tiny_dis_checkpoint, capsys):
    with pytest.raises(SystemExit) as stop:
        ppo.main(ppo_args(tmp_path / "new", str(tmp_path / "missing.pt")))
    assert stop.value.code == 2 and "--init-from: checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="has hidden=16, but --hidden 32"):
        ppo.main(ppo_args(tmp_path, tiny_dis_checkpoint, "--hidden", "32"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(SystemExit) as stop:
        ppo.main(ppo_args(tmp_path / "other", str(junk)))
    assert stop.value.code == 2 and "corrupt or not a checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_a_diverging_update_stops_and_keeps_the_last_checkpoint(tmp_path, tiny_dis_checkpoint, monkeypatch):
    real = ppo.update
    calls = {"n": 0}

    def diverging(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Diverged("approximate KL 1e9 exceeds --abort-kl 2.0")
        return real(*a, **k)

    monkeypatch.setattr(ppo, "update", diverging)
    with pytest.raises(SystemExit, match="diverged .* last good checkpoint"):
        ppo.main(ppo_args(tmp_path, tiny_dis_checkpoint, "--updates", "4", "--checkpoint-every", "0"))
    assert load_checkpoint(tmp_path / "checkpoint.pt", kind="ppo_recursion")["state"]["update"] == 1


def test_nan_loss_is_reported_as_divergence():
    policy = RecursionPolicy(TRM(TRMConfig.dis(hidden=16, layers=1)))
    venv = LatentReasoningSudokuVectorEnv(num_envs=4, pool_size=8, max_steps=6)
    venv.reset(seed=0)
    buf = rollout(policy, venv)
    buf["logp"][:] = float("nan")
    opt = torch.optim.Adam(policy.parameters())
    with pytest.raises(Diverged):
        ppo_update(policy, opt, buf, [], Dist(), torch.Generator().manual_seed(0))


def _ddp_worker(rank: int, world: int, init_file: str, state: dict, buf: dict, out: str, extra: list) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    policy = RecursionPolicy(TRM(TRMConfig.dis(hidden=16, layers=1)))
    policy.load_state_dict(state)
    ddp_policy = torch.nn.parallel.DistributedDataParallel(policy, find_unused_parameters=True)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-5)
    local = buf["valid"].shape[1] // world
    part = {k: (v[:, rank * local : (rank + 1) * local] if v.dim() >= 2 else v) for k, v in buf.items()}
    rows = torch.arange(rank * local, (rank + 1) * local)
    ppo_update(
        ddp_policy,
        opt,
        part,
        ["--epochs", "2", "--minibatches", "2", "--target-kl", "1e9", "--abort-kl", "1e9", *extra],
        Dist(rank, world),
        torch.Generator().manual_seed(3),
        rows,
    )
    torch.save(policy.state_dict(), f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_and_match_one_rank_on_the_same_global_batch(tmp_path):
    _two_ranks_against_one(tmp_path, [])


def _two_ranks_against_one(tmp_path, extra: list[str]) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    policy = RecursionPolicy(TRM(TRMConfig.dis(hidden=16, layers=1)))
    with torch.no_grad():
        policy.trm.q_head.bias.fill_(-1.0)
    venv = LatentReasoningSudokuVectorEnv(num_envs=8, pool_size=16, max_steps=6, step_cost=0.02)
    venv.reset(seed=0)
    buf = rollout(policy, venv)
    buf = {k: v for k, v in buf.items() if k not in ("solved", "steps")}
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    single = RecursionPolicy(TRM(TRMConfig.dis(hidden=16, layers=1)))
    single.load_state_dict(state)
    opt = torch.optim.Adam(single.parameters(), lr=1e-5)
    ppo_update(
        single,
        opt,
        buf,
        ["--epochs", "2", "--minibatches", "2", "--target-kl", "1e9", "--abort-kl", "1e9", *extra],
        Dist(),
        torch.Generator().manual_seed(3),
    )
    spawn_args = (2, str(tmp_path / "init"), state, buf, str(tmp_path / "p"), extra)
    torch.multiprocessing.spawn(_ddp_worker, args=spawn_args, nprocs=2)
    r0, r1 = torch.load(f"{tmp_path / 'p'}.0"), torch.load(f"{tmp_path / 'p'}.1")
    moved = False
    for k, v in single.state_dict().items():
        assert torch.equal(r0[k], r1[k]), k  # the ranks hold identical parameters
        assert torch.allclose(r0[k], v, atol=1e-5, rtol=1e-4), k  # and equal the one-rank update
        moved |= not torch.equal(v, state[k])
    assert moved


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_ranks_end_to_end(tmp_path, tiny_dis_checkpoint):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "train/ppo_recursion.py",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd + ppo_args(tmp_path, tiny_dis_checkpoint), capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["updates"] == 2
    assert m["param_checksum_mean_over_ranks"] == pytest.approx(m["param_checksum_rank0"], abs=1e-9)


@pytest.mark.slow
def test_sb3_ppo_script_saves_a_model_the_agent_loads(tmp_path, capsys):
    from train.sb3_ppo import main

    m = main(["--out", str(tmp_path), "--minutes", "0.05", "--pool-size", "16", "--eval-size", "8", "--num-envs", "2"])
    assert (tmp_path / "model.zip").is_file() and m["env_steps"] > 0 and m["forward_passes_per_puzzle"] == m["mean_steps"]
    import agents

    assert agents.make_agent("sb3_ppo", str(tmp_path / "model.zip"), trust=True).name == "sb3_ppo"
    args = ["--out", str(tmp_path), "--minutes", "0.05", "--pool-size", "16", "--eval-size", "8", "--num-envs", "2"]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--resume"])
    assert "--trust-sb3" in str(stop.value) + capsys.readouterr().err
    for other in (["--seed", "1"], ["--step-cost", "0.5"], ["--difficulty", "hard"]):
        with pytest.raises(SystemExit) as stop:
            main([*args, "--resume", "--trust-sb3", *other])
        assert stop.value.code == 2 and f"{other[0][2:].replace('-', '_')}:" in capsys.readouterr().err
    again = main([*args, "--resume", "--trust-sb3"])
    assert again["env_steps"] > m["env_steps"]  # the resumed model keeps its step count and adds to it
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ----------------------------------------------------------------------------- known answers for the RL math


def test_gae_on_a_hand_computed_two_episode_batch_with_masks():
    # env 0 runs 3 steps (done at t=2); env 1 runs 2 steps (done at t=1), then is masked out
    buf = {
        "reward": torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0]]),
        "value": torch.tensor([[0.5, 1.0], [1.0, 2.0], [0.0, 0.0]]),
        "done": torch.tensor([[False, False], [False, True], [True, False]]),
        "valid": torch.tensor([[True, True], [True, True], [True, False]]),
    }
    adv, ret = gae(buf, gamma=0.9, lam=0.5)
    # env 0: A2 = 2; A1 = (0 + 0 - 1) + 0.45 * 2 = -0.1; A0 = (1 + 0.9 * 1 - 0.5) + 0.45 * -0.1 = 1.355
    # env 1: A1 = 3 - 2 = 1; A0 = (0 + 0.9 * 2 - 1) + 0.45 * 1 = 1.25; the masked step gets 0
    assert torch.allclose(adv, torch.tensor([[1.355, 1.25], [-0.1, 1.0], [2.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[1.855, 2.25], [0.9, 3.0], [2.0, 0.0]]))


def test_log_probability_and_entropy_per_sample_on_known_distributions():
    logits = torch.zeros(2, 81, 10)
    logits[1, 5, 1] = math.log(3.0)  # sample 1, cell 5: p(1) = 3/12, every other digit 1/12
    q = torch.tensor([0.0, math.log(3.0)])  # halting probabilities 1/2 and 3/4
    cells = torch.zeros(2, 81, dtype=torch.long)
    cells[0, 0], cells[0, 1], cells[1, 5] = 4, 7, 1
    halt = torch.tensor([0, 1])
    blank = torch.zeros(2, 81, dtype=torch.bool)
    blank[0, :2], blank[1, 5] = True, True
    logp, ent = log_prob_entropy(logits, q, cells, halt, blank)
    p = torch.tensor([0.25] + [1 / 12] * 9)
    assert logp[0].item() == pytest.approx(2 * -math.log(10) + math.log(0.5), abs=1e-5)
    assert logp[1].item() == pytest.approx(math.log(0.25) + math.log(0.75), abs=1e-5)
    assert ent[0].item() == pytest.approx(math.log(10) + math.log(2), abs=1e-5)  # mean over blanks + halt
    halt_ent = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert ent[1].item() == pytest.approx(float(-(p * p.log()).sum()) + halt_ent, abs=1e-5)


def test_pi_weights_use_the_global_maximum():
    args = ppo.parse_args(["--objective", "pi", "--beta", "1", "--max-weight", "1e9"])
    adv = torch.tensor([0.0, math.log(3.0)])
    loss = policy_loss(torch.ones(2), torch.zeros(2), adv, adv, args.update, Dist(), torch.tensor(2.0))
    assert torch.allclose(-loss, torch.tensor([0.5, 1.5]))  # exp(A) normalised to mean 1, times log pi = 1


def test_per_cell_credit_gives_each_cell_its_own_return_and_the_halt_the_shared_part():
    # one episode of two steps over two blank cells (B = 2), then a masked step
    buf = {
        "cell_reward": torch.tensor([[[0.5, 0.0]], [[-0.5, 0.5]], [[0.0, 0.0]]]),
        "reward": torch.tensor([[0.4], [0.9], [0.0]]),  # cells + solve bonus 1 at t=1 - step cost 0.1
        "value": torch.zeros(3, 1),
        "cell_value": torch.tensor([[[0.2, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]),
        "done": torch.tensor([[False], [True], [False]]),
        "valid": torch.tensor([[True], [True], [False]]),
        "blank": torch.ones(3, 1, 2, dtype=torch.bool),
    }
    adv = advantages(buf, ppo.parse_args(["--credit", "cell"]).advantage, Dist())
    # cell returns: G_1 = [-0.5, 0.5], G_0 = [0.5 - 0.5, 0 + 0.5]; minus the cell baselines
    assert torch.allclose(adv.cell_ret[:2, 0], torch.tensor([[0.0, 0.5], [-0.5, 0.5]]), atol=1e-6)
    assert torch.allclose(adv.cell[:2, 0], torch.tensor([[-0.2, 0.5], [-0.5, 0.5]]), atol=1e-6)
    # the shared part (bonus and step cost) credits the halt: -0.1 then 0.9
    assert torch.allclose(adv.step_ret[:, 0], torch.tensor([0.8, 0.9, 0.0]), atol=1e-6)
    assert adv.cell[2].abs().sum() == 0 and adv.step[2].abs().sum() == 0
    joint = advantages(buf, ppo.Args().advantage, Dist())
    assert joint.cell is None and torch.allclose(joint.step_ret[:, 0], torch.tensor([1.3, 0.9, 0.0]), atol=1e-6)


def test_with_previous_answer_input_the_sampled_action_changes_the_next_steps_logits():
    torch.manual_seed(0)
    for mode, depends in (("answer_and_givens", True), ("previous_answer", True), ("puzzle", False)):
        policy = RecursionPolicy(TRM(TRMConfig.dis(hidden=16, layers=1, input_mode=mode)))
        venv = LatentReasoningSudokuVectorEnv(num_envs=4, pool_size=8, max_steps=6)
        venv.reset(seed=0)
        buf = rollout(policy, venv, PolicySettings("stablemax"))
        blank = buf["blank"][1]
        # the step-2 input holds the step-1 sample on the blanks exactly when the policy reads its answer
        assert torch.equal(buf["tokens"][1][blank], buf["cells"][0][blank]) == depends
        if mode == "answer_and_givens":  # and marks the givens as tokens of their own
            assert bool((buf["tokens"][1][~blank] >= 10).all()) and bool((buf["tokens"][1][blank] <= 9).all())
        tokens, other = buf["tokens"][1], buf["tokens"][1].clone()
        other[blank] = (other[blank] % 9) + 1  # another action at step 1
        step = torch.full((4,), 2)
        a = policy(tokens if depends else buf["tokens"][1], buf["y"][1], buf["z"][1], step).logits
        b = policy(other if depends else buf["tokens"][1], buf["y"][1], buf["z"][1], step).logits
        assert (not torch.allclose(a, b)) == depends


def test_stablemax_sampling_is_the_distribution_the_supervised_loss_trained():
    logits = torch.tensor([[[3.0, 0.0, -1.0] + [-2.0] * 7]])
    p = cell_log_probs(logits, "stablemax").exp()[0, 0]
    s = torch.tensor([4.0, 1.0, 0.5] + [1 / 3] * 7)
    assert torch.allclose(p, s / s.sum(), atol=1e-6)
    assert cell_log_probs(logits, "softmax", temperature=2.0).exp()[0, 0].argmax() == 0
    assert torch.allclose(cell_log_probs(logits, "softmax", 2.0), torch.log_softmax(logits / 2, -1))


@pytest.mark.slow
def test_two_gloo_ranks_match_one_rank_under_the_pi_objective_and_per_cell_credit(tmp_path):
    for extra in (["--objective", "pi"], ["--credit", "cell"]):
        _two_ranks_against_one(tmp_path / extra[1], extra)


def test_leave_one_out_subtracts_the_mean_of_the_other_episodes_of_the_group():
    x = torch.tensor([1.0, 2.0, 3.0, 7.0])
    assert torch.allclose(leave_one_out(x, 2), torch.tensor([-1.0, 1.0, -4.0, 4.0]))
    assert torch.allclose(leave_one_out(x, 4), torch.tensor([1 - 4.0, 2 - 11 / 3, 3 - 10 / 3, 7 - 2.0]))
    cells = torch.arange(8.0).reshape(4, 2)  # trailing dimensions are per-cell terms
    assert torch.allclose(leave_one_out(cells, 2), torch.tensor([[-2.0, -2.0], [2.0, 2.0], [-2.0, -2.0], [2.0, 2.0]]))


def test_group_advantages_credit_each_episode_against_its_group():
    t, n = 3, 4
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 0, 1]], dtype=torch.bool)
    reward = torch.tensor([[0.1, 0.2, 0.0, 0.3], [0.5, 0.0, 0.0, 0.1], [0.0, 1.0, 0.0, 0.2]]) * valid
    cell_reward = torch.zeros(t, n, 81)
    cell_reward[0, :, 0] = reward[0]  # step 0's reward is all per-cell, later steps' shared
    buf = {"valid": valid, "reward": reward, "cell_reward": cell_reward, "blank": torch.ones(t, n, 81, dtype=torch.bool)}
    args = ppo.parse_args(["--objective", "group", "--group-size", "2", "--num-envs", "4"])
    adv = advantages(buf, args.advantage, Dist(), group_size=2)
    ret = reward.sum(0)  # 0.6, 1.2, 0.0, 0.6
    expected = torch.tensor([0.6 - 1.2, 1.2 - 0.6, 0.0 - 0.6, 0.6 - 0.0])
    assert torch.allclose(adv.step, torch.where(valid, expected[None], 0.0))
    assert adv.cell is None
    args.advantage.credit = "cell"
    adv = advantages(buf, args.advantage, Dist(), group_size=2)
    shared = ret - reward[0]
    assert torch.allclose(adv.step[0], shared - shared.reshape(2, 2).flip(1).reshape(4))
    assert torch.allclose(adv.cell[0, :, 0], reward[0] - reward[0].reshape(2, 2).flip(1).reshape(4))
    assert torch.all(adv.cell[~valid] == 0)


def near_solved_file(path, real_unique, blanks=2):
    """A puzzle file (no solutions in it) of real puzzles' solutions with ``blanks`` cells emptied."""
    rng = np.random.default_rng(0)
    grids = real_unique[1].copy()
    for g in grids:
        g[rng.choice(81, blanks, replace=False)] = 0
    path.write_text("\n".join(sudoku.format(np.concatenate([grids, grids]))) + "\n")
    return path


def no_solving(monkeypatch):
    """Make every way the project computes a solution raise, except the split's grid comparison
    (:mod:`train.held_out` solves the puzzles only to compare their grids; nothing else sees them)."""
    import envs.search
    import envs.sudoku
    import train.held_out

    def refuse(*a, **k):
        raise AssertionError("a solution was computed in a label-free run")

    batch = envs.search.search_batch
    monkeypatch.setattr(train.held_out, "_solved", lambda p, s: s if s is not None else batch(p, 2)[2])

    for mod, name in ((envs.sudoku, "_search"), (envs.sudoku, "solve"), (envs.sudoku, "count_solutions"),
                      (envs.search, "search_batch"), (envs.search, "search")):
        monkeypatch.setattr(mod, name, refuse)


@pytest.mark.slow
@pytest.mark.parametrize("search", [[], ["--expert-search", "4"]], ids=["episodes", "search"])
def test_label_free_expert_iteration_reads_no_solution_and_starts_from_scratch(tmp_path, real_unique, monkeypatch, search):
    f = near_solved_file(tmp_path / "unlabelled.txt", real_unique)
    no_solving(monkeypatch)
    argv = ["--out", str(tmp_path / "run"), "--puzzles", str(f), "--reward-mode", "verifier",
            "--group-size", "4", "--num-envs", "16", "--eval-size", "8", "--updates", "3", "--hidden", "16",
            "--checkpoint-every", "0", "--val-size", "8", "--temperature", "3", "--warm-minutes", "0", *search]
    m = expert.main(argv)
    assert m["init"].startswith("scratch") and m["updates"] == 3
    assert not (tmp_path / "run" / "warm_dis").exists()  # no supervised warm start on the puzzles it trains on
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["init"].startswith("scratch")
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    replay = ck["replay"]  # the model's own verified solutions (two blanks to fill: sampling finds some)
    assert len(replay) > 0
    assert all(sudoku.is_solution(p.numpy(), s.numpy()) for p, s in replay)
    if search:  # each round searches pool entries no round has solved yet: one replay pair per solved entry
        assert int(ck["pool_solved"].sum()) == len(replay)
    # its DIS batches keep a weight average (the DIS config's decay), and greedy decoding after RL reads it
    ema, live = ck["ema"]["model"], ck["model"]
    assert ck["ema"]["updates"] >= 1 and any(not torch.equal(ema[k], live[k]) for k in live)
    averaged = load_model(tmp_path / "run" / "checkpoint.pt", "expert_iteration")[0]
    data = split("easy", str(f), seed=0, pool_size=4096, eval_size=8, need_solutions=False, eval_labels=True)
    again = controls.measure(averaged, data.eval_puzzles, data.eval_solutions, "cpu", False)
    after = m["after"]["fixed"]  # this file has no labels: scores that need them are NaN on both sides
    np.testing.assert_equal(*({k: v for k, v in r.items() if k != "wall_seconds"} for r in (again, after)))


@pytest.mark.slow
def test_greedy_first_searches_only_the_puzzles_greedy_decoding_left_unverified(tmp_path, real_unique, monkeypatch):
    f = near_solved_file(tmp_path / "unlabelled.txt", real_unique, blanks=1)
    no_solving(monkeypatch)
    calls = []  # (K, puzzles handed to the search, answers verified)
    real_run = expert.run_episodes

    def spy(agent, puzzles, *a, **kw):
        res = real_run(agent, puzzles, *a, **kw)
        ok = np.asarray(sudoku.is_solution(puzzles, res["answers"]))
        calls.append((agent.k, puzzles.copy(), ok, float(res["forward_passes"].sum())))
        return res

    monkeypatch.setattr(expert, "run_episodes", spy)
    argv = ["--out", str(tmp_path / "run"), "--puzzles", str(f), "--reward-mode", "verifier", "--group-size", "4",
            "--num-envs", "16", "--eval-size", "8", "--updates", "4", "--hidden", "16", "--checkpoint-every", "0",
            "--val-size", "8", "--temperature", "3", "--warm-minutes", "0", "--expert-search", "4", "--greedy-first"]
    m = expert.main(argv)
    rounds = [calls[i : i + 2] for i in range(0, len(calls), 2)]
    assert m["updates"] == 4 and len(calls) == 8  # each round had failures for the search
    pool = len(split("easy", str(f), seed=0, pool_size=4096, eval_size=8, need_solutions=False).train.puzzles)
    unsolved = pool
    for (k1, greedy, ok1, _), (k2, searched, ok2, _) in rounds:
        assert (k1, k2, len(greedy)) == (1, 4, min(16, unsolved))  # a greedy sweep of --num-envs unsolved puzzles,
        unsolved -= int(ok1.sum()) + int(ok2.sum())  # then the search at K
        failed = greedy[~ok1]
        assert len(searched) == min(4, len(failed))  # --num-envs / K puzzles at most, and only greedy's failures
        np.testing.assert_array_equal(searched, failed[: len(searched)])
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    found = sum(int(c[2].sum()) for c in calls)
    assert found > 0 and len(ck["replay"]) == found == int(ck["pool_solved"].sum())
    assert all(sudoku.is_solution(p.numpy(), s.numpy()) for p, s in ck["replay"])
    search_passes = sum(c[3] for c in calls)  # both stages are counted as training passes, with the replay fits
    assert m["train_forward_passes"] > search_passes > 0


def test_expert_search_divides_the_rollout_in_both_scripts(capsys):
    for script, bad in ((ppo, ["--expert-search", "3"]), (expert, ["--expert-search", "3"]), (expert, ["--expert-search", "-2"])):
        with pytest.raises(SystemExit):
            script.parse_args(bad)
        assert "--expert-search" in capsys.readouterr().err


@pytest.mark.slow
def test_group_objective_runs_end_to_end_from_a_named_checkpoint(tmp_path, tiny_dis_checkpoint, capsys):
    m = ppo.main(ppo_args(tmp_path, tiny_dis_checkpoint, "--objective", "group", "--group-size", "4", "--credit", "cell"))
    assert m["updates"] == 2 and m["objective"] == "group"
    assert "trained on easy" in m["init"]
    with pytest.raises(SystemExit):
        ppo.parse_args(["--objective", "group", "--group-size", "3", "--num-envs", "8"])
    assert "--group-size must be at least 2 and divide --num-envs 8" in capsys.readouterr().err


@pytest.mark.slow
def test_dis_control_on_rls_own_labelled_puzzles_fine_tunes_the_start(tmp_path, tiny_dis_checkpoint, capsys):
    m = expert.main(rl_args(tmp_path, tiny_dis_checkpoint, "--lr", "1e-4", "--control-data", "rl"))
    control = m["controls"]["dis_on_rl_data"]
    assert control["data"] == "rl" and control["forward_passes_per_puzzle"] == 18.0 and m["controls"]["dis_continued"] is None
    run = json.loads((tmp_path / "dis_on_rl_data" / "run.json").read_text())
    assert run["args"]["init_from"] == tiny_dis_checkpoint and run["data"] == "generated:easy"
    assert run["args"]["pool_size"] == 32 and run["args"]["eval_size"] == 8  # RL's pool and held-out split
    assert run["training"]["lr"] == 1e-4 and run["training"]["lr_min_ratio"] == 1.0  # the expert's constant rate
    assert control["train_forward_passes"] >= m["train_forward_passes"]  # the RL run's passes, counted by the model
    row = r"\| DIS on RL's puzzles, labelled instead of RL \([0-9,]+ passes, [0-9.]+ min\), all steps \|"
    assert re.search(row, capsys.readouterr().out)


def test_threshold_at_picks_the_cheapest_threshold_that_solves_as_many():
    curve = [
        {"threshold": -1.0, "solve_rate": 0.90, "forward_passes_per_puzzle": 6.0},
        {"threshold": -0.1, "solve_rate": 0.95, "forward_passes_per_puzzle": 9.0},
        {"threshold": -0.01, "solve_rate": 0.96, "forward_passes_per_puzzle": 12.0},
        {"threshold": -0.001, "solve_rate": 0.96, "forward_passes_per_puzzle": 15.0},
    ]
    assert controls.threshold_at(curve, 0.95)["threshold"] == -0.1
    assert controls.threshold_at(curve, 0.951)["threshold"] == -0.01  # -0.1 solves fewer: not as good
    assert controls.threshold_at(curve, 0.97) is None


def test_halt_curve_measures_every_threshold_on_the_held_out_puzzles(tmp_path, tiny_dis_checkpoint, capsys):
    m = ppo.main(ppo_args(tmp_path, tiny_dis_checkpoint, "--updates", "1", "--halt-curve", "--no-control-dis"))
    curve = m["before"]["threshold"]["curve"]
    assert [p["threshold"] for p in curve] == list(controls.THRESHOLDS)
    assert all(3.0 <= p["forward_passes_per_puzzle"] <= 18.0 for p in curve)  # counted: 3 per step, 1 to 6 steps
    assert m["controls"]["threshold_at_learned_solve_rate"] == controls.threshold_at(curve, m["after"]["halting"]["solve_rate"])
    assert "no-RL threshold on the held-out puzzles: -3.0:" in capsys.readouterr().out
