"""RL over recursion steps: the TRM policy acts in LatentReasoning-Sudoku-v0, one deep recursion per step.

The main job. With no ``--init-from`` it first warms the policy with a short DIS run
(``train/dis.py``), then trains it with RL in the batched environment, and ends by
printing solve rate, forward passes per puzzle and dead-compute share before and
after RL (greedy decoding, halting when the Q head says so).

Policy. The state carries the latents ``(y, z)`` across steps, detached as in deep
supervision, and the rollout stores each step's inputs, so the log-probability of an
action can be recomputed later from the stored latents. One step is
``model.step(x, y, z, s)``; its conditional readout gives a factorised categorical
over the 10 values of every blank cell, its Q head a Bernoulli halt flag, and a
value head ``V = v(mean_L y')`` reads the new answer state::

    log pi(a | s) = sum_{blank cells i} log softmax(l_c)_i[a_i] + log Bern(halt; sigmoid(q))

Advantages are GAE over recursion steps (``gamma``, ``lambda``), each rollout being one
episode per environment. The default ``lambda = 1`` (returns minus ``V``) is unbiased:
the value head reads a pooled latent that cannot tell a solved board from an almost
solved one, and with ``lambda = 0.95`` its bias on later steps (about +0.45 where the
true value is -0.04) outweighed the step costs a halt saves, so halting was unlearned.

As at inference, an episode ends only when the policy halts or
after ``n_sup`` steps (``--terminate-on-solve`` ends it on a solved board instead). The
solve bonus is a potential difference (paid when the board becomes solved, taken back
if it breaks), so every step past a solved board earns ``-step_cost``: halting there is
what the step cost teaches. The halt and value heads, which DIS never trained, learn at
``--head-lr``; the rest of the network at ``--lr``. Unless ``--pooled-halt``, the halt
logit also reads ``c``, the best digit's log-probability in the least sure cell
(``TRMConfig.halt_confidence``): with a pooled latent alone the halt head learned only
"never halt" within a CPU budget (a solved and an almost solved board look alike to it).

Objectives (``--objective``):

* ``ppo``: clipped ratio ``min(r A, clip(r, 1 - eps, 1 + eps) A)``, entropy bonus, value
  loss; approximate KL ``E[(r - 1) - log r]`` monitored, epochs stop early above
  ``--target-kl`` and the run stops (keeping the last checkpoint) above ``--abort-kl``;
* ``pi``: policy improvement ``pi_new ∝ pi_ref exp(A / beta)`` (CFGRL-style), fitted by
  advantage-weighted maximum likelihood: ``-E[w log pi(a | s)]`` with
  ``w = exp(A / beta)`` (normalised to mean 1, capped at ``--max-weight``); the reference
  ``pi_ref`` is the policy's readout that sampled the rollout.

Several devices: launched with ``torchrun --nproc_per_node K`` each rank steps its own
``num_envs / K`` environments and gradients are averaged (gloo on CPU, nccl on GPU);
losses are normalised by global counts, so an update equals the single-process
update on the same global batch.

Example: ``python train/ppo_recursion.py`` (CPU default, a few minutes), or
``python train/ppo_recursion.py --init-from runs/dis/checkpoint.pt --step-cost 0.02``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep train/ from shadowing the top-level packages (and stdlib's dis)

import argparse
import math
import os
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from agents.runner import run_episodes, summarize  # noqa: E402
from agents.trm_agent import TRMAgent  # noqa: E402
from envs import sudoku  # noqa: E402
from envs.puzzle_pool import PuzzlePool, make_pool  # noqa: E402
from envs.vector_env import LatentReasoningSudokuVectorEnv  # noqa: E402
from train.run import (  # noqa: E402
    atomic_write_json,
    config_mismatch,
    load_checkpoint,
    rng_state,
    run_info,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from trm.config import TRMConfig  # noqa: E402
from trm.model import TRM  # noqa: E402

KIND = "ppo_recursion"
INIT_KINDS = ("dis", "trm", KIND)


@dataclass
class Args:
    out: str = "runs/ppo_recursion"
    seed: int = 0
    device: str = "cpu"
    minutes: float = 3.0  # RL wall-clock budget
    updates: int = 0  # stop after this many updates (0: only --minutes)
    resume: bool = False
    difficulty: str = "easy"
    puzzles: str = ""  # puzzle file; with --reward-mode verifier its solutions are never read
    pool_size: int = 2048
    eval_size: int = 256
    init_from: str = ""  # a dis / trm / ppo_recursion checkpoint; empty: warm start with DIS
    warm_minutes: float = 3.0  # the DIS warm start's budget
    hidden: int = 0  # policy width for the warm start (0: DIS default); must match --init-from if given
    objective: str = "ppo"  # ppo | pi
    reward_mode: str = "solution"  # solution | verifier
    step_cost: float = 0.02
    solve_bonus: float = 1.0
    num_envs: int = 128
    epochs: int = 2
    minibatches: int = 4
    lr: float = 5e-5
    head_lr: float = 1e-2  # learning rate of the halting (Q) and value heads, which DIS never trained
    clip: float = 0.2
    ent_coef: float = 1e-3
    vf_coef: float = 0.5
    gamma: float = 1.0
    gae_lambda: float = 1.0  # 1: Monte Carlo returns minus V (see the module docstring)
    target_kl: float = 0.05
    abort_kl: float = 2.0
    beta: float = 0.5  # temperature of the pi objective
    max_weight: float = 20.0
    halt_init_bias: float = 0.0  # halting logit bias b at RL start when the Q head was never trained
    halt_init_weight: float = 10.0  # weight u of the confidence feature at RL start (when it is new)
    terminate_on_solve: bool = False  # end an episode when solved (default: only the halt action or n_sup ends it)
    pooled_halt: bool = False  # halting head reads only mean_L y (TRM's); start it with --halt-init-bias -2
    checkpoint_every: float = 1.0  # minutes


def parse_args(argv: list[str] | None = None) -> Args:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            ap.add_argument(flag, action="store_true")
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            ap.add_argument(flag, type=kind, default=f.default, help=f"(default {f.default!r})")
    a = Args(**vars(ap.parse_args(argv)))
    if a.objective not in ("ppo", "pi"):
        ap.error(f"--objective must be ppo or pi, got {a.objective!r}")
    if a.reward_mode not in ("solution", "verifier"):
        ap.error(f"--reward-mode must be solution or verifier, got {a.reward_mode!r}")
    return a


class Diverged(RuntimeError):
    """The run produced a NaN loss or an exploding KL; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """All-reduce sum (a no-op on one process)."""
        if self.world > 1:
            x = x.clone()
            dist.all_reduce(x)
        return x


