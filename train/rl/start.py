"""Where an RL run starts, and the environment it trains in.

With no ``--init-from`` a run first warms the policy with a short DIS run with labels
(:func:`warm_start`): on its own training pool and held-out split, or, with ``--reward-mode
verifier``, on the generated ``--difficulty`` tier, never on RL's own puzzles, whose solutions
a label-free run does not read; ``--warm-minutes 0`` with the verifier starts from scratch. A start that
never trained its Q head gets a halting logit ``q = b + u c`` (``c`` the best digit's
log-probability in the least sure cell, ``TRMConfig.halt_confidence``): with a pooled
latent alone the halt head learned only "never halt" within a CPU budget.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from envs.puzzle_pool import PuzzlePool
from envs.vector_env import LatentReasoningSudokuVectorEnv
from train import supervised
from train.distributed import Dist
from train.rl.common import INIT_KINDS, RL_KINDS, EnvSettings, RLArgs, StartSettings
from trm.checkpoint import load_checkpoint, model_weights
from trm.config import TRMConfig
from trm.model import TRM


def warm_start(args: RLArgs, device: str, exclude: np.ndarray | None = None) -> Path:
    """Train DIS for ``--warm-minutes`` on this run's training pool and held-out split (with the verifier: on
    the generated ``--difficulty`` tier instead); returns its checkpoint.

    ``exclude``: grid hashes its pool must not hold (the RL run's held-out set)."""
    labelled = args.puzzles if args.env.reward_mode == "solution" else ""  # a label-free run's puzzles are never read
    warm = Path(args.out) / "warm_dis"
    a = supervised.default_args(
        "dis", out=str(warm), seed=args.seed, device=device, minutes=args.start.warm_minutes, difficulty=args.difficulty,
        pool_size=args.pool_size, eval_size=args.eval_size, eval_limit=args.start.warm_eval_size, puzzles=labelled,
        overwrite=True,  # the warm start belongs to this fresh RL run: an older one in its folder is redone
    )
    if args.start.hidden:
        a.model = replace(a.model, hidden=args.start.hidden)
    print(f"warm start: DIS for {args.start.warm_minutes} min -> {warm}", flush=True)
    return Path(supervised.train(a, exclude=exclude)["checkpoint"])


def load_init(start: StartSettings, path: Path) -> tuple[TRM, str]:
    """The policy's TRM from a dis / trm / RL checkpoint, with the halting feature added when new,
    and a description of the start: the path, the checkpoint's kind and the source it was trained on."""
    ck = load_checkpoint(path, kind=INIT_KINDS)
    trained = ck.get("args") or {}
    source = f"checkpoint {path} ({ck['kind']}, trained on {trained.get('puzzles') or trained.get('difficulty', '?')})"
    cfg = TRMConfig.from_dict(ck["config"])
    if start.hidden and start.hidden != cfg.hidden:
        raise ValueError(f"--init-from: {path} has hidden={cfg.hidden}, but --hidden {start.hidden} was asked for")
    adds_feature = not cfg.halt_confidence and not start.pooled_halt
    if adds_feature:
        cfg = replace(cfg, halt_confidence=True)
    model = TRM(cfg)
    missing, unexpected = model.load_state_dict(model_weights(ck), strict=False)
    if unexpected or set(missing) - ({"q_confidence"} if adds_feature else set()):
        raise ValueError(f"--init-from: {path} does not fit the model: missing {missing}, unexpected {unexpected}")
    if ck["kind"] not in RL_KINDS and not cfg.halting:
        # the Q head was never trained: q = b + u c (+ w . mean_L y, w = 0 after DIS) starts with
        # halting probability sigmoid(b) on boards whose every cell holds a confident digit
        # (c ~ 0) and about none elsewhere (c << 0); RL then moves b, u and w
        with torch.no_grad():
            model.q_head.bias.fill_(start.halt_init_bias)
            if model.q_confidence is not None:
                model.q_confidence.fill_(start.halt_init_weight)
    return model, source


def initial_model(args: RLArgs, ddp: Dist, device: str, exclude: np.ndarray | None = None) -> tuple[TRM, str, Path | None]:
    """The starting model, a description of it, and the checkpoint it came from (None from scratch).

    ``exclude``: grid hashes a warm start must not train on (the run's held-out set).

    ``--init-from``; else with the verifier and ``--warm-minutes 0`` a fresh model; else a DIS warm
    start (:func:`warm_start`) that rank 0 trains and every rank then reads.
    """
    start = args.start
    if start.init_from:
        model, source = load_init(start, Path(start.init_from))
        return model.to(device), source, Path(start.init_from)
    if args.env.reward_mode == "verifier" and not start.warm_minutes > 0:
        cfg = TRMConfig.dis(halt_confidence=not start.pooled_halt, **({"hidden": start.hidden} if start.hidden else {}))
        torch.manual_seed(args.seed)
        return TRM(cfg).to(device), "scratch (label-free: no supervised warm start)", None
    warm = Path(args.out) / "warm_dis" / "checkpoint.pt"
    if ddp.rank == 0:
        warm = warm_start(args, device, exclude)
    if ddp.world > 1:
        dist.barrier()
    return load_init(start, warm)[0].to(device), f"DIS warm start ({start.warm_minutes} min, {warm.parent})", warm


def make_train_env(
    env: EnvSettings, pool: PuzzlePool, n_sup: int, ddp: Dist, device: str, seed: int, grouped: bool, cell_credit: bool = False
) -> LatentReasoningSudokuVectorEnv:
    """This process's share of the rollout environments, augmented, in groups of ``group_size`` when ``grouped``;
    ``cell_credit``: a group shares one symmetry, so per-cell baselines compare the same cell."""
    venv = LatentReasoningSudokuVectorEnv(
        num_envs=env.num_envs // ddp.world,
        pool=pool,
        augment=True,
        max_steps=n_sup,
        reward_mode=env.reward_mode,
        step_cost=env.step_cost,
        solve_bonus=env.solve_bonus,
        terminate_on_solve=env.terminate_on_solve,
        device=device,
        group_size=env.group_size if grouped else 1,
        group_shares_symmetry=cell_credit,
        cell_weight=env.verifier_cell_weight if env.reward_mode == "verifier" else 1.0,
    )
    venv.reset(seed=seed * 1000 + ddp.rank)
    return venv
