"""stable-baselines3 PPO (``MultiInputPolicy``) on LatentReasoning-Sudoku-v0: the off-the-shelf baseline.

The policy sees the puzzle, the current answer and the step, and outputs the whole
``MultiDiscrete([10] * 81 + [2])`` action; it has no latent state across steps. Same
budget flags as the other trainers; saves ``OUT/model.zip`` (loadable by the
``sb3_ppo`` agent) and a ``metrics.json`` measured on held-out puzzles through the
same episode runner as every other agent.

Example: ``python train/sb3_ppo.py --difficulty easy --minutes 5``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep train/ from shadowing the top-level packages (and stdlib's dis)

import argparse
import time
from typing import Any

from agents.runner import run_episodes, summarize
from agents.sb3_agent import SB3Agent
from envs import sudoku
from envs.puzzle_pool import PuzzlePool, make_pool
from envs.sudoku_env import LatentReasoningSudokuEnv
from train.run import atomic_write_json, run_info, seed_everything


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="runs/sb3_ppo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--timesteps", type=int, default=10**9, help="env-step budget (the clock usually stops first)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/model.zip")
    ap.add_argument("--difficulty", default="easy", choices=sorted(sudoku.TIERS))
    ap.add_argument("--puzzles", default=None)
    ap.add_argument("--pool-size", type=int, default=2048)
    ap.add_argument("--eval-size", type=int, default=256)
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--step-cost", type=float, default=0.02)
    ap.add_argument("--reward-mode", default="solution", choices=["solution", "verifier"])
    args = ap.parse_args(argv)
    seed_everything(args.seed)
    out = Path(args.out)
    model_path = out / "model.zip"
    if args.resume and not model_path.is_file():
        raise SystemExit(f"error: --resume: no model at {model_path}")
    if args.puzzles:
        pool = make_pool(None, args.puzzles, need_solutions=True, pool_size=0, pool_seed=0)
        k = len(pool) - args.eval_size
        train_pool = PuzzlePool(pool.puzzles[:k], pool.solutions[:k], pool.source)
        eval_p, eval_s = pool.puzzles[k:], pool.solutions[k:]
    else:
        p, s = sudoku.generate(args.pool_size, args.difficulty, seed=args.seed)
        train_pool = PuzzlePool(p, s, f"generated:{args.difficulty}")
        eval_p, eval_s = sudoku.generate(args.eval_size, args.difficulty, seed=args.seed + 1_000_003)
    env_kw = {"pool": train_pool, "augment": True, "max_steps": args.max_steps, "step_cost": args.step_cost}
    env_kw["reward_mode"] = args.reward_mode
    venv = make_vec_env(LatentReasoningSudokuEnv, n_envs=args.num_envs, seed=args.seed, env_kwargs=env_kw)
    out.mkdir(parents=True, exist_ok=True)
    if args.resume:
        model = PPO.load(model_path, env=venv, device=args.device)
    else:
        model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=128, seed=args.seed, device=args.device, verbose=0)
        model.set_logger(
            __import__("stable_baselines3.common.logger", fromlist=["configure"]).configure(str(out / "tb"), ["tensorboard"])
        )

    class Budget(BaseCallback):
        def __init__(self, seconds: float) -> None:
            super().__init__()
            self.deadline = time.perf_counter() + seconds

        def _on_step(self) -> bool:
            return time.perf_counter() < self.deadline

    t0 = time.perf_counter()
    model.learn(
        total_timesteps=args.timesteps,
        callback=Budget(args.minutes * 60),
        progress_bar=False,
        reset_num_timesteps=not args.resume,
    )
    wall = time.perf_counter() - t0
    tmp = out / "model.tmp.zip"
    model.save(tmp)
    tmp.replace(model_path)
    agent = SB3Agent.from_file(str(model_path), device=args.device)
    res = summarize(run_episodes(agent, eval_p, eval_s, max_steps=args.max_steps))
    metrics = {
        **{k: res[k] for k in ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle", "mean_steps", "dead_compute_share")},
        "train_forward_passes": int(model.num_timesteps),
        "train_forward_passes_note": "one policy pass per env step collected (optimisation passes not counted)",
        "wall_seconds": wall,
        "env_steps": int(model.num_timesteps),
    }
    info = run_info({"sb3_ppo": vars(args)}, args.seed, args.device)
    atomic_write_json(out / "run.json", info)
    atomic_write_json(out / "metrics.json", metrics)
    print(
        f"sb3_ppo: solve rate {metrics['solve_rate']:.1%}  cell accuracy {metrics['cell_accuracy']:.3f}  "
        f"env steps {metrics['env_steps']:,}  wall {wall:.0f}s"
    )
    return metrics


if __name__ == "__main__":
    main()
