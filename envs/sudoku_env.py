"""LatentReasoning-Sudoku-v0: one puzzle, numpy observations."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from envs import augmentation, render
from envs.puzzle_pool import PuzzlePool, make_pool
from envs.rules import cell_scores

REWARD_MODES = ("solution", "verifier")


def check_types(flags: dict[str, Any], sizes: dict[str, Any]) -> None:
    """Booleans must be booleans (``"no"`` is not False) and sizes integers (``2.7`` is not 2)."""
    for name, v in flags.items():
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {v!r}")
    for name, v in sizes.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")


def check_settings(
    max_steps: int, reward_mode: str, step_cost: float, solve_bonus: float, order: str, cell_weight: float = 1.0
) -> None:
    """Validate the keyword arguments that the single and the vector env share."""
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if not np.isfinite(step_cost) or not np.isfinite(solve_bonus):
        raise ValueError("step_cost and solve_bonus must be finite")
    if not np.isfinite(cell_weight) or cell_weight < 0:
        raise ValueError(f"cell_weight must be finite and >= 0, got {cell_weight}")
    if order not in ("random", "sequential"):
        raise ValueError(f"order must be 'random' or 'sequential', got {order!r}")


def make_spaces(max_steps: int) -> tuple[spaces.Dict, spaces.MultiDiscrete]:
    """The single-env observation and action spaces."""
    obs = spaces.Dict(
        {
            "puzzle": spaces.MultiDiscrete(np.full(81, 10)),
            "answer": spaces.MultiDiscrete(np.full(81, 10)),
            "step": spaces.Discrete(max_steps + 1),
        }
    )
    act = spaces.MultiDiscrete(np.array([10] * 81 + [2]))
    return obs, act


class LatentReasoningSudokuEnv(gym.Env):
    """Refine a Sudoku answer one recursion step at a time.

    ## Description

    Each step of an episode is one latent recursion step of a reasoning model: the
    agent reads the puzzle and its current answer and proposes a new answer for every
    cell, optionally halting. The reward is how much the step improved the answer.

    ## Observation space

    ``Dict`` of ``puzzle`` ``MultiDiscrete([10] * 81)`` (0 = blank), ``answer``
    ``MultiDiscrete([10] * 81)`` (0 = undecided; givens always hold their digit) and
    ``step`` ``Discrete(max_steps + 1)``. Cells are in row-major order.

    ## Action space

    ``MultiDiscrete([10] * 81 + [2])``: the proposed answer for each cell (0 =
    undecided; values proposed for given cells are ignored) and a halt flag.

    ## Rewards

    With ``C(a)`` the potential of answer ``a`` and ``B`` the number of blank cells::

        r_t = cell_weight * [C(a_{t+1}) - C(a_t)] / B + solve_bonus * 1[solved at t+1] - step_cost

    ``reward_mode="solution"``: ``C`` counts blank cells equal to the solution.
    ``reward_mode="verifier"`` (label-free): ``C`` counts blank cells holding a digit
    that conflicts with nothing in its row, column and box, and *solved* means
    complete and conflict-free; no solution is read. The undiscounted return
    telescopes to ``C(final)/B - C(a_0)/B + bonus - step_cost * steps`` with
    ``C(a_0) = 0``: potential-based shaping of the final score. In general the bonus
    term is ``solve_bonus * (solved_{t+1} - solved_t)``, which is the same thing while
    episodes end on solving, and keeps the shaping exact when they do not
    (``terminate_on_solve=False``).

    The verifier's ``C`` can be raised without solving: a greedy conflict-free fill of a
    generated easy puzzle scores about 0.77 of the blanks with a third of them right,
    above a correct half-fill (about 0.53). What makes the label-free reward safe is that
    the verified solve dominates the return: a solved board ends with
    ``cell_weight + solve_bonus``, any unsolved one with less than ``cell_weight``, so with
    ``cell_weight`` well below ``solve_bonus`` (``train/ppo_recursion.py`` uses 0.1 with the
    verifier) conflict-free filling is worth little next to one solve.

    ## Starting state

    A puzzle from the pool (random, or in order with ``order="sequential"``),
    optionally transformed by a random validity-preserving symmetry; ``a_0`` is the
    puzzle itself and ``step = 0``. ``reset(options={"index": i})`` picks pool entry i; any other
    option is refused (``ValueError``).

    ## Episode end

    Terminated when the answer is solved (unless ``terminate_on_solve=False``, for
    evaluations where the agent must decide when to stop) or the halt flag is 1;
    truncated when ``step == max_steps``. Stepping a finished episode raises ``RuntimeError``.

    ## Info

    ``cell_accuracy`` (fraction of blanks equal to the solution; NaN when the pool is
    label-free), ``score`` (``C(a)/B``), ``solved``, ``conflicts`` (filled cells in
    conflict), ``step``, and ``solution`` only with ``teacher=True``. After a step,
    ``cell_reward`` ``(81,)``: the per-cell part of the reward, ``(c_i(a') - c_i(a)) / B``
    with ``c_i`` cell ``i``'s term of ``C`` (in both reward modes), so that
    ``reward = cell_reward.sum() + bonus term - step_cost`` (``cell_reward`` carries
    ``cell_weight``); a factorised policy can give each cell its own credit.

    ## Arguments

    * ``difficulty``: generated tier, ``easy | medium | hard | extreme`` (see
      :data:`envs.sudoku.TIERS`), used when ``puzzles`` is None.
    * ``puzzles``: a file path, an array of puzzles, or ``(puzzles, solutions)``.
    * ``max_steps`` (16), ``reward_mode`` ("solution"), ``step_cost`` (0.0),
      ``solve_bonus`` (1.0), ``cell_weight`` (1.0: the weight of the ``C`` term), ``augment`` (False), ``teacher`` (False),
      ``render_mode`` (None, "ansi" or "rgb_array").
    * ``pool_size`` (1024) and ``pool_seed`` (0): how many puzzles to generate, and
      from which seed; ``order`` ("random" or "sequential"); ``terminate_on_solve`` (True).

    ## Version history

    * v0: first version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
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
        pool: PuzzlePool | None = None,
        cell_weight: float = 1.0,
    ) -> None:
        check_types(
            {"augment": augment, "teacher": teacher, "terminate_on_solve": terminate_on_solve},
            {"max_steps": max_steps, "pool_size": pool_size, "pool_seed": pool_seed},
        )
        check_settings(max_steps, reward_mode, step_cost, solve_bonus, order, cell_weight)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        need = reward_mode == "solution" or teacher
        self.pool = pool or make_pool(difficulty, puzzles, need_solutions=need, pool_size=pool_size, pool_seed=pool_seed)
        if need and self.pool.solutions is None:
            raise ValueError("this puzzle source has no solutions: use reward_mode='verifier' and teacher=False")
        self.max_steps = int(max_steps)
        self.reward_mode = reward_mode
        self.step_cost = float(step_cost)
        self.solve_bonus = float(solve_bonus)
        self.cell_weight = float(cell_weight)
        self.augment = bool(augment)
        self.teacher = bool(teacher)
        self.render_mode = render_mode
        self.order = order
        self.terminate_on_solve = bool(terminate_on_solve)
        self.observation_space, self.action_space = make_spaces(self.max_steps)
        self._cursor = 0
        self._done = True
        self._puzzle = self._answer = self._solution = None

    # ------------------------------------------------------------------ helpers
    def _obs(self) -> dict[str, Any]:
        return {"puzzle": self._puzzle.copy(), "answer": self._answer.copy(), "step": self._t}

    def _info(self, score_value: int, solved: bool, conflicts: int) -> dict[str, Any]:
        blanks = max(int((self._puzzle == 0).sum()), 1)
        if self._solution is not None:
            acc = float(((self._answer == self._solution) & (self._puzzle == 0)).sum() / blanks)
        else:
            acc = float("nan")
        info = {
            "cell_accuracy": acc,
            "score": score_value / blanks,
            "solved": bool(solved),
            "conflicts": int(conflicts),
            "step": self._t,
        }
        if self.teacher:
            info["solution"] = self._solution.copy()
        return info

    def _evaluate(self) -> tuple[np.ndarray, bool, int]:
        cells, solved, conf = cell_scores(self._puzzle, self._answer, self._solution, self.reward_mode)
        return cells, bool(solved), int(conf)

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._cursor = 0
        n = len(self.pool)
        unknown = sorted(set(options or {}) - {"index"})
        if unknown:
            raise ValueError(f"reset options {unknown} are not understood; the only option is 'index' (a pool entry)")
        if options and "index" in options:
            k = int(options["index"])
            if not 0 <= k < n:
                raise ValueError(f"options['index'] must lie in [0, {n}), got {k}")
        elif self.order == "sequential":
            k = self._cursor % n
            self._cursor += 1
        else:
            k = int(self.np_random.integers(n))
        puzzle = self.pool.puzzles[k].astype(np.int64)
        solution = None if self.pool.solutions is None else self.pool.solutions[k].astype(np.int64)
        if self.augment:
            gen = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
            src, digit = augmentation.random_symmetry(1, gen)
            grids = [torch.from_numpy(puzzle)[None]] + ([torch.from_numpy(solution)[None]] if solution is not None else [])
            out = augmentation.apply(src, digit, *grids)
            puzzle = out[0][0].numpy()
            solution = out[1][0].numpy() if solution is not None else None
        self._puzzle, self._solution = puzzle, solution
        self._answer = puzzle.copy()
        self._t = 0
        self._done = False
        self._score = 0  # C(a_0) = 0: every blank of a_0 is undecided
        self._cells = np.zeros(81, dtype=bool)
        _, solved, conf = self._evaluate()
        self._solved = solved
        return self._obs(), self._info(0, solved, conf)

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._puzzle is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended (terminated or truncated); call reset() before step()")
        a = np.asarray(action)
        if a.shape != (82,):
            raise ValueError(f"action must have shape (82,) (81 cells + halt flag), got {a.shape}")
        if a.dtype.kind not in "iub":
            raise ValueError(f"action must hold integers, got dtype {a.dtype}")
        if a[:81].min() < 0 or a[:81].max() > 9 or a[81] not in (0, 1):
            raise ValueError("action cells must lie in 0..9 and the halt flag in {0, 1}")
        self._answer = np.where(self._puzzle > 0, self._puzzle, a[:81].astype(np.int64))
        self._t += 1
        cells, solved, conf = self._evaluate()
        new_score = int(cells.sum())
        blanks = max(int((self._puzzle == 0).sum()), 1)
        cell_reward = self.cell_weight * (cells.astype(np.float64) - self._cells) / blanks
        bonus = self.solve_bonus * (solved - self._solved)
        reward = self.cell_weight * (new_score - self._score) / blanks + bonus - self.step_cost
        self._score, self._solved, self._cells = new_score, solved, cells
        terminated = bool((solved and self.terminate_on_solve) or a[81] == 1)
        truncated = bool(self._t >= self.max_steps and not terminated)
        self._done = terminated or truncated
        info = self._info(new_score, solved, conf)
        info["cell_reward"] = cell_reward
        return self._obs(), float(reward), terminated, truncated, info

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None or self._puzzle is None:
            return None
        if self.render_mode == "ansi":
            return render.board_text(self._puzzle, self._answer, self._solution)
        return render.board_image(self._puzzle, self._answer, self._solution)
