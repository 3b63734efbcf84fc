"""The batched env as a stable-baselines3 ``VecEnv``: SB3's algorithms train on it directly.

``SB3VecEnv(LatentReasoningSudokuVectorEnv(num_envs=N, ...))`` is what SB3 expects of a
vector env: ``reset()`` returns the observations alone, ``step`` returns numpy
``(obs, rewards (N,) float32, dones (N,) bool, infos)`` with ``infos`` a list of ``N``
dicts, finished environments already reset, and for each of them
``infos[i]["terminal_observation"]`` (the last observation of the episode that ended) and
``infos[i]["TimeLimit.truncated"]`` (it ended on the step limit, not by solving or
halting: SB3 then bootstraps its value). Episode statistics for SB3's logger come from
wrapping it in ``stable_baselines3.common.vec_env.VecMonitor``::

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    venv = VecMonitor(SB3VecEnv(LatentReasoningSudokuVectorEnv(num_envs=64, max_steps=6)))
    PPO("MultiInputPolicy", venv, n_steps=64).learn(10_000)

One generator draws every sub-environment's puzzles, so :meth:`SB3VecEnv.seed` takes one
seed for them all (the first of SB3's ``seed + i`` list).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.vector_env import LatentReasoningSudokuVectorEnv, to_numpy


def _copies(obs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Numpy copies of an observation: on the CPU the torch backend's arrays would share the env's memory."""
    return {k: np.array(to_numpy(v)) for k, v in obs.items()}


class SB3VecEnv(VecEnv):
    """stable-baselines3's ``VecEnv`` interface over a :class:`LatentReasoningSudokuVectorEnv`.

    Observations are the single env's ``Dict`` space (``puzzle``, ``answer`` ``(N, 81)``,
    ``step`` ``(N,)``, int64); actions ``(N, 82)`` integers. Works with either backend of the
    wrapped env; arrays always come back as numpy. The wrapped env is ``self.env``.
    """

    def __init__(self, env: LatentReasoningSudokuVectorEnv) -> None:
        if not isinstance(env, LatentReasoningSudokuVectorEnv):
            raise TypeError(f"SB3VecEnv wraps a LatentReasoningSudokuVectorEnv, got {type(env).__name__}")
        self.env = env
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        if any(o for o in self._options):
            raise ValueError(f"SB3VecEnv takes no reset options, got {self._options[0]!r}")
        obs, info = self.env.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return _copies(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs, -1)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        obs, reward, terminated, truncated, info = (to_numpy(x) for x in self.env.step(self._actions))
        obs = _copies(obs)
        self._actions = None
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        final = info["final_obs"]
        for i in np.flatnonzero(dones):
            infos[i] = {
                "terminal_observation": {k: np.array(v[i]) for k, v in final.items()},
                "TimeLimit.truncated": bool(truncated[i]),
                "solved": bool(info["solved"][i]),
            }
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.env.close()

    # SB3 asks these of every sub-environment; here one object holds them all
    def _all(self, indices: VecEnvIndices) -> list[int]:
        idx = list(self._get_indices(indices))
        if sorted(idx) != list(range(self.num_envs)):
            raise ValueError("the batched env's sub-environments share one state: address all of them (indices=None)")
        return idx

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._all(indices)
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        idx = self._all(indices)
        out = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [out for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
