"""One rollout: an episode per environment of the sampled policy, stored for the update.

The policy (:class:`agents.recursion_policy.PolicyAgent`) reads the observation at each
step (``TRM.input_tokens``: with the DIS default ``input_mode="answer_and_givens"`` the
``answer``, i.e. the action it sampled at the step before, with the givens marked) and
carries its latents ``(y, z)`` across steps (:class:`trm.carry.Carry`); the network runs
only on the episodes still going.
"""

from __future__ import annotations

import torch

from agents.recursion_policy import PolicyAgent, PolicySettings, RecursionPolicy
from envs.rules import verified
from envs.vector_env import LatentReasoningSudokuVectorEnv
from train.distributed import Dist


def rollout_buffer(horizon: int, n: int, hidden: int, dev: torch.device | str, positions: int = 81) -> dict[str, torch.Tensor]:
    """Zeroed storage indexed ``[t, env]`` for one rollout; latents hold ``positions`` (prefix + cells) rows."""
    shape = (horizon, n)
    long, flag = {"dtype": torch.long, "device": dev}, {"dtype": torch.bool, "device": dev}
    out = {name: torch.zeros(*shape, 81, **long) for name in ("tokens", "cells")}
    out.update({name: torch.zeros(*shape, 81, **flag) for name in ("blank",)})
    out.update({name: torch.zeros(*shape, positions, hidden, device=dev) for name in ("y", "z")})
    out.update({name: torch.zeros(*shape, 81, device=dev) for name in ("cell_logp", "cell_value", "cell_reward")})
    out.update({name: torch.zeros(*shape, device=dev) for name in ("logp", "halt_logp", "value", "reward", "entropy")})
    out.update({"halt": torch.zeros(*shape, **long), "done": torch.zeros(*shape, **flag), "valid": torch.zeros(*shape, **flag)})
    return out


@torch.no_grad()
def rollout(
    policy: RecursionPolicy, venv: LatentReasoningSudokuVectorEnv, settings: PolicySettings | None = None
) -> dict[str, torch.Tensor]:
    """One episode per environment of ``venv``; returns the buffer.

    Returns the episodes' ``puzzle`` ``(n, 81)`` (as the env showed it) and tensors indexed
    ``[t, env]`` (``t < n_sup``): inputs ``tokens``, ``y``, ``z``, ``blank``, actions
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
    agent = PolicyAgent(policy, settings)
    obs, _ = venv.reset()
    buf["puzzle"] = obs["puzzle"]
    state = agent.reset(obs)
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    solved, found = torch.zeros(n, dtype=torch.bool, device=dev), torch.zeros(n, dtype=torch.bool, device=dev)
    steps, final_score = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
    final_cells, found_cells = (torch.zeros(n, 81, dtype=torch.long, device=dev) for _ in range(2))
    for t in range(cfg.n_sup):
        state["active"] = alive  # the env ends episodes (a solved board, with terminate_on_solve) the agent cannot see
        action, state, info = agent.act(obs, state)
        idx, f = info["rows"], info["factored"]
        # the rules check the step's greedy readout as well: a verified one is a solution found, label-free
        new = verified(obs["puzzle"][idx], info["greedy"]) & ~found[idx]
        found_cells[idx[new]], found[idx[new]] = info["greedy"][new], True
        for key in ("tokens", "blank", "y", "z", "cells", "halt", "value", "cell_value"):
            buf[key][t, idx] = info[key]
        buf["logp"][t, idx] = f.cell_logp.sum(-1) + f.halt_logp
        buf["cell_logp"][t, idx], buf["halt_logp"][t, idx], buf["entropy"][t, idx] = f.cell_logp, f.halt_logp, f.cell_entropy
        written = torch.where(obs["puzzle"] > 0, obs["puzzle"], action[:, :81])  # the answer the env will hold
        obs, reward, term, trunc, env_info = venv.step(action)
        done = (term | trunc) & alive
        buf["reward"][t], buf["done"][t], buf["valid"][t] = torch.where(alive, reward, 0), done, alive
        buf["cell_reward"][t] = torch.where(alive[:, None], env_info["cell_reward"], 0)
        solved = torch.where(done, env_info["solved"], solved)
        final_cells = torch.where(done[:, None], written, final_cells)
        final_score = torch.where(done, env_info["score"], final_score)
        steps += alive.float()
        alive &= ~done
        if not alive.any():
            break
    buf["solved"], buf["steps"], buf["final_cells"], buf["final_score"] = solved, steps, final_cells, final_score
    # verified answers: the episode's own final answer when solved, else a greedy readout the rules verified
    buf["verified"] = solved | found
    buf["verified_cells"] = torch.where(solved[:, None], final_cells, found_cells)
    return buf


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
