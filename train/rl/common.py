"""The settings both RL scripts share: the run, the training environment, the start and the controls.

Each group is a small dataclass nested in the scripts' ``Args`` (its fields are flat
flags: ``--num-envs``, ``--init-from``, ...), and the functions below the scripts take
only the groups they use.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agents.recursion_policy import PolicySettings
from envs import real_sets
from train.run_folder import RunArgs, check_memory
from trm import starts
from trm.checkpoint import load_checkpoint

RL_KINDS = ("ppo_recursion", "expert_iteration")  # checkpoints the RL scripts write
INIT_KINDS = ("dis", "trm", *RL_KINDS)  # checkpoints an RL run may start from


@dataclass
class EnvSettings:
    """The batched training environment of the rollouts (``LatentReasoning-Sudoku-v0``'s arguments)."""

    num_envs: int = 128  # episodes per rollout (split over the processes)
    reward_mode: Literal["solution", "verifier"] = "solution"  # the env's reward: from the solution, or from the rules alone
    step_cost: float = 0.02  # reward paid per recursion step: the price of compute that halting saves
    solve_bonus: float = 1.0  # reward for a solved board (as a potential difference)
    verifier_cell_weight: float = 0.1  # verifier mode: weight of the conflict-free-cell term (solves dominate)
    terminate_on_solve: bool = False  # end an episode when solved (default: only the halt action or n_sup ends it)
    group_size: int = 8  # K: episodes of the same puzzle per group (--objective group, expert iteration)

    def __post_init__(self) -> None:
        for name in ("num_envs", "group_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        # a rollout keeps about 64 (N, 81) int64/float tensors per step's worth of episodes
        check_memory(self.num_envs * 81 * 8 * 64, "--num-envs")
        for name in ("step_cost", "solve_bonus", "verifier_cell_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")


@dataclass
class StartSettings:
    """Where the policy starts: a checkpoint, a short DIS warm start with labels on generated puzzles, or scratch."""

    init_from: str = ""  # a dis / trm / RL checkpoint or shipped:NAME (trm/starts.py); empty: a DIS warm start
    warm_minutes: float = 3.75  # the DIS warm start's budget (0 with --reward-mode verifier: start from scratch)
    warm_eval_size: int = 64  # held-out puzzles the warm start evaluates at its end (the first of the same held-out set)
    hidden: int = 0  # policy width for the warm start (0: DIS default); must match --init-from if given
    pooled_halt: bool = False  # halting head reads only mean_L y (TRM's); start it with --halt-init-bias -2
    halt_init_bias: float = 0.0  # halting logit bias b at RL start when the Q head was never trained
    halt_init_weight: float = 10.0  # weight u of the confidence feature at RL start (when it is new)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.warm_minutes) and self.warm_minutes >= 0):
            raise ValueError(f"--warm-minutes must be a finite number >= 0, got {self.warm_minutes}")
        if self.warm_eval_size < 1 or self.hidden < 0:
            raise ValueError(f"--warm-eval-size must be at least 1 and --hidden >= 0, got {self.warm_eval_size}, {self.hidden}")

    def check(self, reward_mode: str) -> None:
        """Resolve ``shipped:NAME`` to the file the package ships; refuse a missing or unfit ``--init-from``
        (naming the file), or no start at all."""
        self.init_from = starts.resolve(self.init_from)
        if not self.init_from and reward_mode == "solution" and not self.warm_minutes > 0:
            raise ValueError("--warm-minutes must be above 0 when there is no --init-from")
        if self.init_from and not Path(self.init_from).is_file():
            raise ValueError(f"--init-from: checkpoint {self.init_from} does not exist")
        if self.init_from:
            try:
                load_checkpoint(self.init_from, kind=INIT_KINDS)
            except ValueError as e:
                raise ValueError(f"--init-from: {e}") from None


@dataclass
class ControlSettings:
    """The no-RL rows of the closing table."""

    control_dis: bool = True  # fine-tune the DIS start by DIS with labels for the same training forward passes (c1)
    control_data: Literal["start", "rl", "both"] = "start"  # its data: the start's labelled source, RL's puzzles labelled, both
    val_size: int = 256  # training puzzles that choose the no-RL halting threshold of the control row
    halt_curve: bool = False  # also measure that control at every threshold on the held-out puzzles (for equal solve rates)
    parallel_controls: bool = False  # train the controls (DIS, c2) in their own processes beside RL, for --forward-passes
    self_training: bool = False  # self-training without search for the same training forward passes (c2)
    test_set: str = ""  # a real collection's test part (sudoku17:test, top1465:test) every row is also measured on, once
    test_size: int = 256  # its first N puzzles

    def __post_init__(self) -> None:
        if self.val_size < 1 or self.test_size < 1:
            raise ValueError(f"--val-size and --test-size must be at least 1, got {self.val_size}, {self.test_size}")
        spec = real_sets.parse_spec(self.test_set) if self.test_set else None
        if self.test_set and (spec is None or spec[1] != "test"):
            parts = ", ".join(n + ":test" for n in real_sets.REAL_SETS)
            raise ValueError(f"--test-set must be a collection's test part ({parts}) or empty, got {self.test_set!r}")


@dataclass
class RLArgs(RunArgs):
    """The options of both RL scripts; each script's ``Args`` adds its objective's settings."""

    out: str = "runs/ppo_recursion"  # run folder: checkpoint.pt, tb/, run.json, metrics.json (and warm_dis/)
    minutes: float = 2.0  # RL wall-clock budget
    updates: int = 0  # stop after this many updates (0: only --minutes)
    puzzles: str = ""  # puzzle file; with --reward-mode verifier its solutions are never read by RL
    pool_size: int = 4096  # generated training puzzles (the warm start draws from the same pool)
    eval_size: int = 256  # held-out puzzles (the DIS warm start holds out the same ones)
    eval_every: int = 0  # every N updates, log held-out solve rate and cell accuracy (labels read for evaluation only; 0: off)
    lr: float = 5e-5  # learning rate of the network
    ema_decay: float = -1.0  # weight average for greedy decoding and search (-1: the script's default; 0: off)
    env: EnvSettings = field(default_factory=EnvSettings)
    start: StartSettings = field(default_factory=StartSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    control: ControlSettings = field(default_factory=ControlSettings)

    def validate(self) -> None:
        super().validate()
        if self.control.parallel_controls and not self.forward_passes:
            raise ValueError("--parallel-controls trains the controls for --forward-passes: set it above 0")
        if self.updates < 0 or self.eval_every < 0:
            raise ValueError("--updates and --eval-every must be >= 0")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"--lr must be a finite number >= 0, got {self.lr}")
        if not (self.ema_decay == -1.0 or 0 <= self.ema_decay < 1):
            raise ValueError(f"--ema-decay must be -1 (automatic) or lie in [0, 1), got {self.ema_decay}")
        self.start.check(self.env.reward_mode)
        if self.env.reward_mode == "verifier" and not self.start.init_from and self.start.warm_minutes > 0 and not self.puzzles:
            raise ValueError("a label-free run on generated puzzles would warm up with labels on its own pool: give "
                             "--init-from, --puzzles or --warm-minutes 0 (scratch)")
        if self.control.parallel_controls and self.updates:
            raise ValueError("--parallel-controls trains the controls for --forward-passes: stop RL on it, not on --updates")


def flat(args: Any) -> dict[str, Any]:
    """Every option of ``args`` by its flag's name: the fields of nested settings lifted to the top."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(args):
        v = getattr(args, f.name)
        out.update(flat(v) if dataclasses.is_dataclass(v) else {f.name: v})
    return out
