"""stable-baselines3 PPO (``MultiInputPolicy``) on LatentReasoning-Sudoku-v0: the off-the-shelf baseline.

The policy sees the puzzle, the current answer and the step, and outputs the whole
``MultiDiscrete([10] * 81 + [2])`` action; it has no latent state across steps. Same
budget flags as the other trainers; saves ``OUT/model.zip`` on the checkpoint cadence
and at the end (loadable by the ``sb3_ppo`` agent, and by ``--resume``), and a
``metrics.json`` measured on held-out puzzles through the same episode runner as
every other agent.

Example: ``python train/sb3_ppo.py --difficulty easy --minutes 5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agents.runner import run_episodes, summarize
from agents.sb3_agent import SB3Agent
from envs.vector_env import LatentReasoningSudokuVectorEnv
from train import cli
from train.held_out import Split, split
from train.run_folder import Budget, Cadence, RunArgs, RunFolder, RunFolderBusy, read_json, run_info, seed_everything
from trm.checkpoint import atomic_write, config_mismatch

FIXED_ON_RESUME = ("seed", "difficulty", "puzzles", "pool_size", "eval_size", "num_envs", "max_steps", "step_cost",
                   "reward_mode")


@dataclass
class Args(RunArgs):
    out: str = "runs/sb3_ppo"  # run folder: model.zip, tb/, run.json, metrics.json
    timesteps: int = 10**9  # env-step budget (the clock usually stops first)
    pool_size: int = 2048  # generated training puzzles
    num_envs: int = 8  # environments of the batched env SB3 steps together
    max_steps: int = 6  # steps per episode (the policy's step observation has max_steps + 1 values)
    step_cost: float = 0.02  # reward paid per step
    reward_mode: Literal["solution", "verifier"] = "solution"  # the env's reward
    trust_sb3: bool = False  # --resume reads OUT/model.zip, whose pickles can run code: only for a folder you made

    checkpoint_file = "model.zip"

    def validate(self) -> None:
        super().validate()
        if self.resume and not self.trust_sb3:
            raise ValueError("--resume reads a stable-baselines3 model.zip, whose pickles can run code when read; "
                             "add --trust-sb3 if you made this run folder yourself")
        for name in ("timesteps", "num_envs", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.resume:
            self.check_same_run()

    def check_same_run(self) -> None:
        """``--resume`` continues the run in OUT: its data and environment settings must be the ones it started with."""
        path = Path(self.out) / "run.json"
        if not path.is_file():
            raise ValueError(f"--resume: {path} is missing, so the run's settings cannot be checked")
        saved = (read_json(path).get("config") or {}).get("sb3_ppo")
        if not isinstance(saved, dict):
            raise ValueError(f"--resume: {path} is not the record of a train/sb3_ppo.py run")
        diff = config_mismatch({k: saved.get(k) for k in FIXED_ON_RESUME}, {k: getattr(self, k) for k in FIXED_ON_RESUME})
        if diff:
            raise ValueError(f"--resume: {self.out} was trained with other settings: " + "; ".join(diff))


def save_model(model: Any, path: Path) -> None:
    """``model.save`` through a unique temporary name (SB3 appends ``.zip`` to names without it)."""

    def write(tmp: Path) -> None:
        staged = tmp.with_suffix(".zip")
        try:
            model.save(staged)
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)

    atomic_write(path, write)


def make_model(args: Args, data: Split, run: RunFolder) -> Any:
    """A fresh PPO, or the one in ``OUT/model.zip`` with ``--resume``, on the batched env of the training pool
    (through :class:`envs.sb3_vec_env.SB3VecEnv`, with SB3's episode monitor)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.sb3_vec_env import SB3VecEnv  # imports stable-baselines3: only when a model is built

    env = LatentReasoningSudokuVectorEnv(num_envs=args.num_envs, pool=data.train, augment=True, max_steps=args.max_steps,
                                         step_cost=args.step_cost, reward_mode=args.reward_mode)
    venv = VecMonitor(SB3VecEnv(env))
    venv.seed(args.seed)
    if args.resume:
        model = PPO.load(run.path / "model.zip", env=venv, device=args.device)
    else:
        model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=128, seed=args.seed, device=args.device, verbose=0)
    model.set_logger(configure(str(run.path / "tb"), ["tensorboard"]))
    return model


def learn(model: Any, args: Args, run: RunFolder) -> float:
    """Train until the clock, the env-step budget or a stop signal; save on the cadence. Returns wall seconds."""
    from stable_baselines3.common.callbacks import BaseCallback

    budget, cadence = Budget(args.minutes), Cadence(args.checkpoint_every)

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            if cadence.due():
                save_model(self.model, run.path / "model.zip")
            return not (budget.exhausted(0) or run.stop_requested)

    model.learn(total_timesteps=args.timesteps, callback=Stop(), progress_bar=False, reset_num_timesteps=not args.resume)
    return budget.elapsed()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = cli.parse(Args, argv, description=__doc__)
    seed_everything(args.seed)
    with RunFolder(args.out, fresh=args.overwrite) as run:
        data = split(args.difficulty, args.puzzles, seed=args.seed, pool_size=args.pool_size, eval_size=args.eval_size)
        run.clear_old()  # --overwrite: the model and its events are written from here on
        model = make_model(args, data, run)
        # recorded before training, so that a run that crashes after its first model.zip can be resumed (and checked)
        run.write_run(run_info({"sb3_ppo": vars(args)}, args.seed, args.device), resumed=args.resume)
        wall = learn(model, args, run)
        save_model(model, run.path / "model.zip")
        agent = SB3Agent.from_file(str(run.path / "model.zip"), device=args.device, trust=True)  # written just now
        res = summarize(run_episodes(agent, data.eval_puzzles, data.eval_solutions, max_steps=args.max_steps))
        keys = ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle", "mean_steps", "dead_compute_share")
        metrics = {
            **{k: res[k] for k in keys},
            "train_forward_passes": int(model.num_timesteps),
            "train_forward_passes_note": "one policy pass per env step collected (optimisation passes not counted)",
            "wall_seconds": wall,
            "env_steps": int(model.num_timesteps),
            "interrupted": run.stop_requested,
        }
        run.write_metrics(metrics)
    print(
        f"sb3_ppo: solve rate {metrics['solve_rate']:.1%}  cell accuracy {metrics['cell_accuracy']:.3f}  "
        f"env steps {metrics['env_steps']:,}  wall {wall:.0f}s"
    )
    return metrics


if __name__ == "__main__":
    try:
        m = main()
    except (ValueError, FileNotFoundError, RunFolderBusy) as e:
        cli.input_error(e)
    except OSError as e:  # a full disk (named by trm.checkpoint.atomic_write) or another system error
        raise SystemExit(f"error: {e}") from None
    if m["interrupted"]:
        raise SystemExit(130)
