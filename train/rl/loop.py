"""The run both RL scripts share: set up, start, the update loop on a budget, checkpoints, and the closing table.

A script subclasses :class:`RLRun` with its objective (``iteration`` is one rollout or
search round plus its update, ``extra_payload`` / ``restore_extra`` what it checkpoints
beyond the shared state) and calls :func:`train` with its ``Args``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.recursion_policy import RecursionPolicy
from train import cli
from train.distributed import Dist, all_stop, close, init_distributed, rank_device
from train.held_out import Split, grids_tensor, lineage, split, trained_grids, without_trained
from train.rl.common import RL_KINDS, RLArgs, flat
from train.rl.controls import (
    BackgroundControls,
    SelfTraining,
    dis_continued_control,
    dis_jobs,
    evaluate_policy,
    evaluate_start,
    measure,
    run_quietly,
    table,
    test_rows,
    test_table,
    threshold_at,
)
from train.rl.start import initial_model
from train.run_folder import (
    Budget,
    Cadence,
    Diverged,
    RunFolder,
    RunFolderBusy,
    rng_state,
    run_info,
    same_start,
    seed_everything,
    set_rng_state,
)
from trm.checkpoint import config_mismatch, load_checkpoint
from trm.config import TrainConfig, TRMConfig, configs_from_dict
from trm.ema import EMA
from trm.model import TRM

EVAL_POINT_PUZZLES = 64

class RLRun:
    """What every RL run updates and checkpoints: policy, optimizer, environment, weight average, generators, counters.

    Subclasses set ``kind``, build ``self.opt`` and ``self.venv`` in ``__init__``, and define
    :meth:`iteration`; ``ema_default`` is the weight-average decay when ``--ema-decay`` is -1.
    """

    kind = "rl"

    def __init__(
        self, args: RLArgs, ddp: Dist, device: str, model: TRM, data: Split, training: TrainConfig | None = None,
        ema_default: float = 0.0,
    ) -> None:
        self.args, self.ddp, self.device, self.data = args, ddp, device, data
        self.cfg, self.training = model.cfg, training  # the start's training settings (None from scratch)
        self.policy = RecursionPolicy(model).to(device)
        self.mb_gen = torch.Generator().manual_seed(args.seed)
        local = args.env.num_envs // ddp.world
        self.rows = torch.arange(ddp.rank * local, (ddp.rank + 1) * local, device=device)
        decay = args.ema_decay if args.ema_decay >= 0 else ema_default
        # E_t <- d E_{t-1} + (1 - d) theta_t after every optimizer step (trm.ema.EMA), as DIS evaluates its weights
        self.ema = EMA(self.policy.trm, decay) if decay > 0 else None
        self.trainer: nn.Module = self.policy
        if ddp.world > 1:
            self.trainer = nn.parallel.DistributedDataParallel(self.policy, find_unused_parameters=True)
        self.state = {"update": 0, "env_steps": 0, "train_forward_passes": 0, "wall_seconds": 0.0, "optimizer_steps": 0}
        self.before: dict[str, Any] = {}
        self.lineage = data.train_grids  # the grids trained on, the start's included (set by train())
        self.opt: torch.optim.Optimizer
        self.venv: Any

    @classmethod
    def check_world(cls, args: RLArgs, world: int) -> None:
        """Refuse settings that ``world`` processes cannot share (before anything is created)."""
        if args.env.num_envs % world:
            raise ValueError(f"--num-envs {args.env.num_envs} must divide evenly over {world} processes")

    def iteration(self) -> dict[str, float]:
        """One rollout or search round and its update; returns the logged statistics."""
        raise NotImplementedError

    @property
    def objective(self) -> str:
        """The objective's name, as ``metrics.json`` records it."""
        return self.kind

    def control_lr(self) -> float | None:
        """The constant rate of the labelled DIS control on RL's puzzles (None: the start's final rate)."""
        return None

    def extra_payload(self) -> dict[str, Any]:
        return {}

    def restore_extra(self, ck: dict[str, Any]) -> None:
        pass

    def payload(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "config": self.cfg.to_dict(),
            "training": self.training.to_dict() if self.training is not None else None,
            "model": self.policy.trm.state_dict(),
            "value": self.policy.value.state_dict(),
            "cell_value": self.policy.cell_value.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "rng": rng_state(),
            "env_generator": self.venv.get_rng_state(),
            "minibatch_generator": self.mb_gen.get_state(),
            "state": dict(self.state),
            "args": flat(self.args),
            "before": self.before,
            "train_grids": grids_tensor(self.lineage),
            **self.extra_payload(),
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
        self.state, self.before = {"optimizer_steps": 0, **ck["state"]}, ck["before"]
        self.restore_extra(ck)

    def greedy_model(self) -> TRM:
        """The weights greedy decoding uses: the average when the run keeps one, else the policy's TRM."""
        return self.ema.model if self.ema is not None else self.policy.trm

    def reset_counters(self) -> None:
        self.policy.trm.reset_counter()
        if self.ema is not None:  # the search runs the average
            self.ema.model.reset_counter()

    def count(self, n_steps: int, optimizer_steps: int) -> None:
        """Add one iteration's env steps, optimizer steps and network calls (the models' own counts) to the state."""
        calls = self.policy.trm.net.sample_calls + (self.ema.model.net.sample_calls if self.ema is not None else 0)
        self.state["update"] += 1
        self.state["env_steps"] += n_steps
        self.state["optimizer_steps"] += optimizer_steps
        self.state["train_forward_passes"] += int(self.ddp.sum(torch.tensor(float(calls), device=self.device)).item())


def eval_point(rl: RLRun) -> dict[str, Any]:
    """Greedy, all steps, on the first :data:`EVAL_POINT_PUZZLES` held-out puzzles (labels, where the
    source has them, are read here for evaluation only); the sampling RNG is left untouched."""
    d = rl.data
    p = d.eval_puzzles[:EVAL_POINT_PUZZLES]
    s = None if d.eval_solutions is None else d.eval_solutions[:EVAL_POINT_PUZZLES]
    with torch.random.fork_rng(devices=[]):
        return measure(rl.greedy_model(), p, s, rl.device, False)


def progress_line(u: int, stats: dict[str, float], seconds: float) -> str:
    return (
        f"update {u:4d}  " + (f"return {stats['return']:+.3f}  " if "return" in stats else "")
        + f"solve {stats['solve_rate']:6.1%}  verified {stats['verified']:6.1%}  steps {stats['mean_steps']:4.2f}  "
        f"kl {stats['approx_kl']:.4f}  epochs {stats['epochs']}  {seconds:.0f}s"
    )


def train_loop(run: RunFolder, rl: RLRun, background: BackgroundControls | None = None) -> None:
    """Updates until the budget, ``--updates`` or a stop signal; checkpoints on the cadence; stops at once
    if a control training in the ``background`` failed."""
    args = rl.args
    budget = Budget(args.minutes, args.updates or None, rl.state["wall_seconds"], args.forward_passes)
    cadence = Cadence(args.checkpoint_every)
    while not all_stop(rl.ddp, budget.exhausted(rl.state["update"], rl.state["train_forward_passes"]) or run.stop_requested,
                       rl.device):
        if background is not None:
            background.check()
        stats = rl.iteration()
        rl.state["wall_seconds"] = budget.elapsed()
        u = rl.state["update"]
        for k, v in stats.items():
            run.writer.add_scalar(f"rl/{k}", v, u)
        if run.lead:
            print(progress_line(u, stats, rl.state["wall_seconds"]), flush=True)
        if args.eval_every and u % args.eval_every == 0 and run.lead:
            m = eval_point(rl)
            for k in ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle"):
                run.writer.add_scalar(f"eval/{k}", m[k], u)
        if cadence.due():
            run.save(rl.payload())


def resume_checks(args: RLArgs, ck: dict[str, Any], path: Path, fixed: tuple[str, ...]) -> None:
    """Refuse a ``--resume`` that changes the data or the objective (the options ``fixed``), listing every difference."""
    defaults = flat(type(args)())
    saved = {k: ck["args"].get(k, defaults[k]) for k in fixed}
    current = {k: flat(args)[k] for k in fixed}
    if "init_from" in fixed and same_start(saved["init_from"], current["init_from"]):
        saved["init_from"] = current["init_from"]  # the same file, however the path is spelled
    diff = config_mismatch(saved, current)
    if diff:
        raise ValueError(f"--resume: {path} was trained with other settings: " + "; ".join(diff))


def control_sources(args: RLArgs) -> list[str]:
    """The DIS controls ``--control-data`` asks for: ``start`` (c1), ``rl`` (c4) or both."""
    return [s for s in ("start", "rl") if args.control.control_data in (s, "both")]


def wants_controls(args: RLArgs, ddp: Dist, init: Path | None) -> bool:
    """Whether this run trains DIS controls (``--control-dis``, one process, a start to fine-tune)."""
    return args.control.control_dis and ddp.world == 1 and init is not None


def wants_self_training(args: RLArgs, ddp: Dist, init: Path | None, self_training: SelfTraining | None) -> bool:
    """Whether this run trains the self-training control (``--self-training``, one process, a start to train from)."""
    return args.control.self_training and self_training is not None and ddp.world == 1 and init is not None


def run_controls(run: RunFolder, rl: RLRun, init: Path | None, rl_lr: float | None,
                 background: BackgroundControls | None = None) -> dict[str, Any]:
    """The DIS control rows ``--control-data`` asks for (and c2's, ``self``, when it trained in the background):
    collected from ``background`` when they trained beside RL (``--parallel-controls``), else trained now for
    the passes RL spent."""
    controls: dict[str, Any] = {"start": None, "rl": None, "self": None}
    if background is not None:  # collect stops them itself when the run is stopped
        return {**controls, **background.collect(rl.data, rl.device, lambda: run.stop_requested)}
    if wants_controls(rl.args, rl.ddp, init) and not run.stop_requested:
        for source in control_sources(rl.args):
            passes = rl.state["train_forward_passes"]
            controls[source] = dis_continued_control(init, passes, rl.data, rl.args, rl.device, source, rl_lr)
    return controls


def halt_curve_note(curve: list[dict[str, float]], after: dict[str, Any], best: dict[str, float] | None) -> str:
    """The no-RL threshold at every tau beside the learned halt."""
    points = ", ".join(f"{p['threshold']}: {p['solve_rate']:.1%} at {p['forward_passes_per_puzzle']:.1f}" for p in curve)
    learned = f"learned halt {after['solve_rate']:.1%} at {after['forward_passes_per_puzzle']:.1f} passes; "
    cheapest = (f"the cheapest threshold as good: {best['threshold']} at {best['forward_passes_per_puzzle']:.1f}" if best
                else "no threshold solves as many")
    return f"\nno-RL threshold on the held-out puzzles: {points}\n{learned}{cheapest}"


def finish(run: RunFolder, rl: RLRun, source: str, init: Path | None, rl_lr: float | None = None,
           self_training: SelfTraining | None = None, background: BackgroundControls | None = None) -> dict[str, Any]:
    """Measure after RL, run the controls, write ``metrics.json`` and print the before/after table (rank 0).

    ``self_training(args, init, passes, device)``: the job of the self-training control (c2) that
    ``--self-training`` asks for (both RL scripts pass ``train/expert_iteration.py``'s); it trains
    now for the passes RL spent unless it trained in the ``background``."""
    params = [p.detach().double().sum() for p in rl.policy.parameters()]
    checksum = rl.ddp.sum(sum(params).reshape(1).to(rl.device))
    if not run.lead:
        return {}
    a = rl.args
    after = evaluate_policy(rl.policy, rl.data, a.policy, a.seed, rl.device, rl.greedy_model())
    keys = ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle", "dead_compute_share", "mean_steps")
    metrics = {
        **{k: after["halting"][k] for k in keys},
        **{k: rl.state[k] for k in ("train_forward_passes", "wall_seconds", "env_steps", "optimizer_steps")},
        "updates": rl.state["update"], "objective": rl.objective,
        "reward_mode": a.env.reward_mode, "step_cost": a.env.step_cost, "init": source, "before": rl.before, "after": after,
        "world_size": rl.ddp.world, "param_checksum_mean_over_ranks": float(checksum) / rl.ddp.world,
        "param_checksum_rank0": float(sum(params)), "interrupted": run.stop_requested,
    }
    controls = run_controls(run, rl, init, rl_lr, background)
    beside = background is not None and "self" in background.sources  # then collected with the others
    if wants_self_training(a, rl.ddp, init, self_training) and not beside and not run.stop_requested:
        controls["self"] = run_quietly(self_training(a, init, rl.state["train_forward_passes"], rl.device), rl.data,
                                       rl.device)
    metrics["controls"] = {"threshold_halting": rl.before.get("threshold"), "dis_continued": controls["start"],
                           "dis_on_rl_data": controls["rl"], "self_training": controls["self"]}
    curve = (rl.before.get("threshold") or {}).get("curve")
    if curve:
        metrics["controls"]["threshold_at_learned_solve_rate"] = threshold_at(curve, after["halting"]["solve_rate"])
    if background is not None and rl.state["train_forward_passes"] < a.forward_passes:
        # RL stopped before its budget (the clock, --updates): the background controls trained for more passes
        metrics["controls"]["background_passes_above_rl"] = a.forward_passes - rl.state["train_forward_passes"]
        print(f"note: RL stopped {metrics['controls']['background_passes_above_rl']:,} passes before --forward-passes; "
              "the background controls trained for the full budget", flush=True)
    if a.control.test_set and init is not None and not run.stop_requested:
        metrics["test"] = test_rows(test_row_sources(rl, run, init, controls), a.control.test_set, a.control.test_size,
                                    rl.device)
    metrics["interrupted"] = run.stop_requested  # a stop during the controls or the test table counts too
    run.write_metrics(metrics)
    print(table(rl.before, after, controls["start"], controls["rl"], controls["self"]))
    if curve:
        print(halt_curve_note(curve, after["halting"], metrics["controls"]["threshold_at_learned_solve_rate"]))
    if "test" in metrics:
        print(test_table(metrics["test"]))
    return metrics


CONTROL_ROWS = {"start": "c1: DIS on the start's labelled source", "self": "c2: self-training without search",
                "rl": "c4: DIS on RL's puzzles, labelled"}


def test_row_sources(rl: RLRun, run: RunFolder, init: Path, controls: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rows of the test table: the start, the RL run (its checkpoint just saved) and each control that ran."""
    rows = {"start": {"checkpoint": str(init)},
            "after RL": {"checkpoint": str(run.checkpoint_path), "seconds": rl.state["wall_seconds"],
                         **{k: rl.state[k] for k in ("optimizer_steps", "train_forward_passes")}}}
    rows.update({CONTROL_ROWS[k]: c for k, c in controls.items() if c is not None})
    return rows


def start_training(ck: dict[str, Any]) -> TrainConfig | None:
    """The training settings a checkpoint records (its ``training``, or an older checkpoint's one config)."""
    if ck.get("training") is None and ck["kind"] in RL_KINDS and "lr" not in ck["config"]:
        return None  # an RL run from scratch
    return configs_from_dict(ck["config"], ck.get("training"))[1]


def train(args: RLArgs, run_class: type[RLRun], fixed_on_resume: tuple[str, ...], self_training: SelfTraining | None = None,
          **run_kw: Any) -> dict[str, Any]:
    """Set up, start (resume, ``--init-from``, warm start or scratch), train, measure; returns rank 0's metrics.

    ``run_class(args, ddp, device, model, data, **run_kw)`` is the script's run; a ``--resume``
    must keep the options ``fixed_on_resume``; ``self_training``: see :func:`finish`.
    """
    args.validate()
    ddp = init_distributed(args.device)
    device = rank_device(args.device, ddp)
    run_class.check_world(args, ddp.world)
    with RunFolder(args.out, lead=ddp.rank == 0, fresh=args.overwrite) as run:
        resumed = load_checkpoint(run.checkpoint_path, kind=run_class.kind) if args.resume else None
        if resumed is not None:
            resume_checks(args, resumed, run.checkpoint_path, fixed_on_resume)
        seed_everything(args.seed + ddp.rank)
        data = split(args.difficulty, args.puzzles, seed=args.seed, pool_size=args.pool_size, eval_size=args.eval_size,
                     need_solutions=args.env.reward_mode == "solution", eval_labels=True)
        if resumed is not None:
            model, source = TRM(TRMConfig.from_dict(resumed["config"])).to(device), f"resumed {run.checkpoint_path}"
            warm = Path(args.out) / "warm_dis" / "checkpoint.pt"
            init = Path(args.start.init_from) if args.start.init_from else (warm if warm.is_file() else None)
            training = start_training(resumed)
            start_ck = resumed
        else:
            model, source, init = initial_model(args, ddp, device, exclude=data.eval_grids)
            start_ck = load_checkpoint(init) if init is not None else None
            training = start_training(start_ck) if start_ck is not None else None
        if start_ck is not None:  # the held-out set keeps no grid the start (or its own start) trained on
            data = without_trained(data, trained_grids(start_ck), "start")
        rl = run_class(args, ddp, device, model, data, training, **run_kw)
        rl.lineage = lineage(data, start_ck)
        if resumed is not None:
            rl.restore(resumed)
        else:
            rl.before = evaluate_start(rl.policy, data, args, device)
        info = run_info(rl.cfg.to_dict(), args.seed, device)
        info.update({"args": flat(args), "init": source, "world_size": ddp.world, "data": data.source, "sets": data.record})
        run.write_run(info, resumed=resumed is not None)
        background = None
        if args.control.parallel_controls:
            jobs = []
            if wants_controls(args, ddp, init):
                jobs += dis_jobs(init, args.forward_passes, args, device, control_sources(args), rl.control_lr())
            if wants_self_training(args, ddp, init, self_training):
                jobs.append(self_training(args, init, args.forward_passes, device))
            background = BackgroundControls(jobs, args.forward_passes) if jobs else None
        try:
            train_loop(run, rl, background)
            run.save(rl.payload())
            metrics = finish(run, rl, source, init, rl.control_lr(), self_training, background)
        except Diverged as e:
            raise SystemExit(f"error: training diverged ({e}); stopped, {run.kept()}") from None
        finally:
            if background is not None:
                background.stop()  # nothing left running, whatever ended the run
    close(ddp)
    return metrics


def run_script(main: Callable[[], dict[str, Any]]) -> None:
    """A script's ``__main__``: run ``main``; a bad setting is one line on stderr, an interrupted run exits 130."""
    try:
        m = main()
    except (ValueError, FileNotFoundError, RunFolderBusy) as e:
        cli.input_error(e)
    except OSError as e:  # a full disk (named by trm.checkpoint.atomic_write) or another system error
        raise SystemExit(f"error: {e}") from None
    if m.get("interrupted"):
        raise SystemExit(130)
