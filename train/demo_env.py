"""Drive the batched environment with rule-based refinement and show what each step earns.

A first look at the interface, with no learning: every step proposes the current
answer plus one round of naked and hidden singles (``envs.sudoku.propagate_step``),
halting when a round adds nothing. Prints the solve rate, cell accuracy, reward and
dead-compute share per step on each tier, and saves one episode as a PNG strip.

Usage: ``python train/demo_env.py [--num-envs 256] [--out runs/demo]``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from envs import render, sudoku
from envs.sudoku_env import LatentReasoningSudokuEnv
from envs.vector_env import LatentReasoningSudokuVectorEnv
from train import cli


@dataclass
class Args:
    num_envs: int = 256  # puzzles per tier, played at once
    max_steps: int = 16  # steps per episode at most
    seed: int = 0  # seeds the puzzles
    out: str = "runs/demo"  # folder for the episode picture

    def validate(self) -> None:
        if self.num_envs < 1 or self.max_steps < 1:
            raise ValueError("--num-envs and --max-steps must be at least 1")


def singles_policy(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(N, 82)`` actions: one round of singles on each current answer, halt when stuck."""
    answer = obs["answer"].cpu().numpy()
    nxt = sudoku.propagate_step(answer.astype(np.int8)).astype(np.int64)
    halt = (nxt == answer).all(1)
    return torch.from_numpy(np.concatenate([nxt, halt[:, None]], axis=1))


def run_tier(tier: str, n: int, max_steps: int, seed: int) -> None:
    venv = LatentReasoningSudokuVectorEnv(
        num_envs=n, difficulty=tier, pool_size=n, pool_seed=seed, order="sequential", max_steps=max_steps, step_cost=0.01
    )
    obs, _ = venv.reset(seed=seed)
    alive = torch.ones(n, dtype=torch.bool)
    print(f"\n{tier}: {n} puzzles, one round of singles per step")
    print(f"{'step':>4s} {'active':>7s} {'solved':>7s} {'cell acc':>9s} {'mean reward':>12s} {'dead':>6s}")
    solved_total = torch.zeros(n, dtype=torch.bool)
    for t in range(1, max_steps + 1):
        obs, reward, term, trunc, info = venv.step(singles_policy(obs))
        solved_total |= info["solved"] & alive
        dead = (reward + venv.step_cost <= 0) & ~info["solved"] & alive
        print(
            f"{t:4d} {int(alive.sum()):7d} {float(solved_total.float().mean()):7.1%} "
            f"{float(info['cell_accuracy'][alive].mean()):9.3f} {float(reward[alive].mean()):12.4f} "
            f"{float(dead.sum() / alive.sum()):6.1%}"
        )
        alive &= ~(term | trunc)
        if not alive.any():
            break


def main(argv: list[str] | None = None) -> None:
    args = cli.parse(Args, argv, description=__doc__)
    t0 = time.perf_counter()
    for tier in sudoku.TIERS:
        run_tier(tier, args.num_envs, args.max_steps, args.seed)
    env = LatentReasoningSudokuEnv(difficulty="medium", pool_size=4, render_mode="rgb_array")
    obs, _ = env.reset(seed=args.seed)
    frames = [env.render()]
    for _ in range(4):
        nxt = sudoku.propagate_step(obs["answer"].astype(np.int8)).astype(np.int64)
        obs, _, term, trunc, _ = env.step(np.concatenate([nxt, [0]]))
        frames.append(env.render())
        if term or trunc:
            break
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "episode.png")
    render.save_episode_png(frames, path)
    print(f"\nsaved one medium episode to {path}; {time.perf_counter() - t0:.1f} s in all")


if __name__ == "__main__":
    main()
