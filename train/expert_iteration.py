"""Expert iteration over recursion steps, with the rules as the expert: verified answers become DIS targets.

Each round the policy (``agents/recursion_policy.py``) plays ``--num-envs`` episodes in
groups of ``--group-size`` per puzzle, each episode under its own symmetry of the puzzle;
every answer the rules verify (an episode that ended solved, or a step's greedy readout
that passed :func:`envs.rules.verified`) joins a replay of found solutions
(``--replay-size``, oldest dropped). Then the model takes ``--replay-batches`` DIS batches (deep
supervision towards DIS's intermediate targets, :func:`train.deep_supervision.train_batch`) on
pairs drawn from that replay, each under a random symmetry, at a constant ``--lr``. No
label is read: the targets are the policy's own verified solutions (one process only).

With ``--expert-search K`` the expert is test-time search instead of the rollout's episodes:
each round :class:`agents.search_agent.SearchAgent` (``K`` sampled trajectories per puzzle,
each under its own symmetry, the rules as verifier) runs on ``--num-envs / K`` training
puzzles no round has solved yet, and what it verifies joins the replay. With
``--greedy-first`` a round first decodes ``--num-envs`` such puzzles greedily and searches the
first ``--num-envs / K`` of those greedy decoding left unverified. The model it
searches with is the one being trained (its weight average), so what it finds grows as
it learns. Like DIS, the run keeps an exponential moving average of the weights
(``E <- d E + (1 - d) theta`` after every optimizer step; ``--ema-decay``, -1: the start's
``ema_decay``), and greedy decoding and the search read it.

The run folder, the start (``--init-from``, a DIS warm start with labels on generated
puzzles, or scratch with ``--reward-mode verifier --warm-minutes 0``) and the closing table
with its controls are those of ``train/ppo_recursion.py`` (``train/rl/loop.py``), whose main
job runs this algorithm (``--objective expert``). :func:`self_training_job` is the
self-training control (c2) both scripts run with ``--self-training``.

Example: ``python train/expert_iteration.py --init-from runs/dis/checkpoint.pt --reward-mode verifier --expert-search 8``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.runner import run_episodes
from agents.search_agent import SearchAgent
from envs import augmentation
from envs.rules import verified
from train import cli
from train.deep_supervision import make_optimizer, train_batch
from train.distributed import Dist
from train.held_out import Split
from train.rl import loop
from train.rl.common import ControlSettings, EnvSettings, RLArgs
from train.rl.controls import ControlJob
from train.rl.rollout import rollout, rollout_stats
from train.rl.start import make_train_env
from trm.config import TrainConfig
from trm.model import TRM

FIXED_ON_RESUME = ("seed", "difficulty", "puzzles", "pool_size", "eval_size", "reward_mode", "step_cost", "solve_bonus")
FIXED_ON_RESUME += ("num_envs", "lr", "terminate_on_solve", "policy_dist", "temperature", "group_size", "replay_size")
FIXED_ON_RESUME += ("verifier_cell_weight", "expert_search", "ema_decay", "init_from", "greedy_first")


@dataclass
class ExpertSettings:
    """What the expert labels and how the model fits it."""

    replay_size: int = 4096  # the most verified (puzzle, solution) pairs kept (oldest dropped)
    expert_search: int = 0  # K of a verified search labelling --num-envs / K puzzles a round (0: the rollout's episodes)
    replay_batches: int = 2  # DIS batches on the replay after each round
    greedy_first: bool = False  # with --expert-search: decode --num-envs puzzles greedily first, search the failures

    def __post_init__(self) -> None:
        if self.replay_size < 1 or self.replay_batches < 1 or self.expert_search < 0:
            raise ValueError(f"--replay-size and --replay-batches must be at least 1 and --expert-search >= 0, got "
                             f"{self.replay_size}, {self.replay_batches}, {self.expert_search}")

    def check(self, env: EnvSettings) -> None:
        """Refuse a search K or rollout group that does not divide ``--num-envs``."""
        k, n = self.expert_search, env.num_envs
        if k and n % k:
            raise ValueError(f"--expert-search {k} must be a positive divisor of --num-envs {n}")
        if self.greedy_first and k < 2:
            raise ValueError(f"--greedy-first needs a search to hand the failures to (--expert-search >= 2), got {k}")
        if env.group_size < 2 or n % env.group_size:
            raise ValueError(f"--group-size must be at least 2 and divide --num-envs {n}, got {env.group_size}")


@dataclass
class Args(RLArgs):
    out: str = "runs/expert_iteration"  # run folder: checkpoint.pt, tb/, run.json, metrics.json (and warm_dis/)
    expert: ExpertSettings = field(default_factory=ExpertSettings)

    def validate(self) -> None:
        super().validate()
        self.expert.check(self.env)


def replay_config(start: TrainConfig | None, lr: float) -> TrainConfig:
    """The training settings of the replay batches: the start's (DIS's defaults from scratch), at a constant
    ``lr`` with no warm-up."""
    return replace(start or TrainConfig.dis(), lr=lr, lr_min_ratio=1.0, warmup_steps=1)


class ExpertRun(loop.RLRun):
    """Expert iteration: search or roll out, keep what the rules verify, fit it by DIS batches."""

    kind = "expert_iteration"

    @classmethod
    def check_world(cls, args: Args, world: int) -> None:
        if world > 1:
            raise ValueError("expert iteration runs in one process (each would keep its own replay)")

    def __init__(self, args: Args, ddp: Dist, device: str, model: TRM, data: Split, training: TrainConfig | None) -> None:
        self.expert_cfg = replay_config(training, args.lr)
        super().__init__(args, ddp, device, model, data, training, ema_default=self.expert_cfg.ema_decay)
        self.args: Args = args
        self.opt = make_optimizer(self.expert_cfg, self.policy.trm)
        self.replay = torch.zeros(0, 2, 81, dtype=torch.long, device=device)  # (pairs, puzzle / solution, 81)
        self.pool_solved = np.zeros(len(data.train), dtype=bool)  # --expert-search: training puzzles already verified
        self.target_gen = torch.Generator(device=device).manual_seed(args.seed)  # DIS's intermediate targets
        self.venv = make_train_env(args.env, data.train, self.cfg.n_sup, ddp, device, args.seed, True)

    @property
    def objective(self) -> str:
        return "expert"

    def control_lr(self) -> float | None:
        return self.args.lr  # the rate of its DIS batches on the replay

    def extra_payload(self) -> dict[str, Any]:
        return {"replay": self.replay, "pool_solved": torch.as_tensor(self.pool_solved),
                "target_generator": self.target_gen.get_state()}

    def restore_extra(self, ck: dict[str, Any]) -> None:
        self.replay = ck["replay"].to(self.device)
        self.pool_solved = ck["pool_solved"].numpy().copy()
        self.target_gen.set_state(ck["target_generator"])

    def iteration(self) -> dict[str, float]:
        """One search round (``--expert-search``) or rollout, and the DIS batches on the replay."""
        a = self.args
        self.reset_counters()
        if a.expert.expert_search:
            stats, n_steps = self.search_round()
        else:
            buf = rollout(self.policy, self.venv, a.policy)
            stats = self.fit_replay(torch.stack([buf["puzzle"], buf["verified_cells"]], 1)[buf["verified"]])
            n_steps = int(buf["valid"].sum())
            stats.update(rollout_stats(buf, n_steps, a.env.num_envs, self.ddp))
        self.count(n_steps, stats["optimizer_steps"])
        return stats

    def search_round(self) -> tuple[dict[str, float], int]:
        """Label training puzzles by verified search with the current model, then fit the replay.

        The puzzles are drawn (``minibatch_generator``) from those of the pool no round has
        solved yet (all of them once every one is solved): ``--num-envs / K`` of them, searched
        at ``K``. With ``--greedy-first`` the round draws ``--num-envs`` puzzles, decodes each
        greedily (``K = 1``, the self-training control's round) and searches at ``K`` the first
        ``--num-envs / K`` that greedy decoding left unverified, so a round labels what greedy
        decoding finds and what only the search finds. A pair joins the replay only if
        :func:`envs.rules.verified` passes it: the search reads no label. Returns the
        statistics (``greedy_verified`` and ``search_verified``: each stage's share of the puzzles it
        ran on) and the env steps the round took (every trajectory of a puzzle counted once per
        step, as the runner counts a puzzle's steps).
        """
        k, pool, n, first = (self.args.expert.expert_search, self.data.train.puzzles, self.args.env.num_envs,
                             self.args.expert.greedy_first)
        todo = np.flatnonzero(~self.pool_solved) if not self.pool_solved.all() else np.arange(len(pool))
        pick = todo[torch.randperm(len(todo), generator=self.mb_gen)[: n if first else n // k].numpy()]
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.mb_gen))
        stages = {}
        if first:  # greedy decoding (K = 1) of every drawn puzzle; the search gets the first n / K it left unverified
            stages["greedy"] = self.label(pick, 1, seed)
            searched = pick[~stages["greedy"][0]][: n // k]
        else:
            searched = pick
        if len(searched):
            stages["search"] = self.label(searched, k, seed)
        self.policy.trm.train()
        new = torch.cat([pairs for _, pairs, _ in stages.values()])
        stats = self.fit_replay(new)
        rate = len(new) / len(pick)
        drawn = stages["greedy" if first else "search"][2]  # the episodes of every drawn puzzle
        stats.update({"solve_rate": rate, "verified": rate, "mean_steps": float(drawn["steps"].mean()),
                      "pool_solved": float(self.pool_solved.mean())})
        for name, (ok, _, res) in stages.items():  # each stage's own share verified and passes per puzzle it ran on
            stats[f"{name}_verified"] = float(ok.mean())
            stats[f"{name}_passes_per_puzzle"] = float(res["forward_passes"].mean())
        steps = sum(int(res["steps"].sum()) * (1 if name == "greedy" else k) for name, (_, _, res) in stages.items())
        return stats, steps

    def label(self, idx: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, torch.Tensor, dict[str, Any]]:
        """Search pool puzzles ``idx`` at ``k`` (``k = 1``: greedy decoding) with the greedy weights and keep what
        :func:`envs.rules.verified` passes: returns the verified mask ``(len(idx),)``, the verified pairs
        ``(m, 2, 81)`` and the runner's result. Puzzles verified are marked solved in the pool."""
        pool = self.data.train.puzzles
        agent = SearchAgent(self.greedy_model(), k=k, temperature=self.args.policy.temperature, seed=seed)
        res = run_episodes(agent, pool[idx], None, device=self.device, max_steps=self.cfg.n_sup)
        puzzles = torch.as_tensor(pool[idx], dtype=torch.long, device=self.device)
        answers = torch.as_tensor(res["answers"], dtype=torch.long, device=self.device)
        ok = verified(puzzles, answers)
        mask = ok.cpu().numpy()
        self.pool_solved[idx[mask]] = True
        return mask, torch.stack([puzzles, answers], 1)[ok], res

    def fit_replay(self, found: torch.Tensor) -> dict[str, float]:
        """Add verified pairs ``found (m, 2, 81)`` to the replay, then take ``--replay-batches`` DIS batches from it.

        A pair is ``(puzzle, answer)`` in the view it was found in; the answer passed the rules,
        so for a puzzle with one solution it is that solution, found without reading any.
        Batches of the start's batch size are drawn uniformly from the replay with
        ``minibatch_generator`` and each pair is shown under a random symmetry (as supervised
        training augments), so a small replay is not memorised in one orientation.
        """
        self.replay = torch.cat([self.replay, found])[-self.args.expert.replay_size :]
        stats = {"approx_kl": 0.0, "epochs": 0, "loss": 0.0, "replay": float(len(self.replay)), "new_pairs": float(len(found)),
                 "optimizer_steps": 0}
        if not len(self.replay):
            return stats
        b = min(self.expert_cfg.batch_size, len(self.replay))
        for _ in range(self.args.expert.replay_batches):
            pick = torch.randint(len(self.replay), (b,), generator=self.mb_gen).to(self.device)
            sym = augmentation.random_symmetry(b, self.target_gen, self.device)
            p, sol = augmentation.apply(*sym, self.replay[pick, 0], self.replay[pick, 1])
            logs = train_batch(self.policy.trm, self.ema, self.opt, self.expert_cfg, p, sol, self.target_gen, 0, progress=0.0)
            stats["loss"] += float(np.mean(logs["loss"])) / self.args.expert.replay_batches
            stats["epochs"] += 1
            stats["optimizer_steps"] += logs["opt_step"]
        return stats


def self_training_args(args: RLArgs, init: Path, passes: int, device: str) -> Args:
    """The self-training control (c2) of an RL run with options ``args``, in ``OUT/self_training``.

    Like for like with expert iteration: the same start ``init``, pool, held-out split, training
    seed, constant rate, weight average, replay and batches per round, for ``passes`` training
    forward passes (counted by the model); only the expert differs: greedy decoding (``K = 1``),
    so only the greedy answers the rules verify join the replay. It reads no label.
    """
    expert = replace(getattr(args, "expert", None) or ExpertSettings(), expert_search=1, greedy_first=False)
    return Args(
        out=str(Path(args.out) / "self_training"), seed=args.seed, device=device, difficulty=args.difficulty,
        puzzles=args.puzzles, pool_size=args.pool_size, eval_size=args.eval_size, lr=args.lr, ema_decay=args.ema_decay,
        minutes=24 * 60.0, forward_passes=max(1, passes), overwrite=True,  # the budget is passes; the clock guards a runaway
        env=replace(args.env, reward_mode="verifier"), start=replace(args.start, init_from=str(init)), policy=args.policy,
        control=ControlSettings(control_dis=False), expert=expert,
    )


def self_training_job(args: RLArgs, init: Path, passes: int, device: str) -> ControlJob:
    """The self-training control (c2) of an RL run with options ``args`` as a job (:func:`self_training_args`, run
    by :func:`train`): ``train/rl/loop.py`` trains it after RL, or beside it with ``--parallel-controls``."""
    return ControlJob("self", self_training_args(args, init, passes, device), train)


def train(args: Args) -> dict[str, Any]:
    """Start, run expert iteration and measure as ``args`` say; returns the metrics (``metrics.json``)."""
    return loop.train(args, ExpertRun, FIXED_ON_RESUME, self_training=self_training_job)


def parse_args(argv: list[str] | None = None) -> Args:
    """``Args`` from the command line (default ``sys.argv[1:]``); a bad option exits 2 with one line."""
    return cli.parse(Args, argv, description=__doc__)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line and :func:`train`."""
    return train(parse_args(argv))


if __name__ == "__main__":
    loop.run_script(main)
