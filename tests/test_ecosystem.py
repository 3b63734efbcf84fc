"""The batched env with the libraries researchers combine it with: gymnasium's vector wrappers and SB3."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import DictInfoToList, NormalizeReward, RecordEpisodeStatistics

import envs  # noqa: F401 - registers the ids
from envs.sb3_vec_env import SB3VecEnv
from envs.sudoku_env import LatentReasoningSudokuEnv
from envs.vector_env import LatentReasoningSudokuVectorEnv

ID = "LatentReasoning-Sudoku-v0"


def halting_actions(obs: dict, rng: np.random.Generator, halt_p: float = 0.3) -> np.ndarray:
    """Random digits in every cell, halting with probability ``halt_p`` (so episodes end at different steps)."""
    n = obs["answer"].shape[0]
    a = rng.integers(0, 10, size=(n, 82))
    a[:, 81] = rng.random(n) < halt_p
    return a


def test_record_episode_statistics_reports_each_episodes_return_and_length():
    venv = RecordEpisodeStatistics(gym.make_vec(ID, num_envs=8, pool_size=64, step_cost=0.05, backend="numpy"))
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    ret, length, seen = np.zeros(8), np.zeros(8, dtype=int), 0
    for _ in range(30):
        obs, reward, terminated, truncated, info = venv.step(halting_actions(obs, rng))
        ret += reward
        length += 1
        done = terminated | truncated
        if done.any():
            np.testing.assert_array_equal(info["_episode"], done)
            np.testing.assert_allclose(info["episode"]["r"][done], ret[done], rtol=1e-6)
            np.testing.assert_array_equal(info["episode"]["l"][done], length[done])
            seen += int(done.sum())
            ret[done], length[done] = 0, 0
    assert seen > 8 and len(venv.return_queue) == min(seen, venv.return_queue.maxlen)


def test_normalize_reward_scales_every_environments_reward_by_one_factor():
    raw_env = gym.make_vec(ID, num_envs=8, pool_size=64, step_cost=0.05, backend="numpy")
    norm_env = NormalizeReward(gym.make_vec(ID, num_envs=8, pool_size=64, step_cost=0.05, backend="numpy"))
    o1, _ = raw_env.reset(seed=1)
    o2, _ = norm_env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(10):
        a = halting_actions(o1, rng, halt_p=0.1)
        o1, r1, *_ = raw_env.step(a)
        o2, r2, *_ = norm_env.step(a)
        np.testing.assert_array_equal(o1["answer"], o2["answer"])  # the same episodes
        ratio = r2[r1 != 0] / r1[r1 != 0]
        assert np.isfinite(ratio).all() and np.ptp(ratio) < 1e-4 * np.abs(ratio).max()
    assert not np.allclose(ratio, 1.0)  # the running return variance has moved the scale


def test_dict_info_to_list_gives_one_dict_per_environment():
    venv = DictInfoToList(gym.make_vec(ID, num_envs=4, pool_size=32, backend="numpy", teacher=True))
    obs, infos = venv.reset(seed=0)
    assert isinstance(infos, list) and len(infos) == 4
    a = np.zeros((4, 82), dtype=np.int64)
    a[:2, 81] = 1  # the first two halt: their infos carry the final observation
    obs, _, terminated, _, infos = venv.step(a)
    assert [("final_obs" in i) for i in infos] == [True, True, False, False]
    for i, info in enumerate(infos):
        np.testing.assert_array_equal(info["solution"][obs["puzzle"][i] > 0], obs["puzzle"][i][obs["puzzle"][i] > 0])
        assert info["cell_reward"].shape == (81,) and 0.0 <= info["cell_accuracy"] <= 1.0


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (40, 16), (-1, 16)])
def test_make_vec_max_episode_steps_truncates_like_time_limit(limit, expected):
    venv = gym.make_vec(ID, num_envs=4, pool_size=32, max_episode_steps=limit)
    venv.reset(seed=0)
    never_halt = torch.zeros(4, 82, dtype=torch.long)
    for t in range(1, expected + 1):
        _, _, terminated, truncated, info = venv.step(never_halt)
        assert not terminated.any()
        assert bool(truncated.all()) == (t == expected), t
    assert (info["final_obs"]["step"] == expected).all()


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_observations_and_actions_lie_in_their_spaces(backend):
    venv = gym.make_vec(ID, num_envs=3, pool_size=16, backend=backend)
    obs, _ = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    for _ in range(3):
        a = venv.action_space.sample()
        assert venv.action_space.contains(a) and venv.action_space.contains(torch.as_tensor(a))
        obs, *_ = venv.step(a if backend == "numpy" else torch.as_tensor(a))
        assert venv.observation_space.contains(obs)
    bad = {**obs, "answer": obs["answer"] + 10}
    assert not venv.observation_space.contains(bad)


def test_numpy_backend_hands_out_copies():
    venv = gym.make_vec(ID, num_envs=2, pool_size=16, backend="numpy")
    obs, _ = venv.reset(seed=0)
    kept = obs["puzzle"].copy()
    obs["puzzle"][:] = 0  # a caller scribbling on what it got
    obs2, *_ = venv.step(np.zeros((2, 82), dtype=np.int64))
    np.testing.assert_array_equal(obs2["puzzle"], kept)


def test_reset_mask_restarts_only_the_masked_environments():
    venv = LatentReasoningSudokuVectorEnv(num_envs=4, pool_size=64)
    venv.reset(seed=0)
    obs, *_ = venv.step(torch.zeros(4, 82, dtype=torch.long))
    assert (obs["step"] == 1).all()
    mask = np.array([True, False, True, False])
    obs2, _ = venv.reset(options={"reset_mask": mask})
    assert obs2["step"].tolist() == [0, 1, 0, 1]
    assert torch.equal(obs2["puzzle"][~torch.as_tensor(mask)], obs["puzzle"][~torch.as_tensor(mask)])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"index": 3}, r"reset options \['index'\] are not understood"),
        ({"reset_mask": np.ones(3, dtype=bool)}, r"must be a bool array or tensor of shape \(4,\)"),
        ({"reset_mask": np.ones(4, dtype=np.int64)}, r"must be a bool array"),
        ({"reset_mask": np.zeros(4, dtype=bool)}, r"at least one True"),
    ],
)
def test_vector_reset_refuses_options_it_does_not_take(options, message):
    venv = LatentReasoningSudokuVectorEnv(num_envs=4, pool_size=16)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        venv.reset(options=options)


def test_first_reset_must_start_every_environment():
    venv = LatentReasoningSudokuVectorEnv(num_envs=2, pool_size=16)
    with pytest.raises(ValueError, match="first reset"):
        venv.reset(options={"reset_mask": np.array([True, False])})


def test_single_env_refuses_unknown_reset_options():
    env = LatentReasoningSudokuEnv(pool_size=16)
    obs, _ = env.reset(seed=0, options={"index": 2})
    np.testing.assert_array_equal(obs["puzzle"], env.pool.puzzles[2])
    with pytest.raises(ValueError, match=r"\['puzzle'\] are not understood"):
        env.reset(options={"puzzle": "x"})


def test_sb3_vec_env_steps_like_sb3_expects():
    venv = SB3VecEnv(LatentReasoningSudokuVectorEnv(num_envs=6, pool_size=32, max_steps=3))
    venv.seed(5)
    obs = venv.reset()
    assert set(obs) == {"puzzle", "answer", "step"} and obs["puzzle"].shape == (6, 81)
    twin = SB3VecEnv(LatentReasoningSudokuVectorEnv(num_envs=6, pool_size=32, max_steps=3))
    twin.seed(5)
    np.testing.assert_array_equal(twin.reset()["puzzle"], obs["puzzle"])  # one seed, the same puzzles
    a = np.zeros((6, 82), dtype=np.int64)
    a[0, 81] = 1  # env 0 halts; the rest run into the step limit
    for t in range(3):
        before = obs
        obs, rewards, dones, infos = venv.step(a)
        assert rewards.dtype == np.float32 and dones.dtype == bool and len(infos) == 6
        for i in np.flatnonzero(dones):
            term = infos[i]["terminal_observation"]
            np.testing.assert_array_equal(term["puzzle"], before["puzzle"][i])
            assert term["step"] == (1 if i == 0 else t + 1)  # env 0 halts at every first step
            assert infos[i]["TimeLimit.truncated"] == (i != 0)
            assert obs["step"][i] == 0  # already reset
        expected = [True] + [t == 2] * 5
        assert dones.tolist() == expected


def test_sb3_ppo_trains_on_the_batched_env():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(SB3VecEnv(LatentReasoningSudokuVectorEnv(num_envs=16, pool_size=64, max_steps=4, step_cost=0.02)))
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=64, n_epochs=1, seed=0, verbose=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert model.num_timesteps == 256
    assert len(model.ep_info_buffer) > 0 and all(1 <= e["l"] <= 4 for e in model.ep_info_buffer)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.policy.parameters(), strict=True))
    with pytest.raises(ValueError, match="share one state"):
        venv.env_method("reset", indices=[0])
