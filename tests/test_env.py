"""LatentReasoning-Sudoku-v0: API checks, the MDP's rewards and ends, bad input, rendering, vector env parity."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import render, sudoku
from envs.sudoku_env import LatentReasoningSudokuEnv
from envs.vector_env import LatentReasoningSudokuVectorEnv

DATA = "tests/data/tdoku_test_puzzles.txt"


def act(answer: np.ndarray, halt: int = 0) -> np.ndarray:
    return np.concatenate([np.asarray(answer, dtype=np.int64), [halt]])


def test_registered_ids_and_api_checkers():
    env = gym.make("LatentReasoning-Sudoku-v0", pool_size=16)
    check_env(env.unwrapped)
    sb3_check_env(LatentReasoningSudokuEnv(pool_size=16))
    assert gym.spec("LatentReasoning-Sudoku-Extreme-v0").kwargs["difficulty"] == "extreme"
    venv = gym.make_vec("LatentReasoning-Sudoku-v0", num_envs=4, pool_size=16)
    assert isinstance(venv, envs.LatentReasoningSudokuVectorEnv)


def test_true_solution_solves_in_one_step(real_unique):
    puzzles, solutions = real_unique
    env = LatentReasoningSudokuEnv(puzzles=(puzzles, solutions), step_cost=0.05, solve_bonus=0.5, order="sequential")
    for k in range(len(puzzles)):
        obs, info = env.reset()
        assert np.array_equal(obs["puzzle"], puzzles[k]) and np.array_equal(obs["answer"], puzzles[k])
        initial = info["score"]
        obs, reward, terminated, truncated, info = env.step(act(solutions[k]))
        assert terminated and not truncated and info["solved"]
        assert reward == pytest.approx(1.0 - initial + 0.5 - 0.05)
        assert info["cell_accuracy"] == 1.0 and info["conflicts"] == 0


def test_sending_back_the_answer_is_a_zero_improvement_step(real_unique):
    puzzles, solutions = real_unique
    env = LatentReasoningSudokuEnv(puzzles=(puzzles, solutions), step_cost=0.03, max_steps=3, teacher=True)
    obs, info = env.reset(seed=1)
    partial = obs["answer"].copy()
    blanks = np.flatnonzero(obs["puzzle"] == 0)
    sol = info["solution"]
    partial[blanks[:4]] = sol[blanks[:4]]
    obs, reward, *_ = env.step(act(partial))
    assert reward == pytest.approx(4 / len(blanks) - 0.03)
    obs, reward, terminated, truncated, _ = env.step(act(obs["answer"]))
    assert reward == pytest.approx(-0.03) and not terminated and not truncated
    # a wrong digit where a right one stood loses exactly that cell's credit
    worse = obs["answer"].copy()
    worse[blanks[0]] = sol[blanks[0]] % 9 + 1
    _, reward, terminated, truncated, _ = env.step(act(worse))
    assert reward == pytest.approx(-1 / len(blanks) - 0.03)
    assert truncated and not terminated
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(act(worse))


def test_without_terminate_on_solve_the_bonus_is_shaped_too(real_unique):
    puzzles, solutions = real_unique
    env = LatentReasoningSudokuEnv(
        puzzles=(puzzles, solutions), terminate_on_solve=False, solve_bonus=0.5, max_steps=4, teacher=True
    )
    obs, info = env.reset(seed=0)
    sol = info["solution"]
    _, r1, term, _, info = env.step(act(sol))
    assert info["solved"] and not term and r1 == pytest.approx(1.5)
    _, r2, term, _, _ = env.step(act(sol))
    assert r2 == 0 and not term  # staying solved earns nothing more
    _, r3, _, _, _ = env.step(act(obs["puzzle"]))
    _, r4, term, _, _ = env.step(act(sol, halt=1))
    assert term and r1 + r2 + r3 + r4 == pytest.approx(1.5)  # the return telescopes to the final score


def test_halt_terminates_and_givens_stay(real_unique):
    puzzles, solutions = real_unique
    env = LatentReasoningSudokuEnv(puzzles=(puzzles, solutions))
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(act(np.full(81, 0), halt=1))
    assert terminated and not truncated and not info["solved"]
    assert np.array_equal(obs["answer"], obs["puzzle"])
    env.reset(seed=0)
    obs, *_ = env.step(act(np.full(81, 1)))
    assert np.array_equal(obs["answer"][obs["puzzle"] > 0], obs["puzzle"][obs["puzzle"] > 0])


def test_bad_actions_and_arguments_raise_clear_errors(real_unique):
    env = LatentReasoningSudokuEnv(puzzles=real_unique)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(act(np.zeros(81)))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(82,\)"):
        env.step(np.zeros(81, dtype=np.int64))
    with pytest.raises(ValueError, match=r"0\.\.9"):
        env.step(act(np.full(81, 10)))
    with pytest.raises(ValueError, match="halt"):
        env.step(act(np.zeros(81), halt=2))
    with pytest.raises(ValueError, match="integers"):
        env.step(np.zeros(82, dtype=np.float32))
    with pytest.raises(ValueError, match="reward_mode"):
        LatentReasoningSudokuEnv(puzzles=real_unique, reward_mode="oracle")
    with pytest.raises(ValueError, match="unknown difficulty"):
        LatentReasoningSudokuEnv(difficulty="impossible")
    with pytest.raises(ValueError, match=r"tdoku_test_puzzles\.txt:19"):
        LatentReasoningSudokuEnv(puzzles=DATA)
    bad = real_unique[0][:2].copy()
    bad[1, :2] = [5, 5]
    bad[1, 2:9] = 0
    with pytest.raises(ValueError, match=r"puzzles\[1\]"):
        LatentReasoningSudokuEnv(puzzles=bad)
    venv = LatentReasoningSudokuVectorEnv(num_envs=2, puzzles=real_unique)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, 82\)"):
        venv.step(torch.zeros(3, 82, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.9"):
        venv.step(torch.full((2, 82), 11))


def test_verifier_mode_reads_no_solution(real_unique):
    puzzles, solutions = real_unique
    env = LatentReasoningSudokuEnv(puzzles=puzzles[:3], reward_mode="verifier", order="sequential")
    assert env.pool.solutions is None
    obs, info = env.reset()
    assert np.isnan(info["cell_accuracy"])
    # any complete conflict-free grid that keeps the givens counts as solved
    obs, reward, terminated, _, info = env.step(act(solutions[0]))
    assert terminated and info["solved"] and reward == pytest.approx(2.0)
    obs, _ = env.reset()
    answer = obs["answer"].copy()
    blank = np.flatnonzero(answer == 0)
    answer[blank[0]] = solutions[1][blank[0]]
    _, reward, *_ = env.step(act(answer))
    assert reward == pytest.approx(1 / len(blank))
    with pytest.raises(ValueError, match="no solutions"):
        LatentReasoningSudokuEnv(reward_mode="verifier", teacher=True, pool=env.pool)


def test_teacher_mode_and_augmentation_keep_puzzle_and_solution_together():
    env = LatentReasoningSudokuEnv(difficulty="medium", pool_size=8, augment=True, teacher=True)
    seen = set()
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        assert sudoku.is_solution(obs["puzzle"], info["solution"])
        assert sudoku.count_solutions(obs["puzzle"]) == 1
        seen.add(sudoku.format(obs["puzzle"]))
    assert len(seen) == 6
    plain = LatentReasoningSudokuEnv(difficulty="medium", pool_size=8)
    assert "solution" not in plain.reset(seed=0)[1]


def test_reset_seed_is_deterministic():
    env = LatentReasoningSudokuEnv(difficulty="easy", pool_size=32, augment=True)
    a = env.reset(seed=5)[0]["puzzle"]
    env.reset(seed=6)
    b = env.reset(seed=5)[0]["puzzle"]
    assert np.array_equal(a, b)


def test_render_modes_and_episode_png(tmp_path, real_unique):
    puzzles, solutions = real_unique
    env = LatentReasoningSudokuEnv(puzzles=(puzzles, solutions), render_mode="rgb_array", teacher=True)
    text_env = LatentReasoningSudokuEnv(puzzles=(puzzles, solutions), render_mode="ansi")
    obs, info = env.reset(seed=0)
    text_env.reset(seed=0)
    frames = [env.render()]
    sol = info["solution"]
    blank = np.flatnonzero(obs["puzzle"] == 0)
    answer = obs["answer"].copy()
    answer[blank[0]] = sol[blank[0]]
    answer[blank[1]] = sol[blank[1]] % 9 + 1
    env.step(act(answer))
    text_env.step(act(answer))
    frames.append(env.render())
    assert frames[0].shape == (292, 292, 3) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])
    # the correct cell is drawn in green, the wrong one in red
    img = frames[1].astype(int)
    green = (img[..., 1] > 100) & (img[..., 0] < 60)
    red = (img[..., 0] > 180) & (img[..., 1] < 80)
    assert green.any() and red.any()
    text = text_env.render()
    assert f"{sol[blank[0]]}+" in text and f"{sol[blank[1]] % 9 + 1}!" in text
    out = tmp_path / "episode.png"
    render.save_episode_png(frames, out)
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (292 * 2 + 8, 292)


def _drive_single(puzzle, solution, actions, **kw):
    env = LatentReasoningSudokuEnv(puzzles=(puzzle[None], solution[None]), **kw)
    obs, _ = env.reset(seed=0)
    out = []
    for a in actions:
        nobs, r, term, trunc, info = env.step(a)
        out.append((nobs, r, term, trunc, info))
        if term or trunc:
            nobs, _ = env.reset()
        out[-1] = (*out[-1], nobs)
    return out


@pytest.mark.parametrize("mode, terminate_on_solve", [("solution", True), ("verifier", True), ("solution", False)])
def test_vector_env_matches_single_env_step_by_step(real_unique, mode, terminate_on_solve):
    puzzles, solutions = real_unique
    n = 6
    kw = dict(max_steps=3, reward_mode=mode, step_cost=0.02, solve_bonus=0.7, terminate_on_solve=terminate_on_solve)
    venv = LatentReasoningSudokuVectorEnv(num_envs=n, puzzles=(puzzles[:n], solutions[:n]), order="sequential", **kw)
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    # per-step actions mixing solutions, partial copies, noise and halts
    steps = 7
    actions = np.zeros((steps, n, 82), dtype=np.int64)
    for t in range(steps):
        for i in range(n):
            kind = rng.integers(4)
            if kind == 0:
                actions[t, i, :81] = solutions[i]
            elif kind == 1:
                keep = rng.random(81) < 0.5
                actions[t, i, :81] = np.where(keep, solutions[i], 0)
            else:
                actions[t, i, :81] = rng.integers(0, 10, 81)
            actions[t, i, 81] = int(kind == 3)
    singles = [_drive_single(puzzles[i], solutions[i], actions[:, i], **kw) for i in range(n)]
    for t in range(steps):
        nobs, r, term, trunc, info = venv.step(torch.from_numpy(actions[t]))
        for i in range(n):
            s_obs, s_r, s_term, s_trunc, s_info, s_next = singles[i][t]
            assert r[i].item() == pytest.approx(s_r, abs=1e-6)
            assert bool(term[i]) == s_term and bool(trunc[i]) == s_trunc
            assert bool(info["solved"][i]) == s_info["solved"]
            assert int(info["conflicts"][i]) == s_info["conflicts"]
            assert info["score"][i].item() == pytest.approx(s_info["score"])
            before_reset = info["final_obs"] if info["_final_obs"][i] else nobs
            final = {k: v[i] for k, v in before_reset.items()}
            for key in ("puzzle", "answer"):
                assert np.array_equal(final[key].numpy(), s_obs[key])
                assert np.array_equal(nobs[key][i].numpy(), s_next[key])
            assert int(final["step"]) == s_obs["step"] and int(nobs["step"][i]) == s_next["step"]


def test_vector_env_autoresets_and_augments_on_device():
    venv = gym.make_vec("LatentReasoning-Sudoku-v0", num_envs=64, pool_size=16, augment=True, teacher=True)
    obs, info = venv.reset(seed=3)
    assert obs["puzzle"].shape == (64, 81) and obs["puzzle"].dtype == torch.int64
    p, s = obs["puzzle"].numpy(), info["solution"].numpy()
    assert np.all(sudoku.is_solution(p, s))
    assert len({sudoku.format(g) for g in p}) > 16  # augmented beyond the 16 pool puzzles
    a = torch.cat([info["solution"], torch.zeros(64, 1, dtype=torch.long)], 1)
    a[32:, :81] = 0
    nobs, r, term, trunc, info2 = venv.step(a)
    assert term[:32].all() and not term[32:].any()
    assert torch.all(nobs["step"][:32] == 0) and torch.all(nobs["step"][32:] == 1)
    assert torch.equal(nobs["answer"][:32], nobs["puzzle"][:32])
    assert torch.allclose(r[:32], torch.full((32,), 2.0))
    # the teacher's solution belongs to the returned observation, new episodes included
    assert np.all(sudoku.is_solution(nobs["puzzle"].numpy(), info2["solution"].numpy()))


@pytest.mark.parametrize("mode", ["solution", "verifier"])
def test_cell_rewards_and_the_shared_terms_sum_to_the_reward_in_both_envs(real_unique, mode):
    puzzles, solutions = real_unique
    kw = {"puzzles": (puzzles, solutions), "reward_mode": mode, "step_cost": 0.03, "solve_bonus": 0.5, "max_steps": 6}
    env = LatentReasoningSudokuEnv(**kw, terminate_on_solve=False, teacher=True)
    venv = LatentReasoningSudokuVectorEnv(num_envs=3, **kw, terminate_on_solve=False, teacher=True)
    obs, info = env.reset(seed=0)
    vobs, vinfo = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    solved_before, vsolved_before = False, vinfo["solved"]
    for t in range(5):
        # a mix of right digits, wrong digits and blanks, then the solution at step 4
        answer = np.where(rng.random(81) < 0.5, info["solution"], rng.integers(0, 10, 81))
        answer = info["solution"] if t == 3 else answer
        obs, reward, _, _, info_new = env.step(act(answer))
        shared = 0.5 * (float(info_new["solved"]) - float(solved_before)) - 0.03
        assert info_new["cell_reward"].shape == (81,)
        assert info_new["cell_reward"].sum() + shared == pytest.approx(reward)
        assert set(np.unique(np.abs(info_new["cell_reward"]) * (obs["puzzle"] == 0).sum())) <= {0.0, 1.0}
        solved_before, info = info_new["solved"], {**info_new, "solution": info["solution"]}
        vact = torch.from_numpy(np.where(rng.random((3, 81)) < 0.5, vinfo["solution"].numpy(), rng.integers(0, 10, (3, 81))))
        vobs, vreward, _, _, vnew = venv.step(torch.cat([vact, torch.zeros(3, 1, dtype=torch.long)], 1))
        vshared = 0.5 * (vnew["solved"].float() - vsolved_before.float()) - 0.03
        assert vnew["cell_reward"].shape == (3, 81)
        assert torch.allclose(vnew["cell_reward"].sum(-1) + vshared, vreward, atol=1e-6)
        vsolved_before, vinfo = vnew["solved"], vnew


def test_groups_of_environments_play_the_same_puzzle(real_unique):
    pool = (real_unique[0], real_unique[1])
    venv = LatentReasoningSudokuVectorEnv(num_envs=12, puzzles=pool, group_size=4, augment=True)
    for seed in (0, 1):
        obs, _ = venv.reset(seed=seed)
        groups = obs["puzzle"].reshape(3, 4, 81)
        assert all(torch.equal(g[0], g[i]) for g in groups for i in range(4))  # one puzzle, one symmetry per group
        assert not torch.equal(groups[0, 0], groups[1, 0]) or not torch.equal(groups[1, 0], groups[2, 0])
    own = LatentReasoningSudokuVectorEnv(num_envs=8, puzzles=pool, group_size=4, augment=True, group_shares_symmetry=False)
    obs, _ = own.reset(seed=0)
    groups = obs["puzzle"].reshape(2, 4, 81)
    # each episode its own view of the group's puzzle: the same number of givens, not the same grid
    assert all(int((g[0] > 0).sum()) == int((g[i] > 0).sum()) for g in groups for i in range(4))
    assert any(not torch.equal(g[0], g[i]) for g in groups for i in range(1, 4))
    for bad in ({"group_size": 5}, {"group_size": 0}, {"group_size": 4, "order": "sequential"}):
        with pytest.raises(ValueError, match="group_size"):
            LatentReasoningSudokuVectorEnv(num_envs=12, puzzles=pool, **bad)


def test_the_verified_solve_dominates_the_label_free_return(real_unique):
    """A greedy conflict-free fill games the verifier's cell count, but not the return once solves dominate."""
    puzzle, solution = real_unique[0][0], real_unique[1][0]
    blank = np.flatnonzero(puzzle == 0)
    greedy = puzzle.copy()  # fill blanks in order with the first digit that conflicts with nothing
    for i in blank:
        for d in range(1, 10):
            greedy[i] = d
            if not sudoku.conflicts(greedy)[i]:
                break
        else:
            greedy[i] = 0
    half = puzzle.copy()
    half[blank[: len(blank) // 2]] = solution[blank[: len(blank) // 2]]
    right = (greedy[blank] == solution[blank]).mean()

    def ret(answer, weight):
        env = LatentReasoningSudokuEnv(puzzles=puzzle[None], reward_mode="verifier", cell_weight=weight)
        env.reset(seed=0)
        return env.step(act(answer))[1]

    assert right < 0.6 and not sudoku.is_solution(puzzle, greedy)
    assert ret(greedy, 1.0) > ret(half, 1.0)  # the cell count prefers the wrong conflict-free fill
    for w in (1.0, 0.1):
        assert ret(solution, w) >= w + 1.0 and ret(greedy, w) < w  # a solve is worth more than any unsolved fill
    assert ret(greedy, 0.1) == pytest.approx(ret(greedy, 1.0) * 0.1)
    with pytest.raises(ValueError, match="cell_weight"):
        LatentReasoningSudokuEnv(puzzles=puzzle[None], reward_mode="verifier", cell_weight=-1.0)
