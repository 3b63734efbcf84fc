"""RL over recursion steps: the TRM policy acts in LatentReasoning-Sudoku-v0, one deep recursion per step.

The main job. With no ``--init-from`` it first warms the policy with a short DIS run
(``train/train_dis.py``, on this run's own training pool and held-out split; with
``--reward-mode verifier`` never: a label-free run starts from scratch), then trains
it with RL in the batched environment, and ends by
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
* ``group``: the clipped ratio with group-relative advantages instead of the value heads:
  rollouts hold ``--group-size K`` episodes of each puzzle, and episode ``i``'s return minus
  the mean of its group's other ``K - 1`` returns is the advantage of each of its steps
  (per cell under ``--credit cell``); with the verifier this is the verified solve against
  the group, as the conflict-free-cell term is weighted ``--verifier-cell-weight``;
* ``expert``: expert iteration with the rules as the expert: the same groups, each episode
  under its own symmetry of the puzzle; every answer the rules verify (an episode that ended
  solved, or a step's greedy readout that passed) joins a replay of found solutions
  (``--replay-size``), and after each rollout the model takes ``--epochs`` DIS batches
  (deep supervision towards DIS's intermediate targets, ``train.supervised.train_batch``)
  on pairs drawn from that replay (each under a random symmetry), at a constant ``--lr``.
  No label is read: the targets are the policy's own verified solutions (one process
  only). With ``--expert-search K`` the expert is test-time search instead of the
  rollout's episodes: each round :class:`agents.search_agent.SearchAgent` (``K`` sampled
  trajectories per puzzle, each under its own symmetry, the rules as verifier) runs on
  ``--num-envs / K`` training puzzles it has not solved yet, and what it verifies joins
  the replay; the model it searches with is the one being trained (its weight average,
  below), so what it finds grows as it learns. Like DIS, expert iteration keeps an
  exponential moving average of the weights (``E <- d E + (1 - d) theta`` after every
  optimizer step, ``d`` the start's ``ema_decay``; ``--ema-decay``), and greedy decoding and
  the search read it: at a constant 3e-4 the live weights of a DIS run on hard puzzles
  solved 45.7% of held-out hard puzzles where their average solved 64.8%;
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

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from agents.runner import run_episodes, summarize
from agents.search_agent import SearchAgent
from agents.trm_agent import TRMAgent
from envs import augmentation
from envs.puzzle_pool import PuzzlePool
from envs.rules import verified
from envs.vector_env import LatentReasoningSudokuVectorEnv
from train import cli
from train.distributed import Dist, all_stop, close, init_distributed, rank_device
from train.held_out import Split, split
from train.run_folder import (
    Budget,
    Cadence,
    Diverged,
    RunArgs,
    RunFolder,
    RunFolderBusy,
    check_finite,
    rng_state,
    run_info,
    seed_everything,
    set_rng_state,
)
from train.supervised import make_optimizer as supervised_optimizer
from train.supervised import train as train_supervised
from train.supervised import train_batch
from trm.checkpoint import config_mismatch, load_checkpoint, load_model, model_weights, save_checkpoint
from trm.config import TRMConfig
from trm.ema import EMA
from trm.losses import log_stablemax
from trm.model import TRM

KIND = "ppo_recursion"
INIT_KINDS = ("dis", "trm", KIND)
# settings that define the data or the objective: a --resume must keep them
FIXED_ON_RESUME = ("seed", "difficulty", "puzzles", "pool_size", "eval_size", "objective", "reward_mode", "step_cost")
FIXED_ON_RESUME += ("solve_bonus", "num_envs", "lr", "head_lr", "terminate_on_solve", "gamma", "gae_lambda")
FIXED_ON_RESUME += ("credit", "policy_dist", "temperature", "group_size", "replay_size", "verifier_cell_weight")
FIXED_ON_RESUME += ("expert_search", "ema_decay")


@dataclass
class Args(RunArgs):
    out: str = "runs/ppo_recursion"  # run folder: checkpoint.pt, tb/, run.json, metrics.json (and warm_dis/)
    minutes: float = 2.0  # RL wall-clock budget
    updates: int = 0  # stop after this many updates (0: only --minutes)
    puzzles: str = ""  # puzzle file; with --reward-mode verifier its solutions are never read by RL
    pool_size: int = 4096  # generated training puzzles (the warm start draws from the same pool)
    eval_size: int = 256  # held-out puzzles (the DIS warm start holds out the same ones)
    init_from: str = ""  # a dis / trm / ppo_recursion checkpoint; empty: DIS warm start (verifier: scratch)
    warm_minutes: float = 3.75  # the DIS warm start's budget
    warm_eval_size: int = 64  # held-out puzzles the warm start evaluates at its end (the first of the same held-out set)
    hidden: int = 0  # policy width for the warm start (0: DIS default); must match --init-from if given
    objective: Literal["ppo", "pi", "group", "expert"] = "ppo"  # PPO, policy improvement, group PPO, expert iteration
    group_size: int = 8  # K: episodes of the same puzzle per group (--objective group / expert)
    replay_size: int = 4096  # --objective expert: the most verified (puzzle, solution) pairs kept (oldest dropped)
    expert_search: int = 0  # --objective expert: K of a verified search labelling --num-envs / K puzzles a round (0: off)
    reward_mode: Literal["solution", "verifier"] = "solution"  # the env's reward: from the solution, or from the rules alone
    step_cost: float = 0.02  # reward paid per recursion step: the price of compute that halting saves
    verifier_cell_weight: float = 0.1  # verifier mode: weight of the conflict-free-cell term (solves dominate)
    eval_every: int = 0  # every N updates, log held-out solve rate and cell accuracy (labels read for evaluation only; 0: off)
    solve_bonus: float = 1.0  # reward for a solved board (as a potential difference)
    num_envs: int = 128  # episodes per rollout (split over the processes)
    epochs: int = 2  # passes over each rollout
    minibatches: int = 4  # minibatches per epoch
    lr: float = 5e-5  # learning rate of the network
    head_lr: float = 1e-2  # learning rate of the halting (Q) and value heads, which DIS never trained
    adam_eps: float = 1e-5  # Adam's epsilon
    beta1: float = 0.9  # Adam's first-moment decay
    beta2: float = 0.999  # Adam's second-moment decay
    grad_clip: float = 1.0  # gradient-norm clip per minibatch (0: off)
    clip: float = 0.2  # PPO's ratio clip epsilon
    ent_coef: float = 1e-3  # entropy bonus
    vf_coef: float = 0.5  # value-loss weight
    gamma: float = 1.0  # discount; must be 1: the env's shaping is potential-based only undiscounted
    gae_lambda: float = 1.0  # 1: Monte Carlo returns minus V (see the module docstring)
    target_kl: float = 0.05  # stop an update's epochs once the approximate KL exceeds this
    abort_kl: float = 2.0  # stop the run (keeping the last checkpoint) above this KL
    beta: float = 0.5  # temperature of the pi objective
    max_weight: float = 20.0  # cap of the pi objective's normalised weights
    halt_init_bias: float = 0.0  # halting logit bias b at RL start when the Q head was never trained
    halt_init_weight: float = 10.0  # weight u of the confidence feature at RL start (when it is new)
    terminate_on_solve: bool = False  # end an episode when solved (default: only the halt action or n_sup ends it)
    pooled_halt: bool = False  # halting head reads only mean_L y (TRM's); start it with --halt-init-bias -2
    policy_dist: Literal["softmax", "stablemax"] = "softmax"  # the cells' sampling distribution over the logits
    temperature: float = 1.0  # the logits are divided by this before the distribution
    credit: Literal["joint", "cell"] = "joint"  # one advantage per step, or each cell its own (info["cell_reward"])
    val_size: int = 256  # training puzzles that choose the no-RL halting threshold of the control row
    halt_curve: bool = False  # also measure that control at every threshold on the held-out puzzles (for equal solve rates)
    ema_decay: float = -1.0  # weight average for greedy decoding and search (-1: the start's decay for expert, else off; 0: off)
    control_dis: bool = True  # after RL, train the starting DIS run on by DIS for the same wall clock (a control row)
    control_data: Literal["start", "rl", "both"] = "start"  # its data: the start run's own stream, RL's puzzles labelled, or both

    def validate(self) -> None:
        super().validate()
        positive = ("num_envs", "epochs", "minibatches", "warm_eval_size", "val_size", "group_size", "replay_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        finite = ("lr", "head_lr", "adam_eps", "grad_clip", "clip", "ent_coef", "vf_coef", "target_kl", "abort_kl", "beta")
        for name in (*finite, "max_weight", "warm_minutes", "step_cost", "solve_bonus", "verifier_cell_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
        if self.updates < 0 or self.hidden < 0 or self.eval_every < 0:
            raise ValueError("--updates, --hidden and --eval-every must be >= 0")
        if self.expert_search and (self.objective != "expert" or self.expert_search < 1 or self.num_envs % self.expert_search):
            raise ValueError(f"--expert-search {self.expert_search} needs --objective expert and must be a positive "
                             f"divisor of --num-envs {self.num_envs}")
        if self.grouped() and (self.group_size < 2 or self.num_envs % self.group_size):
            raise ValueError(f"--group-size must be at least 2 and divide --num-envs {self.num_envs}, got {self.group_size}")
        if self.gamma != 1.0:
            raise ValueError(f"--gamma {self.gamma}: the env's reward is shaped as Phi(s') - Phi(s), which keeps optimal "
                             "policies only undiscounted; use --gamma 1")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"--gae-lambda must lie in [0, 1], got {self.gae_lambda}")
        if self.credit == "cell" and self.objective not in ("ppo", "group"):
            raise ValueError("--credit cell is implemented for --objective ppo and group")
        if not (self.ema_decay == -1.0 or 0 <= self.ema_decay < 1):
            raise ValueError(f"--ema-decay must be -1 (automatic) or lie in [0, 1), got {self.ema_decay}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"--temperature must be a finite number above 0, got {self.temperature}")
        if self.beta <= 0:
            raise ValueError(f"--beta must be above 0, got {self.beta}")
        if not self.init_from and self.reward_mode == "solution" and not self.warm_minutes > 0:
            raise ValueError("--warm-minutes must be above 0 when there is no --init-from")
        if self.init_from and not Path(self.init_from).is_file():
            raise ValueError(f"--init-from: checkpoint {self.init_from} does not exist")
        if self.init_from:
            try:
                load_checkpoint(self.init_from, kind=INIT_KINDS)
            except ValueError as e:
                raise ValueError(f"--init-from: {e}") from None


    def grouped(self) -> bool:
        """Whether rollouts hold ``group_size`` episodes of each puzzle."""
        return self.objective in ("group", "expert")


def parse_args(argv: list[str] | None = None) -> Args:
    return cli.parse(Args, argv, description=__doc__)


# ----------------------------------------------------------------------------- policy


class PolicyStep(NamedTuple):
    """One recursion step of the policy: ``logits (B, 81, 10)``, halt logit ``q (B,)``, pooled ``value (B,)``,
    per-cell ``cell_value (B, 81)`` and the new latents ``y, z (B, P + 81, D)`` (a tuple, so DDP finds the tensors)."""

    logits: torch.Tensor
    q: torch.Tensor
    value: torch.Tensor
    cell_value: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor


class RecursionPolicy(nn.Module):
    """The TRM plus value heads; ``forward`` is one recursion step with its distributions.

    ``value = v(mean_L y')`` is the baseline of the whole step (and of the halt under
    per-cell credit); ``cell_value_i = v_c(y'_i)`` is cell ``i``'s own baseline. Both read
    the latents after the step, a function of the state alone (not of the sampled action).
    """

    def __init__(self, model: TRM) -> None:
        super().__init__()
        self.trm = model
        self.value = nn.Linear(model.cfg.hidden, 1)
        self.cell_value = nn.Linear(model.cfg.hidden, 1)
        for head in (self.value, self.cell_value):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, tokens: torch.Tensor, y: torch.Tensor, z: torch.Tensor, step: torch.Tensor) -> PolicyStep:
        out = self.trm.step(tokens, y, z, step=step if self.trm.cfg.step_embedding else None)
        cells = self.trm.cells(out.y)  # (B, L, D): the value heads read the cells, not the prefix
        value = self.value(cells.mean(1)).squeeze(-1)
        return PolicyStep(out.logits.float(), out.q.float(), value, self.cell_value(cells).squeeze(-1), out.y, out.z)


# ----------------------------------------------------------------------------- log-probability


def cell_log_probs(logits: torch.Tensor, dist: str = "softmax", temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities ``(B, 81, 10)`` of each cell's digit: ``log softmax(l / T)`` or ``log stablemax(l / T)``.

    Stable-max (``s(x) = x + 1`` for ``x >= 0``, ``1 / (1 - x)`` below, normalised) is the
    distribution DIS and TRM train with; softmax of the same logits is far sharper.
    """
    scaled = logits / temperature
    return log_stablemax(scaled).float() if dist == "stablemax" else torch.log_softmax(scaled, -1)


@dataclass
class Factored:
    """The factorised policy's pieces per sample: ``cell_logp (B, 81)`` (0 off the blanks), ``halt_logp (B,)``,
    ``cell_entropy (B,)`` (mean over blanks, nats) and ``halt_entropy (B,)``."""

    cell_logp: torch.Tensor
    halt_logp: torch.Tensor
    cell_entropy: torch.Tensor
    halt_entropy: torch.Tensor


def factored_log_probs(
    logp_all: torch.Tensor, q: torch.Tensor, cells: torch.Tensor, halt: torch.Tensor, blank: torch.Tensor
) -> Factored:
    """Per-cell and halt log-probabilities and entropies of actions ``cells (B, 81)``, ``halt (B,)``."""
    bl = blank.float()
    cell_logp = logp_all.gather(-1, cells[..., None]).squeeze(-1) * bl
    cell_ent = (-(logp_all.exp() * logp_all).sum(-1) * bl).sum(-1) / bl.sum(-1).clamp(min=1)
    halt_logp = -F.binary_cross_entropy_with_logits(q, halt.float(), reduction="none")
    p = torch.sigmoid(q)
    halt_ent = -(p * F.logsigmoid(q) + (1 - p) * F.logsigmoid(-q))
    return Factored(cell_logp, halt_logp, cell_ent, halt_ent)


def log_prob_entropy(
    logits: torch.Tensor,
    q: torch.Tensor,
    cells: torch.Tensor,
    halt: torch.Tensor,
    blank: torch.Tensor,
    dist: str = "softmax",
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log pi(a | s)`` and the policy entropy per sample ``(B,)``.

    ``log pi(a | s) = sum over blank cells i of log p_i[cells_i] + log Bern(halt; sigmoid(q))`` with
    ``p_i`` from :func:`cell_log_probs`; the entropy is the mean per-blank categorical
    entropy (nats) plus the halt flag's.
    Shapes: ``logits (B, 81, 10)``, ``q (B,)``, ``cells (B, 81)``, ``halt (B,)``, ``blank (B, 81)``.
    """
    f = factored_log_probs(cell_log_probs(logits, dist, temperature), q, cells, halt, blank)
    return f.cell_logp.sum(-1) + f.halt_logp, f.cell_entropy + f.halt_entropy


# ----------------------------------------------------------------------------- rollout


def rollout_buffer(horizon: int, n: int, hidden: int, dev: torch.device | str, positions: int = 81) -> dict[str, torch.Tensor]:
    """Zeroed storage indexed ``[t, env]`` for one rollout; latents hold ``positions`` (prefix + cells) rows."""
    shape = (horizon, n)
    long, flag = {"dtype": torch.long, "device": dev}, {"dtype": torch.bool, "device": dev}
    return {
        "tokens": torch.zeros(*shape, 81, **long),
        "blank": torch.zeros(*shape, 81, **flag),
        "y": torch.zeros(*shape, positions, hidden, device=dev),
        "z": torch.zeros(*shape, positions, hidden, device=dev),
        "cells": torch.zeros(*shape, 81, **long),
        "halt": torch.zeros(*shape, **long),
        "logp": torch.zeros(*shape, device=dev),
        "cell_logp": torch.zeros(*shape, 81, device=dev),
        "halt_logp": torch.zeros(*shape, device=dev),
        "value": torch.zeros(*shape, device=dev),
        "cell_value": torch.zeros(*shape, 81, device=dev),
        "reward": torch.zeros(*shape, device=dev),
        "cell_reward": torch.zeros(*shape, 81, device=dev),
        "entropy": torch.zeros(*shape, device=dev),
        "done": torch.zeros(*shape, **flag),
        "valid": torch.zeros(*shape, **flag),
    }


@torch.no_grad()
def rollout(
    policy: RecursionPolicy, venv: LatentReasoningSudokuVectorEnv, dist: str = "softmax", temperature: float = 1.0
) -> dict[str, torch.Tensor]:
    """One episode per environment; the network runs only on the episodes still going.

    The policy's input at each step is the observation (``TRM.input_tokens``: with the DIS
    default ``input_mode="answer_and_givens"`` its ``answer``, the action sampled at the step
    before, with the givens marked). Returns the episodes' ``puzzle`` ``(n, 81)`` (as the
    env showed it) and tensors indexed ``[t, env]`` (``t < n_sup``): inputs ``tokens``, ``y``, ``z``, ``blank``, actions
    ``cells``/``halt``, their ``logp`` (and its parts ``cell_logp``, ``halt_logp``),
    ``value``, ``cell_value``, ``reward``, ``cell_reward`` (the env's per-cell part),
    per-blank ``entropy``, ``done``, ``valid`` (the episode was running at step t), and
    per env ``solved``, ``steps``, ``final_cells`` ``(n, 81)`` (the answer the episode ended with:
    givens and sampled blanks), ``final_score`` (the env's score ``C/B`` of that answer), ``verified``
    (the episode ended solved, or the greedy readout of one of its steps passed the rules:
    :func:`envs.rules.verified`) and ``verified_cells`` ``(n, 81)``, that answer.
    """
    cfg = policy.trm.cfg
    n, dev = venv.num_envs, venv.device
    buf = rollout_buffer(cfg.n_sup, n, cfg.hidden, dev, cfg.prefix_tokens + cfg.seq_len)
    obs, _ = venv.reset()
    buf["puzzle"] = obs["puzzle"]
    y, z = (s.clone() for s in policy.trm.initial_state(n))
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    solved = torch.zeros(n, dtype=torch.bool, device=dev)
    steps = torch.zeros(n, device=dev)
    final_cells = torch.zeros(n, 81, dtype=torch.long, device=dev)
    final_score = torch.zeros(n, device=dev)
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    found_cells = torch.zeros(n, 81, dtype=torch.long, device=dev)
    for t in range(cfg.n_sup):
        idx = alive.nonzero().squeeze(-1)
        tokens = policy.trm.input_tokens(obs["puzzle"], obs["answer"])
        p_idx = obs["puzzle"][idx]
        blank = p_idx == 0
        buf["tokens"][t, idx], buf["blank"][t, idx] = tokens[idx], blank
        buf["y"][t, idx], buf["z"][t, idx] = y[idx], z[idx]
        out = policy(tokens[idx], y[idx], z[idx], torch.full((idx.numel(),), t + 1, device=dev))
        logp_all = cell_log_probs(out.logits, dist, temperature)
        cells = torch.distributions.Categorical(logits=logp_all).sample()
        halt = torch.bernoulli(torch.sigmoid(out.q)).long()
        f = factored_log_probs(logp_all, out.q, cells, halt, blank)
        # the rules check the step's greedy readout as well: a verified one is a solution found, label-free
        greedy = torch.where(blank, logp_all.argmax(-1), p_idx)
        new = verified(p_idx, greedy) & ~found[idx]
        found_cells[idx[new]], found[idx[new]] = greedy[new], True
        y[idx], z[idx] = out.y, out.z
        action = torch.zeros(n, 82, dtype=torch.long, device=dev)
        action[idx, :81], action[idx, 81] = cells, halt
        written = torch.where(obs["puzzle"] > 0, obs["puzzle"], action[:, :81])  # the answer the env will hold
        obs, reward, term, trunc, info = venv.step(action)
        done = (term | trunc) & alive
        buf["cells"][t, idx], buf["halt"][t, idx] = cells, halt
        buf["logp"][t, idx] = f.cell_logp.sum(-1) + f.halt_logp
        buf["cell_logp"][t, idx], buf["halt_logp"][t, idx], buf["entropy"][t, idx] = f.cell_logp, f.halt_logp, f.cell_entropy
        buf["value"][t, idx], buf["cell_value"][t, idx] = out.value, out.cell_value
        buf["reward"][t], buf["done"][t], buf["valid"][t] = torch.where(alive, reward, 0), done, alive
        buf["cell_reward"][t] = torch.where(alive[:, None], info["cell_reward"], 0)
        solved = torch.where(done, info["solved"], solved)
        final_cells = torch.where(done[:, None], written, final_cells)
        final_score = torch.where(done, info["score"], final_score)
        steps += alive.float()
        alive &= ~done
        if not alive.any():
            break
    buf["solved"], buf["steps"], buf["final_cells"], buf["final_score"] = solved, steps, final_cells, final_score
    # verified answers: the episode's own final answer when solved, else a greedy readout the rules verified
    buf["verified"] = solved | found
    buf["verified_cells"] = torch.where(solved[:, None], final_cells, found_cells)
    return buf


# ----------------------------------------------------------------------------- advantages


def gae(
    buf: dict[str, torch.Tensor],
    gamma: float,
    lam: float,
    reward: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns ``[t, env, ...]`` by generalised advantage estimation.

    ``delta_t = r_t + gamma V_{t+1} (1 - done_t) - V_t``, ``A_t = delta_t + gamma lam (1 - done_t) A_{t+1}``,
    returns ``A_t + V_t``; steps outside an episode (``valid`` false) get 0, and an
    episode's last step bootstraps from 0. ``reward`` and ``value`` default to the
    buffer's; they may carry trailing dimensions (per-cell terms ``[t, env, 81]``).
    """
    reward = buf["reward"] if reward is None else reward
    value = buf["value"] if value is None else value
    extra = (1,) * (reward.dim() - 2)
    adv = torch.zeros_like(reward)
    next_adv = torch.zeros_like(reward[0])
    next_value = torch.zeros_like(next_adv)
    for t in reversed(range(reward.shape[0])):
        cont = (~buf["done"][t]).float().view(-1, *extra)
        valid = buf["valid"][t].view(-1, *extra)
        delta = reward[t] + gamma * next_value * cont - value[t]
        next_adv = torch.where(valid, delta + gamma * lam * cont * next_adv, 0)
        adv[t] = next_adv
        next_value = torch.where(valid, value[t], 0)
    return adv, adv + value


@dataclass
class Advantages:
    """What the update needs: raw and normalised advantages and value targets.

    Joint credit: ``step``/``step_n``/``step_ret`` ``[t, env]`` for the whole action.
    Per-cell credit: also ``cell``/``cell_n``/``cell_ret`` ``[t, env, 81]`` (each cell's own
    return of its per-cell rewards minus its own baseline), while ``step`` is the shared
    part (solve bonus, step cost) against the pooled baseline, which credits the halt.
    """

    step: torch.Tensor
    step_n: torch.Tensor
    step_ret: torch.Tensor
    cell: torch.Tensor | None = None
    cell_n: torch.Tensor | None = None
    cell_ret: torch.Tensor | None = None


def normalised(x: torch.Tensor, mask: torch.Tensor, ddp: Dist) -> torch.Tensor:
    """``(x - mean) / std`` over the entries where ``mask`` holds, on every process together."""
    m = mask.float()
    count = ddp.sum(m.sum()).clamp(min=1)
    mean = ddp.sum((x * m).sum()) / count
    std = (ddp.sum((((x - mean) ** 2) * m).sum()) / count).sqrt().clamp(min=1e-6)
    return (x - mean) / std


def leave_one_out(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x_i - mean_{j != i} x_j`` within consecutive groups of ``k`` rows; ``x (N, ...)``, ``N`` a multiple of ``k``.

    The other episodes of a group played the same puzzle independently of episode ``i``,
    so their mean return is a baseline that leaves the policy gradient unbiased (RLOO).
    """
    g = x.reshape(-1, k, *x.shape[1:])
    others = (g.sum(1, keepdim=True) - g) / (k - 1)
    return (g - others).reshape(x.shape)


def group_advantages(buf: dict[str, torch.Tensor], args: Args, ddp: Dist) -> Advantages:
    """Group-relative advantages: each episode's return minus the mean return of its group's other episodes.

    Every step of episode ``i`` gets ``A_i = R_i - mean_{j != i} R_j`` (``R`` the undiscounted
    return, ``(N,)``). Under per-cell credit cell ``c`` gets its own
    ``R_ic - mean_{j != i} R_jc`` from its per-cell rewards, and the shared part (solve
    bonus, step cost) credits the halt. No value head is involved.
    """
    valid, k = buf["valid"], args.group_size
    ret = buf["reward"].sum(0)
    if args.credit == "joint":
        adv = torch.where(valid, leave_one_out(ret, k)[None], 0)
        return Advantages(adv, normalised(adv, valid, ddp), torch.zeros_like(adv))
    cell_ret = buf["cell_reward"].sum(0)  # (N, 81)
    adv = torch.where(valid, leave_one_out(ret - cell_ret.sum(-1), k)[None], 0)
    cell_mask = valid[..., None] & buf["blank"]
    cell = torch.where(cell_mask, leave_one_out(cell_ret, k)[None], 0)
    zero = torch.zeros_like(cell)
    return Advantages(adv, normalised(adv, valid, ddp), torch.zeros_like(adv), cell, normalised(cell, cell_mask, ddp), zero)


def advantages(buf: dict[str, torch.Tensor], args: Args, ddp: Dist) -> Advantages:
    """GAE for the whole step (joint credit), or per cell plus a shared part (per-cell credit);
    group-relative (:func:`group_advantages`) for ``--objective group``."""
    valid = buf["valid"]
    if args.objective == "group":
        return group_advantages(buf, args, ddp)
    if args.credit == "joint":
        adv, ret = gae(buf, args.gamma, args.gae_lambda)
        return Advantages(adv, normalised(adv, valid, ddp), ret)
    shared = buf["reward"] - buf["cell_reward"].sum(-1)  # solve bonus and step cost
    adv, ret = gae(buf, args.gamma, args.gae_lambda, reward=shared)
    cell, cell_ret = gae(buf, args.gamma, args.gae_lambda, reward=buf["cell_reward"], value=buf["cell_value"])
    cell_mask = valid[..., None] & buf["blank"]
    return Advantages(adv, normalised(adv, valid, ddp), ret, cell, normalised(cell, cell_mask, ddp), cell_ret)


# ----------------------------------------------------------------------------- update


def clipped(ratio: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's per-sample loss ``-min(r A, clip(r, 1 - eps, 1 + eps) A)``."""
    return -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, adv_n: torch.Tensor, args: Args, ddp: Dist, n_mb: torch.Tensor
) -> torch.Tensor:
    """Per-sample policy loss of one minibatch under joint credit.

    ``ppo`` and ``group``: :func:`clipped` on normalised advantages.
    ``pi``: ``-w log pi`` with ``w = exp(A / beta)`` normalised to mean 1 over the global
    minibatch (the maximum subtracted is the global one, so every rank uses the same
    scale) and capped at ``max_weight``.
    """
    if args.objective in ("ppo", "group"):
        return clipped((logp - old_logp).exp(), adv_n, args.clip)
    raw = adv / args.beta
    top = raw.max().detach() if raw.numel() else torch.tensor(-math.inf, device=raw.device)
    w = torch.exp(raw - ddp.max(top))
    w = (w / (ddp.sum(w.sum()) / n_mb).clamp(min=1e-12)).clamp(max=args.max_weight).detach()
    return -w * logp


def minibatch_loss(
    policy: nn.Module, buf: dict, at: tuple, adv: Advantages, args: Args, ddp: Dist, n_mb: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-sample loss (policy + value - entropy bonus) on the samples ``at = (t_idx, e_idx)``, and its parts."""
    t_idx = at[0]
    out = policy(buf["tokens"][at], buf["y"][at], buf["z"][at], (t_idx + 1).float())
    blank = buf["blank"][at]
    f = factored_log_probs(cell_log_probs(out.logits, args.policy_dist, args.temperature), out.q, buf["cells"][at],
                           buf["halt"][at], blank)
    logp = f.cell_logp.sum(-1) + f.halt_logp
    # the group is the baseline of --objective group: the value heads are not trained there
    v_loss = torch.zeros_like(logp) if args.grouped() else 0.5 * (out.value - adv.step_ret[at]) ** 2
    if adv.cell is None:
        pg = policy_loss(logp, buf["logp"][at], adv.step[at], adv.step_n[at], args, ddp, n_mb)
    else:
        cell_ratio = (f.cell_logp - buf["cell_logp"][at]).exp()
        pg = (clipped(cell_ratio, adv.cell_n[at], args.clip) * blank).sum(-1)
        pg = pg + clipped((f.halt_logp - buf["halt_logp"][at]).exp(), adv.step_n[at], args.clip)
        bl = blank.float()
        if not args.grouped():
            v_loss = v_loss + 0.5 * (((out.cell_value - adv.cell_ret[at]) ** 2) * bl).sum(-1) / bl.sum(-1).clamp(min=1)
    ent = f.cell_entropy + f.halt_entropy
    per_sample = pg + args.vf_coef * v_loss - args.ent_coef * ent
    return per_sample, {"log_ratio": logp - buf["logp"][at], "value_loss": v_loss, "entropy_per_blank": f.cell_entropy}


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
    adv = advantages(buf, args, ddp)
    valid = buf["valid"]
    dev, n_local = valid.device, valid.shape[1]
    rows = torch.arange(n_local, device=dev) if rows is None else rows
    count = ddp.sum(valid.sum().float())
    n_global = int(ddp.sum(torch.tensor(float(n_local), device=dev)).item())
    stats = {"approx_kl": 0.0, "clip_frac": 0.0, "loss": 0.0, "value_loss": 0.0, "entropy_per_blank": 0.0, "epochs": 0}
    module = policy.module if hasattr(policy, "module") else policy
    for _ in range(args.epochs):
        perm_group = torch.empty(n_global, dtype=torch.long)
        perm_group[torch.randperm(n_global, generator=generator)] = torch.arange(n_global) % args.minibatches
        group = perm_group.to(dev)[rows]
        kl_sum = torch.zeros((), device=dev)
        for g in range(args.minibatches):
            at = (valid & (group == g)[None, :]).nonzero(as_tuple=True)
            n_mb = ddp.sum(torch.tensor(float(at[0].numel()), device=dev)).clamp(min=1)
            per_sample, parts = minibatch_loss(policy, buf, at, adv, args, ddp, n_mb)
            # sum over this rank / global count, times world: DDP's gradient average becomes the global mean
            loss = per_sample.sum() / n_mb * ddp.world
            check_finite(loss, "in an RL update")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                nn.utils.clip_grad_norm_(module.parameters(), args.grad_clip)
            opt.step()
            with torch.no_grad():
                log_ratio = parts["log_ratio"]
                ratio = log_ratio.exp()
                kl_sum += ((ratio - 1) - log_ratio).sum()
                stats["clip_frac"] += float(ddp.sum(((ratio - 1).abs() > args.clip).float().sum()) / count)
                stats["loss"] += float(ddp.sum(per_sample.sum().detach()) / count)
                for key in ("value_loss", "entropy_per_blank"):
                    stats[key] += float(ddp.sum(parts[key].sum().detach()) / count)
        kl = float(ddp.sum(kl_sum) / count)
        stats["approx_kl"], stats["epochs"] = kl, stats["epochs"] + 1
        if not math.isfinite(kl) or kl > args.abort_kl:
            raise Diverged(f"approximate KL {kl:.3g} exceeds --abort-kl {args.abort_kl}; a lower --lr keeps updates smaller")
        if kl > args.target_kl:
            break
    return stats


# ----------------------------------------------------------------------------- setup


def warm_start(args: Args, device: str) -> Path:
    """Train DIS for ``--warm-minutes`` on this run's training pool and held-out split; its checkpoint path."""
    warm = Path(args.out) / "warm_dis"
    argv = ["--out", str(warm), "--seed", str(args.seed), "--device", device, "--minutes", str(args.warm_minutes)]
    argv += ["--difficulty", args.difficulty, "--pool-size", str(args.pool_size), "--eval-size", str(args.eval_size)]
    argv += ["--eval-limit", str(args.warm_eval_size)]
    argv += ["--hidden", str(args.hidden)] if args.hidden else []
    argv += ["--puzzles", args.puzzles] if args.puzzles else []
    print(f"warm start: DIS for {args.warm_minutes} min -> {warm}", flush=True)
    train_supervised("dis", argv)
    return warm / "checkpoint.pt"


def load_init(args: Args, path: Path) -> tuple[TRM, str]:
    """The policy's TRM from a dis / trm / ppo_recursion checkpoint, with the halting feature added when new,
    and a description of the start: the path, the checkpoint's kind and the source it was trained on."""
    ck = load_checkpoint(path, kind=INIT_KINDS)
    trained = ck.get("args") or {}
    source = f"checkpoint {path} ({ck['kind']}, trained on {trained.get('puzzles') or trained.get('difficulty', '?')})"
    cfg = TRMConfig.from_dict(ck["config"])
    if args.hidden and args.hidden != cfg.hidden:
        raise ValueError(f"--init-from: {path} has hidden={cfg.hidden}, but --hidden {args.hidden} was asked for")
    adds_feature = not cfg.halt_confidence and not args.pooled_halt
    if adds_feature:
        cfg = TRMConfig.from_dict({**cfg.to_dict(), "halt_confidence": True})
    model = TRM(cfg)
    missing, unexpected = model.load_state_dict(model_weights(ck), strict=False)
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
    return model, source


def initial_model(args: Args, ddp: Dist, device: str) -> tuple[TRM, str]:
    """``--init-from``; else with the verifier a fresh model (no supervised warm start: a label-free run
    reads no solution); else a DIS warm start that rank 0 trains and every rank then reads
    (then ``--init-from`` names it)."""
    if args.init_from:
        model, source = load_init(args, Path(args.init_from))
        return model.to(device), source
    if args.reward_mode == "verifier":
        cfg = TRMConfig.dis(halt_confidence=not args.pooled_halt, **({"hidden": args.hidden} if args.hidden else {}))
        torch.manual_seed(args.seed)
        return TRM(cfg).to(device), "scratch (label-free: no supervised warm start)"
    warm = Path(args.out) / "warm_dis" / "checkpoint.pt"
    if ddp.rank == 0:
        warm_start(args, device)
    if ddp.world > 1:
        dist.barrier()
    args.init_from = str(warm)
    return load_init(args, warm)[0].to(device), f"DIS warm start ({args.warm_minutes} min, {warm.parent})"


def make_optimizer(policy: RecursionPolicy, args: Args) -> torch.optim.Optimizer:
    """Adam with two groups: the body at ``--lr``; the halting scalars and value head at ``--head-lr``.

    With the confidence feature on, the pooled halting weights ``w`` learn at ``--lr`` with the body.
    """
    model = policy.trm
    heads = [model.q_head.bias, *policy.value.parameters(), *policy.cell_value.parameters()]
    heads += [model.q_confidence] if model.q_confidence is not None else [model.q_head.weight]
    head_ids = {id(p) for p in heads}
    body = [p for p in policy.parameters() if id(p) not in head_ids]
    groups = [{"params": body, "lr": args.lr}, {"params": heads, "lr": args.head_lr}]
    return torch.optim.Adam(groups, eps=args.adam_eps, betas=(args.beta1, args.beta2))


def make_train_env(args: Args, pool: PuzzlePool, n_sup: int, ddp: Dist, device: str) -> LatentReasoningSudokuVectorEnv:
    venv = LatentReasoningSudokuVectorEnv(
        num_envs=args.num_envs // ddp.world,
        pool=pool,
        augment=True,
        max_steps=n_sup,
        reward_mode=args.reward_mode,
        step_cost=args.step_cost,
        solve_bonus=args.solve_bonus,
        terminate_on_solve=args.terminate_on_solve,
        device=device,
        group_size=args.group_size if args.grouped() else 1,
        group_shares_symmetry=args.credit == "cell",  # per-cell baselines compare the same cell across the group
        cell_weight=args.verifier_cell_weight if args.reward_mode == "verifier" else 1.0,
    )
    venv.reset(seed=args.seed * 1000 + ddp.rank)
    return venv


# ----------------------------------------------------------------------------- evaluation


def measure(
    model: TRM, puzzles: np.ndarray, solutions: np.ndarray | None, device: str, halting: bool, threshold: float | None = None
) -> dict[str, Any]:
    """Greedy decoding (argmax cells; with ``halting``, halt when ``q > 0``; with ``threshold``, when the
    confidence statistic exceeds it) on held-out puzzles."""
    model.reset_counter()
    agent = TRMAgent(model, halting=halting, halt_threshold=threshold)
    return summarize(run_episodes(agent, puzzles, solutions, device=device, max_steps=model.cfg.n_sup))


THRESHOLDS = (-3.0, -2.0, -1.0, -0.5, -0.2, -0.1, -0.05, -0.02, -0.01, -0.005, -0.002, -0.001)


def threshold_control(model: TRM, data: Split, args: Args, device: str) -> dict[str, Any]:
    """Halting without RL: greedy decoding that halts once the confidence statistic exceeds a fixed ``tau``.

    ``tau`` is the one of :data:`THRESHOLDS` with the fewest forward passes whose solve rate
    on a validation split (the first ``--val-size`` training puzzles, never the held-out
    ones) stays within one point of running every step; it is then measured on the
    held-out puzzles like the other rows.
    """
    k = min(args.val_size, len(data.train))
    vp, vs = data.train.puzzles[:k], None if data.train.solutions is None else data.train.solutions[:k]
    full = measure(model, vp, vs, device, False)["solve_rate"]
    best, best_passes = None, math.inf
    for tau in THRESHOLDS:
        m = measure(model, vp, vs, device, False, tau)
        if m["solve_rate"] >= full - 0.01 and m["forward_passes_per_puzzle"] < best_passes:
            best, best_passes = tau, m["forward_passes_per_puzzle"]
    out = measure(model, data.eval_puzzles, data.eval_solutions, device, False, best)
    res = {**out, "threshold": best, "validation_puzzles": k}
    if args.halt_curve:  # chosen on the held-out puzzles themselves: a control at least as strong as the validated one
        res["curve"] = []
        for tau in THRESHOLDS:
            m = measure(model, data.eval_puzzles, data.eval_solutions, device, False, tau)
            res["curve"].append({"threshold": tau, **{k: m[k] for k in ("solve_rate", "forward_passes_per_puzzle")}})
    return res


def threshold_at(curve: list[dict[str, float]], solve_rate: float) -> dict[str, float] | None:
    """The point of a threshold curve with the fewest forward passes among those solving at least
    ``solve_rate`` (None if none does): the no-RL halt's cost at the learned halt's solve rate."""
    ok = [p for p in curve if p["solve_rate"] >= solve_rate]
    return min(ok, key=lambda p: p["forward_passes_per_puzzle"]) if ok else None


def measure_sampled(
    policy: RecursionPolicy,
    puzzles: np.ndarray,
    solutions: np.ndarray | None,
    device: str,
    seed: int = 0,
    dist: str = "softmax",
    temperature: float = 1.0,
) -> dict[str, Any]:
    """The stochastic policy itself (sampled cells and halts, as in training) on held-out puzzles.

    Scored like training episodes (solution, or the verifier when ``solutions`` is None);
    forward passes are counted by the model. Sampling uses its own seeded RNG, so the
    training RNG stream is untouched.
    """
    venv = LatentReasoningSudokuVectorEnv(
        num_envs=len(puzzles),
        pool=PuzzlePool(puzzles, solutions, "held-out"),
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
        buf = rollout(policy, venv, dist, temperature)
    return {
        "solve_rate": float(buf["solved"].float().mean()),
        "forward_passes_per_puzzle": policy.trm.net.sample_calls / len(puzzles),
        "mean_steps": float(buf["steps"].mean()),
    }


def evaluate_policy(
    policy: RecursionPolicy, data: Split, args: Args, device: str, greedy: TRM | None = None
) -> dict[str, dict[str, Any]]:
    """The before/after measurements: greedy with all steps, greedy with Q-head halting (both with
    ``greedy``, the weight average when the run keeps one, else the policy's own TRM), sampled as in training."""
    p, s, model = data.eval_puzzles, data.eval_solutions, greedy or policy.trm
    return {
        "halting": measure(model, p, s, device, True),
        "fixed": measure(model, p, s, device, False),
        "sampled": measure_sampled(policy, p, s, device, args.seed, args.policy_dist, args.temperature),
    }


def evaluate_start(policy: RecursionPolicy, data: Split, args: Args, device: str) -> dict[str, dict[str, Any]]:
    """The starting policy's measurements, plus the no-RL control of halting (:func:`threshold_control`)."""
    return {**evaluate_policy(policy, data, args, device), "threshold": threshold_control(policy.trm, data, args, device)}


def table_row(label: str, m: dict[str, Any]) -> str:
    """One Markdown row: solve rate, cell accuracy, forward passes, steps and dead compute (``-`` where absent)."""
    cell = f"{m['cell_accuracy']:.3f}" if "cell_accuracy" in m else "-"
    dead = f"{m['dead_compute_share']:.1%}" if "dead_compute_share" in m else "-"
    return (
        f"| {label} | {m['solve_rate']:.1%} | {cell} | {m['forward_passes_per_puzzle']:.1f} | {m['mean_steps']:.2f} | {dead} |"
    )


def table(before: dict, after: dict, *controls: dict | None) -> str:
    """The before/after Markdown table the main job prints, with the no-RL controls."""
    lines = [
        "",
        "| policy | solve rate | cell accuracy | forward passes / puzzle | steps | dead compute |",
        "|---|---|---|---|---|---|",
    ]
    for when, res in (("before RL", before), ("after RL", after)):
        lines.append(table_row(f"{when}, greedy, all steps", res["fixed"]))
        lines.append(table_row(f"{when}, greedy, Q-head halting", res["halting"]))
        if "threshold" in res:
            lines.append(table_row(f"{when}, greedy, confidence > {res['threshold']['threshold']} (no RL)", res["threshold"]))
        lines.append(table_row(f"{when}, sampled policy", res["sampled"]))
    for control in (c for c in controls if c is not None):
        what = "on RL's puzzles, labelled" if control.get("data") == "rl" else "on its own data"
        lines.append(table_row(f"DIS continued {control['seconds'] / 60:.1f} min {what} instead of RL, all steps", control))
    return "\n".join(lines)


def config_flags(cfg: dict[str, Any]) -> list[str]:
    """Command-line flags that rebuild a :class:`TRMConfig` dict exactly (for resuming a DIS run)."""
    flags = []
    for f in fields(TRMConfig):
        if f.metadata.get("cli", True):
            v, name = cfg[f.name], f.name.replace("_", "-")
            flags += [f"--{name}" if v else f"--no-{name}"] if isinstance(v, bool) else [f"--{name}", str(v)]
    return flags


def dis_continued_control(
    init_path: Path, seconds: float, data: Split, args: Args, device: str, source: str = "start"
) -> dict[str, Any] | None:
    """Accuracy without RL: the starting DIS checkpoint trained on by DIS for the RL's wall-clock ``seconds``.

    ``source="start"`` (``--control-data start``): the checkpoint is copied to ``OUT/dis_continued`` and resumed there
    with its own data settings (it continues its own data stream; a decaying learning-rate
    schedule is stretched over the longer budget, so the rate climbs back part way: a warm
    restart). ``source="rl"`` (``--control-data rl``, in ``OUT/dis_on_rl_data``): DIS fine-tunes the checkpoint's
    weights on RL's own training puzzles *with their labels* (``train_dis.py --init-from``, the same seed, tier or
    file, pool and held-out split), at a constant learning rate: ``--lr`` for ``--objective
    expert`` (the rate of its DIS batches on the replay), else the start run's final rate. Either
    way it is measured on RL's held-out puzzles with every step run. Returns None when the start
    is not a DIS run (or, for ``rl``, not a resumable one).
    """
    ck = load_checkpoint(init_path)
    if ck["kind"] != "dis" or "args" not in ck:
        return None
    out = Path(args.out) / ("dis_continued" if source == "start" else "dis_on_rl_data")
    out.mkdir(parents=True, exist_ok=True)
    cfg = ck["config"]
    if source == "start":
        save_checkpoint(out / "checkpoint.pt", ck)
        a = ck["args"]
        argv = ["--resume", "--minutes", str((ck["state"]["wall_seconds"] + seconds) / 60)]
    else:
        lr = args.lr if args.objective == "expert" else cfg["lr"] * cfg["lr_min_ratio"]
        cfg = {**cfg, "lr": lr, "lr_min_ratio": 1.0, "warmup_steps": 1}
        a = {**vars(args), "augment": True}
        argv = ["--init-from", str(init_path), "--minutes", str(seconds / 60)]
    argv += ["--out", str(out), "--device", device, "--eval-limit", "1"]
    argv += ["--seed", str(a["seed"]), "--difficulty", a["difficulty"], "--pool-size", str(a["pool_size"])]
    argv += ["--eval-size", str(a["eval_size"]), "--augment" if a["augment"] else "--no-augment"]
    argv += (["--puzzles", a["puzzles"]] if a["puzzles"] else []) + config_flags(cfg)
    print(f"control: DIS continued ({source} data) for {seconds / 60:.1f} min -> {out}", flush=True)
    train_supervised("dis", argv)
    model, _ = load_model(out / "checkpoint.pt", "dis")
    m = measure(model.to(device), data.eval_puzzles, data.eval_solutions, device, False)
    return {**m, "seconds": seconds, "data": source}


# ----------------------------------------------------------------------------- the loop


class RLRun:
    """Everything one RL run updates and checkpoints: policy, optimizer, environment, generators, counters."""

    def __init__(self, args: Args, ddp: Dist, device: str, model: TRM, data: Split) -> None:
        self.args, self.ddp, self.device, self.data = args, ddp, device, data
        self.cfg = model.cfg
        self.policy = RecursionPolicy(model).to(device)
        self.opt = make_optimizer(self.policy, args)
        if args.objective == "expert":  # DIS batches at a constant --lr on the replay of verified solutions
            self.expert_cfg = TRMConfig.from_dict({**self.cfg.to_dict(), "lr": args.lr, "lr_min_ratio": 1.0, "warmup_steps": 1})
            self.opt = supervised_optimizer(self.expert_cfg, self.policy.trm)
        self.replay = torch.zeros(0, 2, 81, dtype=torch.long, device=device)  # (pairs, puzzle / solution, 81)
        self.pool_solved = np.zeros(len(data.train), dtype=bool)  # --expert-search: training puzzles already verified
        self.target_gen = torch.Generator(device=device).manual_seed(args.seed)  # DIS's intermediate targets
        self.venv = make_train_env(args, data.train, self.cfg.n_sup, ddp, device)
        self.mb_gen = torch.Generator().manual_seed(args.seed)
        local = args.num_envs // ddp.world
        self.rows = torch.arange(ddp.rank * local, (ddp.rank + 1) * local, device=device)
        decay = args.ema_decay if args.ema_decay >= 0 else (self.cfg.ema_decay if args.objective == "expert" else 0.0)
        # E_t <- d E_{t-1} + (1 - d) theta_t after every optimizer step (trm.ema.EMA), as DIS evaluates its weights
        self.ema = EMA(self.policy.trm, decay) if decay > 0 else None
        self.trainer: nn.Module = self.policy
        if ddp.world > 1:
            self.trainer = nn.parallel.DistributedDataParallel(self.policy, find_unused_parameters=True)
        self.state = {"update": 0, "env_steps": 0, "train_forward_passes": 0, "wall_seconds": 0.0}
        self.before: dict[str, Any] = {}

    def payload(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "config": self.cfg.to_dict(),
            "model": self.policy.trm.state_dict(),
            "value": self.policy.value.state_dict(),
            "cell_value": self.policy.cell_value.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "rng": rng_state(),
            "env_generator": self.venv.get_rng_state(),
            "minibatch_generator": self.mb_gen.get_state(),
            "state": dict(self.state),
            "args": vars(self.args),
            "before": self.before,
            "replay": self.replay,
            "pool_solved": torch.as_tensor(self.pool_solved),
            "target_generator": self.target_gen.get_state(),
        }

    def restore(self, ck: dict[str, Any]) -> None:
        self.policy.trm.load_state_dict(ck["model"])
        self.policy.value.load_state_dict(ck["value"])
        if "cell_value" in ck:
            self.policy.cell_value.load_state_dict(ck["cell_value"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.ema is not None and ck.get("ema"):
            self.ema.load_state_dict(ck["ema"])
        set_rng_state(ck["rng"])
        self.venv.set_rng_state(ck["env_generator"])
        self.mb_gen.set_state(ck["minibatch_generator"])
        self.state, self.before = ck["state"], ck["before"]
        self.replay = ck.get("replay", self.replay).to(self.device)
        if "pool_solved" in ck:
            self.pool_solved = ck["pool_solved"].numpy().copy()
        if "target_generator" in ck:
            self.target_gen.set_state(ck["target_generator"])

    def greedy_model(self) -> TRM:
        """The weights greedy decoding uses: the average when the run keeps one, else the policy's TRM."""
        return self.ema.model if self.ema is not None else self.policy.trm

    def iteration(self) -> dict[str, float]:
        """One rollout (or, with ``--expert-search``, one search round) and one update; returns the logged statistics."""
        ddp, n = self.ddp, self.args.num_envs
        self.policy.trm.reset_counter()
        if self.ema is not None:  # the search runs the average
            self.ema.model.reset_counter()
        if self.args.expert_search:
            stats, n_steps = self.search_round()
        else:
            buf = rollout(self.policy, self.venv, self.args.policy_dist, self.args.temperature)
            if self.args.objective == "expert":
                stats = self.fit_replay(torch.stack([buf["puzzle"], buf["verified_cells"]], 1)[buf["verified"]])
            else:
                stats = update(self.trainer, self.opt, buf, self.args, ddp, self.mb_gen, self.rows)
                if self.ema is not None:
                    self.ema.update(self.policy.trm)
            n_steps = int(ddp.sum(buf["valid"].sum().float()).item())
            stats.update(rollout_stats(buf, n_steps, n, ddp))
        calls = self.policy.trm.net.sample_calls + (self.ema.model.net.sample_calls if self.ema is not None else 0)
        calls = torch.tensor(float(calls), device=self.device)
        self.state["update"] += 1
        self.state["env_steps"] += n_steps
        self.state["train_forward_passes"] += int(ddp.sum(calls).item())
        return stats

    def search_round(self) -> tuple[dict[str, float], int]:
        """Label ``--num-envs / K`` training puzzles by verified search with the current model, then fit the replay.

        The puzzles are drawn (``minibatch_generator``) from those of the pool no round has
        solved yet (all of them once every one is solved). A pair joins the replay only if
        :func:`envs.rules.verified` passes it: the search reads no label. Returns the
        statistics and the env steps the search took (every trajectory of a puzzle
        counted once per step, as the runner counts a puzzle's steps).
        """
        k, pool = self.args.expert_search, self.data.train.puzzles
        todo = np.flatnonzero(~self.pool_solved) if not self.pool_solved.all() else np.arange(len(pool))
        pick = todo[torch.randperm(len(todo), generator=self.mb_gen)[: self.args.num_envs // k].numpy()]
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.mb_gen))
        agent = SearchAgent(self.greedy_model(), k=k, temperature=self.args.temperature, seed=seed)
        chosen = pool[pick]
        res = run_episodes(agent, chosen, None, device=self.device, max_steps=self.cfg.n_sup)
        self.policy.trm.train()
        puzzles = torch.as_tensor(chosen, dtype=torch.long, device=self.device)
        answers = torch.as_tensor(res["answers"], dtype=torch.long, device=self.device)
        ok = verified(puzzles, answers)
        self.pool_solved[pick[ok.cpu().numpy()]] = True
        stats = self.fit_replay(torch.stack([puzzles, answers], 1)[ok])
        rate = float(ok.float().mean())
        stats.update({"solve_rate": rate, "verified": rate, "mean_steps": float(res["steps"].mean()),
                      "pool_solved": float(self.pool_solved.mean()),
                      "search_passes_per_puzzle": float(res["forward_passes"].mean())})
        return stats, int(res["steps"].sum()) * k

    def fit_replay(self, found: torch.Tensor) -> dict[str, float]:
        """Add verified pairs ``found (m, 2, 81)`` to the replay, then take ``--epochs`` DIS batches from it.

        A pair is ``(puzzle, answer)`` in the view it was found in; the answer passed the rules
        (:func:`envs.rules.verified`), so for a puzzle with one solution it is that
        solution, found without reading any. Batches of ``cfg.batch_size`` pairs are drawn
        uniformly from the replay with ``minibatch_generator`` and each pair is shown under a
        random symmetry (as supervised training augments), so a small replay is not memorised
        in one orientation.
        """
        self.replay = torch.cat([self.replay, found])[-self.args.replay_size :]
        stats = {"approx_kl": 0.0, "epochs": 0, "loss": 0.0, "replay": float(len(self.replay)), "new_pairs": float(len(found))}
        if not len(self.replay):
            return stats
        b = min(self.expert_cfg.batch_size, len(self.replay))
        for _ in range(self.args.epochs):
            pick = torch.randint(len(self.replay), (b,), generator=self.mb_gen).to(self.device)
            sym = augmentation.random_symmetry(b, self.target_gen, self.device)
            p, sol = augmentation.apply(*sym, self.replay[pick, 0], self.replay[pick, 1])
            logs = train_batch(self.policy.trm, self.ema, self.opt, self.expert_cfg, p, sol, self.target_gen, 0, progress=0.0)
            stats["loss"] += float(np.mean(logs["loss"])) / self.args.epochs
            stats["epochs"] += 1
        return stats


def rollout_stats(buf: dict[str, torch.Tensor], n_steps: int, n: int, ddp: Dist) -> dict[str, float]:
    """Per-episode means of a rollout: return, solve rate, steps, the env's score of the final
    answers (with the verifier, the weighted conflict-free share of blanks, what the shaping pays
    for; set against ``eval/cell_accuracy`` it shows reward hacking), verified share, and the
    mean per-blank entropy (nats) of the distribution the rollout drew from."""
    return {
        "return": float(ddp.sum(buf["reward"].sum()) / n),
        "solve_rate": float(ddp.sum(buf["solved"].float().sum()) / n),
        "mean_steps": n_steps / n,
        "final_score": float(ddp.sum(buf["final_score"].sum()) / n),
        "verified": float(ddp.sum(buf["verified"].float().sum()) / n),
        "rollout_entropy_per_blank": float(ddp.sum((buf["entropy"] * buf["valid"]).sum()) / max(n_steps, 1)),
    }


EVAL_POINT_PUZZLES = 64


def eval_point(rl: RLRun) -> dict[str, Any]:
    """Greedy, all steps, on the first :data:`EVAL_POINT_PUZZLES` held-out puzzles (labels, where the
    source has them, are read here for evaluation only); the sampling RNG is left untouched."""
    d = rl.data
    p = d.eval_puzzles[:EVAL_POINT_PUZZLES]
    s = None if d.eval_solutions is None else d.eval_solutions[:EVAL_POINT_PUZZLES]
    with torch.random.fork_rng(devices=[]):
        return measure(rl.greedy_model(), p, s, rl.device, False)


def train_loop(run: RunFolder, rl: RLRun) -> None:
    """Updates until the budget, ``--updates`` or a stop signal; checkpoints on the cadence."""
    args = rl.args
    budget = Budget(args.minutes, args.updates or None, rl.state["wall_seconds"])
    cadence = Cadence(args.checkpoint_every)
    while not all_stop(rl.ddp, budget.exhausted(rl.state["update"]) or run.stop_requested, rl.device):
        stats = rl.iteration()
        rl.state["wall_seconds"] = budget.elapsed()
        u = rl.state["update"]
        for k, v in stats.items():
            run.writer.add_scalar(f"rl/{k}", v, u)
        if run.lead:
            print(
                f"update {u:4d}  " + (f"return {stats['return']:+.3f}  " if "return" in stats else "") +
                f"solve {stats['solve_rate']:6.1%}  "
                f"verified {stats['verified']:6.1%}  steps {stats['mean_steps']:4.2f}  "
                f"kl {stats['approx_kl']:.4f}  epochs {stats['epochs']}  {rl.state['wall_seconds']:.0f}s",
                flush=True,
            )
        if args.eval_every and u % args.eval_every == 0 and run.lead:
            m = eval_point(rl)
            for k in ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle"):
                run.writer.add_scalar(f"eval/{k}", m[k], u)
        if cadence.due():
            run.save(rl.payload())


def resume_checks(args: Args, ck: dict[str, Any], path: Path) -> None:
    """Refuse a ``--resume`` that changes the data or the objective, listing every difference."""
    defaults = Args()
    saved = {k: ck["args"].get(k, getattr(defaults, k)) for k in FIXED_ON_RESUME}
    diff = config_mismatch(saved, {k: getattr(args, k) for k in FIXED_ON_RESUME})
    if diff:
        raise ValueError(f"--resume: {path} was trained with other settings: " + "; ".join(diff))


def finish(run: RunFolder, rl: RLRun, source: str) -> dict[str, Any]:
    """Measure after RL, write ``metrics.json`` and print the before/after table (rank 0)."""
    params = [p.detach().double().sum() for p in rl.policy.parameters()]
    checksum = rl.ddp.sum(sum(params).reshape(1).to(rl.device))
    if not run.lead:
        return {}
    after = evaluate_policy(rl.policy, rl.data, rl.args, rl.device, rl.greedy_model())
    keys = ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle", "dead_compute_share", "mean_steps")
    metrics = {
        **{k: after["halting"][k] for k in keys},
        **{k: rl.state[k] for k in ("train_forward_passes", "wall_seconds", "env_steps")},
        "updates": rl.state["update"],
        **{k: getattr(rl.args, k) for k in ("objective", "reward_mode", "step_cost")},
        "init": source,
        "before": rl.before,
        "after": after,
        "world_size": rl.ddp.world,
        "param_checksum_mean_over_ranks": float(checksum) / rl.ddp.world,
        "param_checksum_rank0": float(sum(params)),
        "interrupted": run.stop_requested,
    }
    controls: dict[str, Any] = {"start": None, "rl": None}
    if rl.args.control_dis and rl.ddp.world == 1 and not run.stop_requested and rl.args.init_from:
        init, seconds = Path(rl.args.init_from), rl.state["wall_seconds"]
        for source in controls:
            if rl.args.control_data in (source, "both"):
                controls[source] = dis_continued_control(init, seconds, rl.data, rl.args, rl.device, source)
    metrics["controls"] = {"threshold_halting": rl.before.get("threshold"), "dis_continued": controls["start"],
                           "dis_on_rl_data": controls["rl"]}
    curve = (rl.before.get("threshold") or {}).get("curve")
    if curve:
        metrics["controls"]["threshold_at_learned_solve_rate"] = threshold_at(curve, after["halting"]["solve_rate"])
    run.write_metrics(metrics)
    print(table(rl.before, after, controls["start"], controls["rl"]))
    if curve:
        print("\nno-RL threshold on the held-out puzzles: " + ", ".join(
            f"{p['threshold']}: {p['solve_rate']:.1%} at {p['forward_passes_per_puzzle']:.1f}" for p in curve))
        best = metrics["controls"]["threshold_at_learned_solve_rate"]
        print(f"learned halt {after['halting']['solve_rate']:.1%} at {after['halting']['forward_passes_per_puzzle']:.1f} passes; "
              + (f"the cheapest threshold as good: {best['threshold']} at {best['forward_passes_per_puzzle']:.1f}" if best
                 else "no threshold solves as many"))
    return metrics


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse, set up, warm start or load, train, measure; returns rank 0's metrics."""
    args = parse_args(argv)
    ddp = init_distributed(args.device)
    device = rank_device(args.device, ddp)
    if args.objective == "expert" and ddp.world > 1:
        raise ValueError("--objective expert runs in one process (each would keep its own replay)")
    if args.num_envs % (ddp.world * (args.group_size if args.grouped() else 1)):
        raise ValueError(f"--num-envs {args.num_envs} must divide evenly over {ddp.world} processes"
                         + (f" in groups of --group-size {args.group_size}" if args.grouped() else ""))
    with RunFolder(args.out, lead=ddp.rank == 0) as run:
        resumed = load_checkpoint(run.checkpoint_path, kind=KIND) if args.resume else None
        if resumed is not None:
            resume_checks(args, resumed, run.checkpoint_path)
        seed_everything(args.seed + ddp.rank)
        data = split(args.difficulty, args.puzzles, seed=args.seed, pool_size=args.pool_size, eval_size=args.eval_size,
                     need_solutions=args.reward_mode == "solution", eval_labels=True)
        if resumed is not None:
            model, source = TRM(TRMConfig.from_dict(resumed["config"])).to(device), f"resumed {run.checkpoint_path}"
        else:
            model, source = initial_model(args, ddp, device)
        rl = RLRun(args, ddp, device, model, data)
        if resumed is not None:
            rl.restore(resumed)
        else:
            rl.before = evaluate_start(rl.policy, data, args, device)
        info = run_info(rl.cfg.to_dict(), args.seed, device)
        info.update({"args": vars(args), "init": source, "world_size": ddp.world, "data": data.source})
        run.write_run(info, resumed=resumed is not None)
        try:
            train_loop(run, rl)
        except Diverged as e:
            raise SystemExit(f"error: training diverged ({e}); stopped, {run.kept()}") from None
        run.save(rl.payload())
        metrics = finish(run, rl, source)
    close(ddp)
    return metrics


if __name__ == "__main__":
    try:
        m = main()
    except (ValueError, FileNotFoundError, RunFolderBusy) as e:
        raise SystemExit(f"error: {e}") from None
    if m.get("interrupted"):
        raise SystemExit(130)
