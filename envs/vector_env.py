"""The batched torch vector version of LatentReasoning-Sudoku-v0.

All state lives as tensors on one device; ``step`` is a fixed sequence of batched
tensor operations with no per-environment Python loop. Finished environments reset
in the same step (gymnasium's ``AutoresetMode.SAME_STEP``): the returned observation
of such an environment is its new episode's first one, and ``info["final_obs"]``
holds the last observation of the episode that ended (rows where
``info["_final_obs"]`` is True). Every other ``info`` entry describes the transition
just taken, before any reset.

With ``backend="numpy"`` every array comes back as a numpy array on the host instead, which
is what gymnasium's vector wrappers (``RecordEpisodeStatistics``, ``NormalizeReward``,
``DictInfoToList``, ...) compute with; :mod:`envs.sb3_vec_env` adapts either backend to
stable-baselines3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs import augmentation
from envs.puzzle_pool import PuzzlePool, make_pool
from envs.rules import cell_scores
from envs.sudoku_env import check_settings, check_types, make_spaces

BACKENDS = ("torch", "numpy")


def to_numpy(x: Any) -> Any:
    """Tensors (also inside dicts) as numpy arrays on the host; other values unchanged."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    return x


class TensorDict(spaces.Dict):
    """A ``Dict`` space whose ``contains`` also takes values as torch tensors (on any device)."""

    def contains(self, x: Any) -> bool:
        return super().contains(to_numpy(x))


class TensorBox(spaces.Box):
    """A ``Box`` space whose ``contains`` also takes a torch tensor (on any device)."""

    def contains(self, x: Any) -> bool:
        return super().contains(to_numpy(x))