def init_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), world)


# ----------------------------------------------------------------------------- policy


class RecursionPolicy(nn.Module):
    """The TRM plus a value head; ``forward`` is one recursion step with its distributions."""

    def __init__(self, model: TRM) -> None:
        super().__init__()
        self.trm = model
        self.value = nn.Linear(model.cfg.hidden, 1)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def forward(
        self, tokens: torch.Tensor, y: torch.Tensor, z: torch.Tensor, step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(cell logits (B, 81, 10), halt logit (B,), value (B,), y', z')`` for one step."""
        out = self.trm.step(tokens, y, z, step=step if self.trm.cfg.step_embedding else None)
        return out.logits.float(), out.q.float(), self.value(out.y.mean(1)).squeeze(-1), out.y, out.z


def log_prob_entropy(
    logits: torch.Tensor, q: torch.Tensor, cells: torch.Tensor, halt: torch.Tensor, blank: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log pi(a | s)`` and the policy entropy per sample (blank cells plus the halt flag)."""
    logp_all = torch.log_softmax(logits, -1)
    cell_logp = logp_all.gather(-1, cells[..., None]).squeeze(-1)
    cell_ent = -(logp_all.exp() * logp_all).sum(-1)
    halt_logp = -F.binary_cross_entropy_with_logits(q, halt.float(), reduction="none")
    p = torch.sigmoid(q)
    halt_ent = -(p * F.logsigmoid(q) + (1 - p) * F.logsigmoid(-q))
    bl = blank.float()
    return (cell_logp * bl).sum(-1) + halt_logp, (cell_ent * bl).sum(-1) / bl.sum(-1).clamp(min=1) + halt_ent


# ----------------------------------------------------------------------------- rollout


@torch.no_grad()
def rollout(policy: RecursionPolicy, venv: LatentReasoningSudokuVectorEnv) -> dict[str, torch.Tensor]:
    """One episode per environment; the network runs only on the episodes still going.

    Returns tensors indexed ``[t, env]`` (``t < n_sup``): inputs ``tokens``, ``y``, ``z``,
    ``blank``, actions ``cells``/``halt``, ``logp``, ``value``, ``reward``, ``done``,
    ``valid`` (the episode was running at step t), and ``solved``/``steps`` per env.
    """
    cfg = policy.trm.cfg
    n, horizon, dev = venv.num_envs, cfg.n_sup, venv.device
    obs, _ = venv.reset()
    shape = (horizon, n)
    buf = {
        "tokens": torch.zeros(*shape, 81, dtype=torch.long, device=dev),
        "blank": torch.zeros(*shape, 81, dtype=torch.bool, device=dev),
        "y": torch.zeros(*shape, 81, cfg.hidden, device=dev),
        "z": torch.zeros(*shape, 81, cfg.hidden, device=dev),
        "cells": torch.zeros(*shape, 81, dtype=torch.long, device=dev),
        "halt": torch.zeros(*shape, dtype=torch.long, device=dev),
        "logp": torch.zeros(*shape, device=dev),
        "value": torch.zeros(*shape, device=dev),
        "reward": torch.zeros(*shape, device=dev),
        "done": torch.zeros(*shape, dtype=torch.bool, device=dev),
        "valid": torch.zeros(*shape, dtype=torch.bool, device=dev),
    }
    y0, z0 = policy.trm.initial_state(n)
    y, z = y0.clone(), z0.clone()
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    solved = torch.zeros(n, dtype=torch.bool, device=dev)
    steps = torch.zeros(n, device=dev)
    for t in range(horizon):
        idx = alive.nonzero().squeeze(-1)
        tokens = obs["answer"] if cfg.input_mode == "previous_answer" else obs["puzzle"]
        step = torch.full((idx.numel(),), t + 1, device=dev)
        blank = obs["puzzle"][idx] == 0
        buf["tokens"][t, idx], buf["blank"][t, idx] = tokens[idx], blank
        buf["y"][t, idx], buf["z"][t, idx] = y[idx], z[idx]
        logits, q, value, y_new, z_new = policy(tokens[idx], y[idx], z[idx], step)
        cells = torch.distributions.Categorical(logits=logits).sample()
        halt = torch.bernoulli(torch.sigmoid(q)).long()
        logp, _ = log_prob_entropy(logits, q, cells, halt, blank)
        y[idx], z[idx] = y_new, z_new
        action = torch.zeros(n, 82, dtype=torch.long, device=dev)
        action[idx, :81], action[idx, 81] = cells, halt
        obs, reward, term, trunc, info = venv.step(action)
        done = (term | trunc) & alive
        buf["cells"][t, idx], buf["halt"][t, idx] = cells, halt
        buf["logp"][t, idx], buf["value"][t, idx] = logp, value
        buf["reward"][t], buf["done"][t], buf["valid"][t] = torch.where(alive, reward, 0), done, alive
        solved = torch.where(done, info["solved"], solved)
        steps += alive.float()
        alive &= ~done
        if not alive.any():
            break
    buf["solved"], buf["steps"] = solved, steps
    return buf


def gae(buf: dict[str, torch.Tensor], gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``[t, env]``; an episode's last step bootstraps from 0."""
    horizon = buf["reward"].shape[0]
    adv = torch.zeros_like(buf["reward"])
    next_adv = torch.zeros_like(buf["reward"][0])
    next_value = torch.zeros_like(next_adv)
    for t in reversed(range(horizon)):
        cont = (~buf["done"][t]).float()
        delta = buf["reward"][t] + gamma * next_value * cont - buf["value"][t]
        next_adv = torch.where(buf["valid"][t], delta + gamma * lam * cont * next_adv, 0)
        adv[t] = next_adv
        next_value = torch.where(buf["valid"][t], buf["value"][t], 0)
    return adv, adv + buf["value"]


# ----------------------------------------------------------------------------- update


def update(
    policy: nn.Module,
    opt: torch.optim.Optimizer,
    buf: dict[str, torch.Tensor],
    args: Args,
    ddp: Dist,
    generator: torch.Generator,
    rows: torch.Tensor | None = None,
) -> dict[str, float]:
    """PPO or policy-improvement epochs over one rollout; every loss is normalised by global counts.

    ``rows`` are the global indices of this process's environments (default
    ``0..N-1``); minibatches group environments by a permutation of the global
    indices drawn from ``generator`` (the same on every rank), so each minibatch is
    the same set of episodes whatever the number of processes.
    """
    adv, ret = gae(buf, args.gamma, args.gae_lambda)
    valid = buf["valid"]
    n_local = valid.shape[1]
    rows = torch.arange(n_local, device=valid.device) if rows is None else rows
    count = ddp.sum(valid.sum().float())
    mean = ddp.sum((adv * valid).sum()) / count
    std = (ddp.sum((((adv - mean) ** 2) * valid).sum()) / count).sqrt().clamp(min=1e-6)
    adv_n = (adv - mean) / std
    n_global = int(ddp.sum(torch.tensor(float(n_local))).item())
    stats = {"approx_kl": 0.0, "clip_frac": 0.0, "loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "epochs": 0}
    module = policy.module if hasattr(policy, "module") else policy
    for _ in range(args.epochs):
        perm_group = torch.empty(n_global, dtype=torch.long)
        perm_group[torch.randperm(n_global, generator=generator)] = torch.arange(n_global) % args.minibatches
        group = perm_group.to(valid.device)[rows]
        kl_sum = torch.zeros((), device=valid.device)
        for g in range(args.minibatches):
            mask = valid & (group == g)[None, :]
            t_idx, e_idx = mask.nonzero(as_tuple=True)
            n_mb = ddp.sum(mask.sum().float()).clamp(min=1)
            logits, q, value, _, _ = policy(
                buf["tokens"][t_idx, e_idx], buf["y"][t_idx, e_idx], buf["z"][t_idx, e_idx], (t_idx + 1).float()
            )
            logp, ent = log_prob_entropy(
                logits, q, buf["cells"][t_idx, e_idx], buf["halt"][t_idx, e_idx], buf["blank"][t_idx, e_idx]
            )
            log_ratio = logp - buf["logp"][t_idx, e_idx]
            ratio = log_ratio.exp()
            a = adv_n[t_idx, e_idx]
            if args.objective == "ppo":
                pg = -torch.min(ratio * a, ratio.clamp(1 - args.clip, 1 + args.clip) * a)
            else:
                raw = adv[t_idx, e_idx] / args.beta
                w = torch.exp(raw - raw.max().detach()) if raw.numel() else raw
                w = (w / (ddp.sum(w.sum()) / n_mb).clamp(min=1e-12)).clamp(max=args.max_weight).detach()
                pg = -w * logp
            v_loss = 0.5 * (value - ret[t_idx, e_idx]) ** 2
            per_sample = pg + args.vf_coef * v_loss - args.ent_coef * ent
            # sum over this rank / global count, times world: DDP's gradient average becomes the global mean
            loss = per_sample.sum() / n_mb * ddp.world
            if not torch.isfinite(loss):
                raise Diverged(f"loss became {loss.item()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                kl_sum += ((ratio - 1) - log_ratio).sum()
                stats["clip_frac"] += float(ddp.sum(((ratio - 1).abs() > args.clip).float().sum()) / count)
                stats["loss"] += float(ddp.sum(per_sample.sum().detach()) / count)
                stats["value_loss"] += float(ddp.sum(v_loss.sum().detach()) / count)
                stats["entropy"] += float(ddp.sum(ent.sum().detach()) / count)
        kl = float(ddp.sum(kl_sum) / count)
        stats["approx_kl"], stats["epochs"] = kl, stats["epochs"] + 1
        if not math.isfinite(kl) or kl > args.abort_kl:
            raise Diverged(f"approximate KL {kl:.3g} exceeds --abort-kl {args.abort_kl}; a lower --lr keeps updates smaller")
        if kl > args.target_kl:
            break
    return stats


# ----------------------------------------------------------------------------- main


def load_init(args: Args, device: str) -> tuple[TRM, str]:
    """The policy's TRM from ``--init-from``, or from a fresh DIS warm start."""
    if args.init_from:
        path = Path(args.init_from)
        if not path.is_file():
            raise FileNotFoundError(f"--init-from: checkpoint {path} does not exist")
        ck = load_checkpoint(path, kind=INIT_KINDS)
        cfg = TRMConfig.from_dict(ck["config"])
        if args.hidden and args.hidden != cfg.hidden:
            raise ValueError(f"--init-from: {path} has hidden={cfg.hidden}, but --hidden {args.hidden} was asked for")
        adds_feature = not cfg.halt_confidence and not args.pooled_halt
        if adds_feature:
            cfg = TRMConfig.from_dict({**cfg.to_dict(), "halt_confidence": True})
        model = TRM(cfg)
        missing, unexpected = model.load_state_dict(ck["ema"]["model"] if ck.get("ema") else ck["model"], strict=False)
        if unexpected or set(missing) - ({"q_confidence"} if adds_feature else set()):
            raise ValueError(f"--init-from: {path} does not fit the model: missing {missing}, unexpected {unexpected}")
        if ck["kind"] != KIND and not cfg.halting:
            # the Q head was never trained: q = b + u c (+ w . mean_L y, w = 0 after DIS) starts with
            # halting probability sigmoid(b) on boards whose every cell holds a confident digit
            # (c ~ 0) and about none elsewhere (c << 0); RL then moves b, u and w
            with torch.no_grad():
                model.q_head.bias.fill_(args.halt_init_bias)
                if model.q_confidence is not None:
                    model.q_confidence.fill_(args.halt_init_weight)
        return model.to(device), f"{ck['kind']} checkpoint {path}"
    from train.supervised import train as train_supervised

    warm = Path(args.out) / "warm_dis"
    argv = ["--out", str(warm), "--seed", str(args.seed), "--device", device, "--minutes", str(args.warm_minutes)]
    argv += ["--difficulty", args.difficulty, "--pool-size", str(args.pool_size), "--eval-size", "64"]
    argv += ["--hidden", str(args.hidden)] if args.hidden else []
    argv += ["--puzzles", args.puzzles] if args.puzzles else []
    print(f"warm start: DIS for {args.warm_minutes} min -> {warm}", flush=True)
    train_supervised("dis", argv)
    args.init_from = str(warm / "checkpoint.pt")
    model, _ = load_init(args, device)
    return model, f"DIS warm start ({args.warm_minutes} min, {warm})"


def held_out(args: Args) -> tuple[np.ndarray, np.ndarray | None, PuzzlePool]:
    """Training pool and held-out puzzles (the last ``eval_size`` of a file, or a fresh seed)."""
    need = args.reward_mode == "solution"
    if args.puzzles:
        pool = make_pool(None, args.puzzles, need_solutions=need, pool_size=0, pool_seed=0)
        k = len(pool) - args.eval_size
        if k < 1:
            raise ValueError(f"{args.puzzles} holds {len(pool)} puzzles, not more than --eval-size {args.eval_size}")
        sols = pool.solutions
        train = PuzzlePool(pool.puzzles[:k], None if sols is None else sols[:k], pool.source)
        return pool.puzzles[k:], None if sols is None else sols[k:], train
    p, s = sudoku.generate(args.pool_size, args.difficulty, seed=args.seed)
    ep, es = sudoku.generate(args.eval_size, args.difficulty, seed=args.seed + 1_000_003)
    return ep, es, PuzzlePool(p, s if need else None, f"generated:{args.difficulty}")


def measure(model: TRM, puzzles: np.ndarray, solutions: np.ndarray | None, device: str, halting: bool) -> dict[str, Any]:
    """Greedy decoding (argmax cells; with ``halting``, halt when ``q > 0``) on held-out puzzles."""
    model.reset_counter()
    return summarize(run_episodes(TRMAgent(model, halting=halting), puzzles, solutions, device=device, max_steps=model.cfg.n_sup))


def measure_sampled(
    policy: RecursionPolicy, puzzles: np.ndarray, solutions: np.ndarray | None, device: str, seed: int = 0
) -> dict[str, Any]:
    """The stochastic policy itself (sampled cells and halts, as in training) on held-out puzzles.

    Scored like training episodes (solution, or the verifier when ``solutions`` is None);
    forward passes are counted by the model. Sampling uses its own seeded RNG, so the
    training RNG stream is untouched.
    """
    pool = PuzzlePool(puzzles, solutions, "held-out")
    venv = LatentReasoningSudokuVectorEnv(
        num_envs=len(puzzles),
        pool=pool,
        order="sequential",
        max_steps=policy.trm.cfg.n_sup,
        reward_mode="solution" if solutions is not None else "verifier",
        terminate_on_solve=False,
        device=device,
    )
    venv.reset(seed=seed)
    policy.trm.reset_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        buf = rollout(policy, venv)
    return {
        "solve_rate": float(buf["solved"].float().mean()),
        "forward_passes_per_puzzle": policy.trm.net.sample_calls / len(puzzles),
        "mean_steps": float(buf["steps"].mean()),
    }


def evaluate_policy(
    policy: RecursionPolicy, puzzles: np.ndarray, solutions: np.ndarray | None, device: str, seed: int
) -> dict[str, dict[str, Any]]:
    """The before/after measurements: greedy with all steps, greedy with Q-head halting, sampled."""
    return {
        "halting": measure(policy.trm, puzzles, solutions, device, True),
        "fixed": measure(policy.trm, puzzles, solutions, device, False),
        "sampled": measure_sampled(policy, puzzles, solutions, device, seed),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    ddp = init_distributed(args.device)
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" and ddp.world > 1 else args.device
    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    seed_everything(args.seed + ddp.rank)
    if args.num_envs % ddp.world:
        raise ValueError(f"--num-envs {args.num_envs} must divide evenly over {ddp.world} processes")
    resumed = load_checkpoint(ckpt_path, kind=KIND) if args.resume else None
    eval_p, eval_s, train_pool = held_out(args)
    if resumed is not None:
        cfg = TRMConfig.from_dict(resumed["config"])
        model, source = TRM(cfg).to(device), f"resumed {ckpt_path}"
    else:
        # rank 0 loads (or warm-starts) first; the others then read the same checkpoint
        if ddp.rank == 0:
            model, source = load_init(args, device)
        if ddp.world > 1:
            dist.barrier()
            if ddp.rank != 0:
                args.init_from = args.init_from or str(out / "warm_dis" / "checkpoint.pt")
                model, source = load_init(args, device)
        cfg = model.cfg
    out.mkdir(parents=True, exist_ok=True)
    policy = RecursionPolicy(model).to(device)
    # the scalar halting parameters and the value head learn at --head-lr; the pooled halting
    # weights w at --lr with the body when the confidence feature is on
    heads = [model.q_head.bias, *policy.value.parameters()]
    heads += [model.q_confidence] if model.q_confidence is not None else [model.q_head.weight]
    head_ids = {id(p) for p in heads}
    body = [p for p in policy.parameters() if id(p) not in head_ids]
    opt = torch.optim.Adam([{"params": body, "lr": args.lr}, {"params": heads, "lr": args.head_lr}], eps=1e-5)
    state = {"update": 0, "env_steps": 0, "train_forward_passes": 0, "wall_seconds": 0.0}
    if resumed is not None:
        diff = config_mismatch(resumed["args"], {**vars(args), "resume": False, "minutes": resumed["args"]["minutes"]})
        keys = ("objective", "reward_mode", "step_cost", "num_envs", "lr", "head_lr", "solve_bonus", "terminate_on_solve")
        diff = [d for d in diff if d.split(":")[0] in keys]
        if diff:
            raise ValueError(f"--resume: {ckpt_path} was trained with other settings: " + "; ".join(diff))
        model.load_state_dict(resumed["model"])
        policy.value.load_state_dict(resumed["value"])
        opt.load_state_dict(resumed["optimizer"])
        set_rng_state(resumed["rng"])
        state = resumed["state"]
    trainer: nn.Module = policy
    if ddp.world > 1:
        trainer = nn.parallel.DistributedDataParallel(policy, find_unused_parameters=True)
    local = args.num_envs // ddp.world
    rows = torch.arange(ddp.rank * local, (ddp.rank + 1) * local, device=device)
    venv = LatentReasoningSudokuVectorEnv(
        num_envs=local,
        pool=train_pool,
        augment=True,
        max_steps=cfg.n_sup,
        reward_mode=args.reward_mode,
        step_cost=args.step_cost,
        solve_bonus=args.solve_bonus,
        terminate_on_solve=args.terminate_on_solve,
        device=device,
    )
    venv.reset(seed=args.seed * 1000 + ddp.rank)
    mb_gen = torch.Generator().manual_seed(args.seed)
    if resumed is not None:
        venv._gen.set_state(resumed["env_generator"])
        mb_gen.set_state(resumed["minibatch_generator"])
    lead = ddp.rank == 0
    before = resumed["before"] if resumed is not None else evaluate_policy(policy, eval_p, eval_s, device, args.seed)
    writer = None
    if lead:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        info = run_info(cfg.to_dict(), args.seed, device)
        info.update({"args": vars(args), "init": source, "world_size": ddp.world, "data": train_pool.source})
        atomic_write_json(out / "run.json", info)

    def checkpoint() -> None:
        if lead:
            save_checkpoint(
                ckpt_path,
                {
                    "kind": KIND,
                    "config": cfg.to_dict(),
                    "model": model.state_dict(),
                    "value": policy.value.state_dict(),
                    "ema": None,
                    "optimizer": opt.state_dict(),
                    "rng": rng_state(),
                    "env_generator": venv._gen.get_state(),
                    "minibatch_generator": mb_gen.get_state(),
                    "state": dict(state),
                    "args": vars(args),
                    "before": before,
                },
            )

    t0 = time.perf_counter() - state["wall_seconds"]
    last_ckpt = time.perf_counter()
    try:
        while True:
            stop = (args.updates and state["update"] >= args.updates) or time.perf_counter() - t0 >= args.minutes * 60
            if ddp.world > 1:  # every rank stops at the same update
                stop = bool(ddp.sum(torch.tensor(float(stop), device=device)).item() > 0)
            if stop:
                break
            model.reset_counter()
            t_roll = time.perf_counter()
            buf = rollout(policy, venv)
            roll_s = time.perf_counter() - t_roll
            stats = update(trainer, opt, buf, args, ddp, mb_gen, rows)
            n_steps = int(ddp.sum(buf["valid"].sum().float()).item())
            state["update"] += 1
            state["env_steps"] += n_steps
            state["train_forward_passes"] += int(ddp.sum(torch.tensor(float(model.net.sample_calls), device=device)).item())
            state["wall_seconds"] = time.perf_counter() - t0
            solve = float(ddp.sum(buf["solved"].float().sum()) / args.num_envs)
            ret = float(ddp.sum(buf["reward"].sum()) / args.num_envs)
            mean_steps = n_steps / args.num_envs
            if lead:
                u = state["update"]
                for k, v in stats.items():
                    writer.add_scalar(f"rl/{k}", v, u)
                writer.add_scalar("rl/return", ret, u)
                writer.add_scalar("rl/solve_rate", solve, u)
                writer.add_scalar("rl/mean_steps", mean_steps, u)
                writer.add_scalar("rl/env_steps_per_s", n_steps / max(roll_s, 1e-9), u)
                print(
                    f"update {u:4d}  return {ret:+.3f}  solve {solve:6.1%}  steps {mean_steps:4.2f}  "
                    f"kl {stats['approx_kl']:.4f}  epochs {stats['epochs']}  {state['wall_seconds']:.0f}s",
                    flush=True,
                )
            if time.perf_counter() - last_ckpt > args.checkpoint_every * 60:
                checkpoint()
                last_ckpt = time.perf_counter()
    except Diverged as e:
        kept = f"the last good checkpoint {ckpt_path} is kept" if ckpt_path.is_file() else "no checkpoint was written yet"
        raise SystemExit(f"error: training diverged ({e}); stopped, {kept}") from None
    checkpoint()
    checksum = ddp.sum(sum(p.detach().double().sum() for p in policy.parameters()).reshape(1).to(device))
    local_sum = float(sum(p.detach().double().sum() for p in policy.parameters()))
    metrics: dict[str, Any] = {}
    if lead:
        after = evaluate_policy(policy, eval_p, eval_s, device, args.seed)
        metrics = {
            **{
                k: after["halting"][k] for k in ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle", "dead_compute_share")
            },
            "mean_steps": after["halting"]["mean_steps"],
            "train_forward_passes": state["train_forward_passes"],
            "wall_seconds": state["wall_seconds"],
            "updates": state["update"],
            "env_steps": state["env_steps"],
            "objective": args.objective,
            "reward_mode": args.reward_mode,
            "step_cost": args.step_cost,
            "init": source,
            "before": before,
            "after": after,
            "world_size": ddp.world,
            "param_checksum_mean_over_ranks": float(checksum) / ddp.world,
            "param_checksum_rank0": local_sum,
        }
        atomic_write_json(out / "metrics.json", metrics)
        writer.close()
        print(table(before, after))
    if ddp.world > 1:
        dist.destroy_process_group()
    return metrics


def table(before: dict, after: dict) -> str:
    lines = [
        "",
        "| policy | solve rate | cell accuracy | forward passes / puzzle | steps | dead compute |",
        "|---|---|---|---|---|---|",
    ]
    for when, res in (("before RL", before), ("after RL", after)):
        for mode, label in (("fixed", "greedy, all steps"), ("halting", "greedy, Q-head halting")):
            m = res[mode]
            lines.append(
                f"| {when}, {label} | {m['solve_rate']:.1%} | {m['cell_accuracy']:.3f} | "
                f"{m['forward_passes_per_puzzle']:.1f} | {m['mean_steps']:.2f} | {m['dead_compute_share']:.1%} |"
            )
        if "sampled" in res:
            m = res["sampled"]
            lines.append(
                f"| {when}, sampled policy | {m['solve_rate']:.1%} | - | "
                f"{m['forward_passes_per_puzzle']:.1f} | {m['mean_steps']:.2f} | - |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
