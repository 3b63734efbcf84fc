"""RL over recursion steps: the TRM policy acts in LatentReasoning-Sudoku-v0, one deep recursion per step.

The main job. On its defaults it starts from the DIS checkpoint the package ships
(``--init-from shipped:dis_medium``, ``trm/starts.py``: trained with labels on generated medium
puzzles only), trains it without labels on the 17-clue training split shipped with the
package (``--puzzles sudoku17``, ``--reward-mode verifier``: rewards from the Sudoku rules
alone, no solution read) by expert iteration with the verified search (``--objective
expert``) for ``--forward-passes`` training forward passes, beside its controls, each from
the same start with the same seed for the same passes: (c1) DIS with labels on the start's
generated source and (c2) self-training without search (only greedy answers that verify), each
trained in its own process while RL trains (``--parallel-controls``). It
prints the before/after table on the run's validation slice, then one table on the first
``--test-size`` puzzles of ``sudoku17:test`` (greedy, every step) with each row's optimizer
steps, training forward passes and minutes. With no ``--init-from`` it first warms the policy
with a short DIS run on generated puzzles (``--warm-minutes``; with labels, never RL's own).

Policy (``agents/recursion_policy.py``). The state carries the latents ``(y, z)`` across
steps, detached as in deep supervision, and the rollout stores each step's inputs, so the
log-probability of an action can be recomputed later from the stored latents::

    log pi(a | s) = sum_{blank cells i} log softmax(l_c)_i[a_i] + log Bern(halt; sigmoid(q))

As at inference, an episode ends only when the policy halts or after ``n_sup`` steps
(``--terminate-on-solve`` ends it on a solved board instead). The solve bonus is a
potential difference (paid when the board becomes solved, taken back if it breaks), so
every step past a solved board earns ``-step_cost``: halting there is what the step cost
teaches. The halt and value heads, which DIS never trained, learn at ``--head-lr``; the
rest of the network at ``--lr``.

Objectives (``--objective``; ``train/rl/update.py``, ``train/expert_iteration.py``):

* ``expert`` (default): each round the verified search (``--expert-search K`` sampled
  trajectories per puzzle, each under its own symmetry) labels ``--num-envs / K`` training
  puzzles not yet solved with the answers the rules verify; ``--replay-batches`` DIS batches
  on that replay follow (the run of ``train/expert_iteration.py``);
* ``ppo``: the clipped ratio ``min(r A, clip(r, 1 - eps, 1 + eps) A)`` on GAE advantages over
  recursion steps (``--gamma``, ``--gae-lambda``; ``train/rl/advantages.py``), entropy bonus,
  value loss; epochs stop early above ``--target-kl``, the run above ``--abort-kl``;
* ``group``: the clipped ratio with group-relative advantages: rollouts hold ``--group-size K``
  episodes of each puzzle, and episode ``i``'s return minus the mean of its group's other
  ``K - 1`` returns is the advantage of each of its steps (per cell under ``--credit cell``; under
  ``--credit shared`` every blank cell takes the episode's advantage through its own clipped ratio);
* ``pi``: policy improvement ``pi_new ∝ pi_ref exp(A / beta)``, fitted by advantage-weighted
  maximum likelihood (weights normalised to mean 1, capped at ``--max-weight``).

Several devices (``ppo``, ``group``, ``pi``): launched with ``torchrun --nproc_per_node K`` each
rank steps its own ``num_envs / K`` environments and gradients are averaged (gloo on CPU, nccl
on GPU); losses are normalised by global counts, so an update equals the single-process
update on the same global batch.

Example: ``python train/ppo_recursion.py`` (the main job: CPU, under 10 minutes), or on
generated easy puzzles with labels: ``python train/ppo_recursion.py --puzzles "" --reward-mode
solution --init-from "" --objective ppo --no-self-training --test-set ""``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from agents.recursion_policy import RecursionPolicy
from train import cli, expert_iteration
from train.distributed import Dist
from train.expert_iteration import ExpertSettings
from train.held_out import Split
from train.rl import loop
from train.rl.advantages import AdvantageSettings, advantages
from train.rl.common import ControlSettings, EnvSettings, RLArgs, StartSettings
from train.rl.rollout import rollout, rollout_stats
from train.rl.start import make_train_env
from train.rl.update import UpdateSettings, update
from trm.config import TrainConfig
from trm.model import TRM

# settings that define the data or the objective: a --resume must keep them
FIXED_ON_RESUME = ("seed", "difficulty", "puzzles", "pool_size", "eval_size", "objective", "reward_mode", "step_cost")
FIXED_ON_RESUME += ("solve_bonus", "num_envs", "lr", "head_lr", "terminate_on_solve", "gamma", "gae_lambda")
FIXED_ON_RESUME += ("credit", "policy_dist", "temperature", "group_size", "verifier_cell_weight", "ema_decay", "init_from")


MAIN_JOB_PASSES = 200_000  # the main job's RL budget in training forward passes (and each control's, beside RL)


@dataclass
class Args(RLArgs):
    minutes: float = 30.0  # RL wall-clock budget: a guard (the main job stops on --forward-passes)
    forward_passes: int = MAIN_JOB_PASSES  # stop once the training forward passes (counted by the model) reach this (0: no limit)
    puzzles: str = "sudoku17"  # puzzle file or real collection; with --reward-mode verifier its solutions are never read by RL
    lr: float = 1e-4  # learning rate of the network
    env: EnvSettings = field(default_factory=lambda: EnvSettings(reward_mode="verifier"))
    start: StartSettings = field(default_factory=lambda: StartSettings(init_from="shipped:dis_medium"))
    control: ControlSettings = field(
        default_factory=lambda: ControlSettings(parallel_controls=True, self_training=True, test_set="sudoku17:test"))
    head_lr: float = 1e-2  # learning rate of the halting (Q) and value heads, which DIS never trained
    adam_eps: float = 1e-5  # Adam's epsilon
    beta1: float = 0.9  # Adam's first-moment decay
    beta2: float = 0.999  # Adam's second-moment decay
    update: UpdateSettings = field(default_factory=lambda: UpdateSettings(objective="expert"))
    advantage: AdvantageSettings = field(default_factory=AdvantageSettings)
    expert: ExpertSettings = field(default_factory=lambda: ExpertSettings(expert_search=8, replay_batches=4))

    def validate(self) -> None:
        super().validate()
        for name in ("head_lr", "adam_eps"):
            if not (0 <= getattr(self, name) < float("inf")):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {getattr(self, name)}")
        if self.expert.greedy_first and self.update.objective != "expert":
            raise ValueError("--greedy-first belongs to --objective expert (it picks what the search labels)")
        if self.update.objective == "expert":
            self.expert.check(self.env)
            if not self.expert.expert_search:
                raise ValueError("--objective expert searches: --expert-search must be at least 1")
        k, n = self.env.group_size, self.env.num_envs
        if self.update.grouped and (k < 2 or n % k):
            raise ValueError(f"--group-size must be at least 2 and divide --num-envs {n}, got {k}")
        if self.advantage.credit == "cell" and self.update.objective == "pi":
            raise ValueError("--credit cell is implemented for --objective ppo and group")
        if self.advantage.credit == "shared" and self.update.objective != "group":
            raise ValueError("--credit shared is the group objective's: use it with --objective group")


def make_optimizer(policy: RecursionPolicy, args: Args) -> torch.optim.Optimizer:
    """Adam with two groups: the body at ``--lr``; the halting scalars and value heads at ``--head-lr``.

    With the confidence feature on, the pooled halting weights ``w`` learn at ``--lr`` with the body.
    """
    model = policy.trm
    heads = [model.q_head.bias, *policy.value.parameters(), *policy.cell_value.parameters()]
    heads += [model.q_confidence] if model.q_confidence is not None else [model.q_head.weight]
    head_ids = {id(p) for p in heads}
    body = [p for p in policy.parameters() if id(p) not in head_ids]
    groups = [{"params": body, "lr": args.lr}, {"params": heads, "lr": args.head_lr}]
    return torch.optim.Adam(groups, eps=args.adam_eps, betas=(args.beta1, args.beta2))


class PPORun(loop.RLRun):
    """An RL run under ``ppo``, ``group`` or ``pi``: a rollout, advantages, then the clipped or weighted update."""

    kind = "ppo_recursion"

    @classmethod
    def check_world(cls, args: Args, world: int) -> None:
        k = args.env.group_size if args.update.grouped else 1
        if args.env.num_envs % (world * k):
            raise ValueError(f"--num-envs {args.env.num_envs} must divide evenly over {world} processes"
                             + (f" in groups of --group-size {k}" if k > 1 else ""))

    def __init__(self, args: Args, ddp: Dist, device: str, model: TRM, data: Split, training: TrainConfig | None) -> None:
        super().__init__(args, ddp, device, model, data, training)
        self.args: Args = args
        self.opt = make_optimizer(self.policy, args)
        self.venv = make_train_env(args.env, data.train, self.cfg.n_sup, ddp, device, args.seed, args.update.grouped,
                                   args.advantage.credit == "cell")

    @property
    def objective(self) -> str:
        return self.args.update.objective

    def iteration(self) -> dict[str, float]:
        a, ddp = self.args, self.ddp
        self.reset_counters()
        buf = rollout(self.policy, self.venv, a.policy)
        adv = advantages(buf, a.advantage, ddp, a.env.group_size if a.update.grouped else 0)
        stats = update(self.trainer, self.opt, buf, adv, a.update, a.policy, ddp, self.mb_gen, self.rows)
        if self.ema is not None:
            self.ema.update(self.policy.trm)
        n_steps = int(ddp.sum(buf["valid"].sum().float()).item())
        stats.update(rollout_stats(buf, n_steps, a.env.num_envs, ddp))
        self.count(n_steps, stats["epochs"] * a.update.minibatches)
        return stats


def train(args: Args) -> dict[str, Any]:
    """Start, train and measure an RL run as ``args`` say; returns rank 0's metrics (``metrics.json``).

    ``--objective expert`` runs :class:`train.expert_iteration.ExpertRun`; the others :class:`PPORun`.
    """
    if args.update.objective == "expert":
        fixed = FIXED_ON_RESUME + tuple(k for k in expert_iteration.FIXED_ON_RESUME if k not in FIXED_ON_RESUME)
        return loop.train(args, expert_iteration.ExpertRun, fixed, self_training=expert_iteration.self_training_job)
    return loop.train(args, PPORun, FIXED_ON_RESUME, self_training=expert_iteration.self_training_job)


def parse_args(argv: list[str] | None = None) -> Args:
    """``Args`` from the command line (default ``sys.argv[1:]``); a bad option exits 2 with one line."""
    return cli.parse(Args, argv, description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line and :func:`train`."""
    return train(parse_args(argv))


if __name__ == "__main__":
    loop.run_script(main)