class LatentReasoningSudokuVectorEnv(VectorEnv):
    """``num_envs`` Sudoku refinement episodes stepped together as torch tensors.

    Same MDP, rewards and keyword arguments as
    :class:`envs.sudoku_env.LatentReasoningSudokuEnv` (read its docstring), plus
    ``device``. Observations are a dict of ``puzzle (N, 81)``, ``answer (N, 81)`` and
    ``step (N,)`` int64 tensors; actions are an integer tensor (or array) ``(N, 82)``.
    Rewards are float32 ``(N,)``; ``terminated`` and ``truncated`` are bool ``(N,)``.
    Info: ``cell_accuracy``, ``score``, ``solved``, ``conflicts``, ``step`` (tensors
    ``(N,)``), after a step ``cell_reward`` ``(N, 81)`` (the per-cell part of the reward of
    the transition) and, with ``teacher=True``, ``solution`` ``(N, 81)``: the solution of the
    puzzle in the *returned* observation (the new episode's, where one started).

    Returned tensors are never modified afterwards (state is updated out of place or
    copied on write), so they can be stored without cloning.

    With ``order="sequential"`` environment ``i`` plays pool entries ``i, i + N,
    i + 2N, ...`` (mod the pool size), so a pool of ``N`` puzzles is played once each.

    ``group_size=K`` (``order="random"``): environments ``gK .. gK + K - 1`` form group ``g``;
    environments of a group that start episodes in the same call (every :meth:`reset`) draw
    one puzzle (and, with ``augment``, one symmetry unless ``group_shares_symmetry=False``)
    together, so a group holds ``K`` episodes of the same puzzle: what a group baseline
    (advantage = return minus the group's mean) needs; per-cell baselines need the shared
    symmetry (cell ``i`` is the same cell in every episode), other uses gain diversity from
    one symmetry per episode. ``num_envs`` must be a multiple of ``K``.

    Gymnasium conventions: ``observation_space`` and ``action_space`` are the batched spaces
    (their ``contains`` takes tensors); ``gym.make_vec(..., max_episode_steps=M)`` truncates
    episodes after ``min(M, max_steps)`` steps (the vector form of ``TimeLimit``);
    ``reset(options={"reset_mask": m})`` starts new episodes only where the bool ``(N,)`` mask
    ``m`` is True (the other environments keep their episodes); other options are refused.
    ``backend="numpy"`` returns numpy arrays for gymnasium's numpy-based vector wrappers.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        difficulty: str = "easy",
        puzzles: Any = None,
        max_steps: int = 16,
        reward_mode: str = "solution",
        step_cost: float = 0.0,
        solve_bonus: float = 1.0,
        augment: bool = False,
        teacher: bool = False,
        render_mode: str | None = None,
        pool_size: int = 1024,
        pool_seed: int = 0,
        order: str = "random",
        terminate_on_solve: bool = True,
        device: str | torch.device = "cpu",
        validate_actions: bool = True,
        pool: PuzzlePool | None = None,
        group_size: int = 1,
        cell_weight: float = 1.0,
        group_shares_symmetry: bool = True,
        max_episode_steps: int | None = None,
        backend: str = "torch",
    ) -> None:
        check_types(
            {"augment": augment, "teacher": teacher, "terminate_on_solve": terminate_on_solve,
             "group_shares_symmetry": group_shares_symmetry},
            {"num_envs": num_envs, "max_steps": max_steps, "pool_size": pool_size, "pool_seed": pool_seed,
             "group_size": group_size, **({} if max_episode_steps is None else {"max_episode_steps": max_episode_steps})},
        )
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if max_episode_steps == -1:  # gymnasium's spelling of "no TimeLimit"
            max_episode_steps = None
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 (or -1: no limit), got {max_episode_steps}")
        check_settings(max_steps, reward_mode, step_cost, solve_bonus, order, cell_weight)
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode is not None:
            raise ValueError("the vector env does not render; use the single env for pictures")
        if int(group_size) < 1 or int(num_envs) % int(group_size):
            raise ValueError(f"group_size must be >= 1 and divide num_envs ({num_envs}), got {group_size}")
        if int(group_size) > 1 and order != "random":
            raise ValueError("group_size > 1 needs order='random' (sequential order plays each puzzle once)")
        need = reward_mode == "solution" or teacher
        self.pool = pool or make_pool(difficulty, puzzles, need_solutions=need, pool_size=pool_size, pool_seed=pool_seed)
        if need and self.pool.solutions is None:
            raise ValueError("this puzzle source has no solutions: use reward_mode='verifier' and teacher=False")
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.max_steps = int(max_steps)
        # truncation: the env's own step limit, or gymnasium's TimeLimit (make_vec(max_episode_steps=...)) if shorter
        self.horizon = min(self.max_steps, int(max_episode_steps or self.max_steps))
        self.backend = backend
        self.reward_mode = reward_mode
        self.step_cost = float(step_cost)
        self.solve_bonus = float(solve_bonus)
        self.cell_weight = float(cell_weight)
        self.augment = bool(augment)
        self.teacher = bool(teacher)
        self.order = order
        self.group_size = int(group_size)
        self.group_shares_symmetry = bool(group_shares_symmetry)
        self.terminate_on_solve = bool(terminate_on_solve)
        self.validate_actions = validate_actions
        self.render_mode = None
        self.single_observation_space, self.single_action_space = make_spaces(self.max_steps)
        self.observation_space = TensorDict(batch_space(self.single_observation_space, self.num_envs).spaces)
        actions = batch_space(self.single_action_space, self.num_envs)  # gymnasium batches MultiDiscrete to a Box
        self.action_space = TensorBox(actions.low, actions.high, dtype=actions.dtype)

        self._pool_p = torch.as_tensor(self.pool.puzzles, dtype=torch.long, device=self.device)
        self._pool_s = (
            None if self.pool.solutions is None else torch.as_tensor(self.pool.solutions, dtype=torch.long, device=self.device)
        )
        self._allocate()

    # ------------------------------------------------------------------ helpers
    def _allocate(self) -> None:
        """The per-environment state tensors, on the device, and the generator that draws puzzles."""
        n, d = self.num_envs, self.device
        self.puzzle = torch.zeros(n, 81, dtype=torch.long, device=d)
        self.solution = torch.zeros(n, 81, dtype=torch.long, device=d)
        self.answer = torch.zeros(n, 81, dtype=torch.long, device=d)
        self.t = torch.zeros(n, dtype=torch.long, device=d)
        self._score = torch.zeros(n, dtype=torch.long, device=d)
        self._cells = torch.zeros(n, 81, dtype=torch.bool, device=d)
        self._solved = torch.zeros(n, dtype=torch.bool, device=d)
        self._blanks = torch.ones(n, dtype=torch.float32, device=d)
        self._given = torch.zeros(n, 81, dtype=torch.bool, device=d)
        self._cursor = torch.arange(n, device=d)
        self._gen = torch.Generator(device=d)
        self._gen.seed()
        self._started = False

    def _load(self, rows: torch.Tensor) -> None:
        """Start new episodes in environments ``rows`` (int64 index tensor)."""
        m = rows.numel()
        if m == 0:
            return
        if self.order == "sequential":
            k = self._cursor[rows] % len(self.pool)
            self._cursor[rows] += self.num_envs
        else:
            # one draw per group present in rows; every member of the group reads the group's draw
            groups, member = torch.unique(rows // self.group_size, return_inverse=True)
            k = torch.randint(len(self.pool), (groups.numel(),), generator=self._gen, device=self.device)[member]
        # copy on write: tensors handed out in earlier observations are never modified
        self.puzzle, self.solution, self.answer, self.t = (x.clone() for x in (self.puzzle, self.solution, self.answer, self.t))
        p = self._pool_p[k]
        s = self._pool_s[k] if self._pool_s is not None else torch.zeros_like(p)
        if self.augment:
            shared = self.group_size if self.group_shares_symmetry else 1
            groups, member = torch.unique(rows // shared, return_inverse=True)
            src, digit = augmentation.random_symmetry(groups.numel(), self._gen, self.device)
            p, s = augmentation.apply(src[member], digit[member], p, s)
        self.puzzle[rows] = p
        self.solution[rows] = s
        self.answer[rows] = p
        self.t[rows] = 0
        self._score[rows] = 0  # C(a_0) = 0
        self._cells[rows] = False
        self._solved = self._solved.clone()  # the old tensor was handed out as info["solved"]
        self._solved[rows] = False  # a puzzle always has a blank
        self._given[rows] = p > 0
        self._blanks[rows] = (p == 0).sum(-1).clamp(min=1).float()

    def _obs(self) -> dict[str, torch.Tensor]:
        return {"puzzle": self.puzzle, "answer": self.answer, "step": self.t}

    def _info(self, solved: torch.Tensor, conflicts: torch.Tensor) -> dict[str, Any]:
        blank = self.puzzle == 0
        if self.reward_mode == "solution":
            acc = self._score.float() / self._blanks  # C counts the correct blanks
        elif self._pool_s is not None:
            acc = ((self.answer == self.solution) & blank).sum(-1).float() / self._blanks
        else:
            acc = torch.full((self.num_envs,), float("nan"), device=self.device)
        info: dict[str, Any] = {
            "cell_accuracy": acc,
            "score": self._score.float() / self._blanks,
            "solved": solved,
            "conflicts": conflicts,
            "step": self.t,
        }
        return info

    def _evaluate(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sol = self.solution if self.reward_mode == "solution" else None
        return cell_scores(self.puzzle, self.answer, sol, self.reward_mode)

    # ------------------------------------------------------------------ API
    def get_rng_state(self) -> torch.Tensor:
        """The state of the device generator that draws puzzles and symmetries (to store in a checkpoint)."""
        return self._gen.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        """Restore a state from :meth:`get_rng_state`; the next draws continue exactly from there."""
        self._gen.set_state(state)

    def _reset_rows(self, options: dict[str, Any] | None) -> torch.Tensor:
        """The environments a :meth:`reset` starts anew: all, or those of ``options["reset_mask"]``."""
        unknown = sorted(set(options or {}) - {"reset_mask"})
        if unknown:
            raise ValueError(f"reset options {unknown} are not understood; the only option is 'reset_mask' "
                             f"(a bool array of shape ({self.num_envs},))")
        if not options or options.get("reset_mask") is None:
            return torch.arange(self.num_envs, device=self.device)
        mask = options["reset_mask"]
        dtype = mask.dtype if isinstance(mask, (np.ndarray, torch.Tensor)) else None
        if dtype not in (np.bool_, torch.bool) or tuple(mask.shape) != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a bool array or tensor of shape ({self.num_envs},), got "
                             f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {tuple(getattr(mask, 'shape', ()))}")
        if not bool(mask.any()):
            raise ValueError("options['reset_mask'] must hold at least one True (an environment to reset)")
        if not self._started and not bool(mask.all()):
            raise ValueError("the first reset() must start every environment: options['reset_mask'] must be all True")
        return torch.as_tensor(mask, device=self.device).nonzero().squeeze(-1)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Start a new episode in every environment (or in those of ``options["reset_mask"]``);
        ``seed`` reseeds the device generator."""
        rows = self._reset_rows(options)
        if isinstance(seed, (list, tuple)):
            if len(seed) != 1:
                raise ValueError(
                    f"seed must be one int: one generator draws every sub-environment's puzzles, got {seed!r}"
                )
            seed = int(seed[0])
        if seed is not None:
            self._gen.manual_seed(int(seed))
            self._np_random, self._np_random_seed = np.random.default_rng(seed), seed
            self._cursor = torch.arange(self.num_envs, device=self.device)
        self._load(rows)
        self._started = True
        _, solved, conflicts = self._evaluate()
        info = self._info(solved, conflicts)
        if self.teacher:
            info["solution"] = self.solution
        return self._out(self._obs()), self._out(info)

    def _out(self, x: Any) -> Any:
        """What the caller gets: ``x`` as it is (torch backend) or as numpy copies (numpy backend)."""
        if self.backend == "torch":
            return x
        host = to_numpy(x)  # on the CPU these share memory with the env's tensors: hand out copies
        if isinstance(host, dict):
            return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in host.items()}
        return host.copy()

    def step(self, actions: Any):
        """Apply ``actions (N, 82)``; see the class docstring for what comes back."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = torch.as_tensor(actions, device=self.device)
        if a.shape != (self.num_envs, 82):
            raise ValueError(f"actions must have shape ({self.num_envs}, 82), got {tuple(a.shape)}")
        if a.dtype.is_floating_point or a.dtype.is_complex:
            raise ValueError(f"actions must be integers, got {a.dtype}")
        a = a.long()
        if self.validate_actions:
            lo, hi = torch.aminmax(a[:, :81])
            hlo, hhi = torch.aminmax(a[:, 81])
            if lo < 0 or hi > 9 or hlo < 0 or hhi > 1:
                raise ValueError("action cells must lie in 0..9 and the halt flag in {0, 1}")
        self.answer = torch.where(self._given, self.puzzle, a[:, :81])
        self.t = self.t + 1
        cells, solved, conflicts = self._evaluate()
        new_score = cells.sum(-1)
        cell_reward = self.cell_weight * (cells.float() - self._cells.float()) / self._blanks[:, None]
        bonus = self.solve_bonus * (solved.float() - self._solved.float())
        reward = self.cell_weight * (new_score - self._score).float() / self._blanks + bonus - self.step_cost
        self._score, self._solved, self._cells = new_score, solved, cells
        terminated = (solved & self.terminate_on_solve) | (a[:, 81] == 1)
        truncated = (self.t >= self.horizon) & ~terminated
        info = self._info(solved, conflicts)
        info["cell_reward"] = cell_reward
        done = terminated | truncated
        info["final_obs"] = self._out(self._obs())
        info["_final_obs"] = done
        self._load(done.nonzero().squeeze(-1))
        if self.teacher:
            info["solution"] = self.solution
        return tuple(self._out(x) for x in (self._obs(), reward, terminated, truncated)) + (self._out(info),)
