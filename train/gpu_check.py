"""The GPU check: what this project does on one accelerator, in one call of about 8 minutes, as one JSON.

Parts (``--skip`` leaves any out), each timed on ``--device`` and written to
``--out``/``gpu_check.json`` as soon as it finishes, so a check stopped midway keeps what it
measured; a part that fails records its error and the check goes on:

* ``env``: vector-env steps/s at ``--env-sizes`` environments (random actions drawn
  before timing; :func:`train.bench_env.steps_per_second`);
* ``train``: DIS and TRM training throughput at ``--hidden`` (the paper's width, 512) and
  ``--batch-size`` (the paper's global batch, 768), in fp32, under bfloat16 autocast (the
  trainers' ``--amp``) and with ``torch.compile`` of the recursive network's blocks
  (:func:`train.bench_train.measure`; puzzles/s, optimizer steps/s and training forward
  passes/s, the passes counted by the model; the graphs compiled and, on cuda, peak memory);
* ``search``: the verified search's trajectories/s (``--search-k`` trajectories for each of
  ``--search-puzzles`` puzzles, an untrained DIS network at ``--hidden``, so no trajectory stops
  early: the worst case), with its forward passes counted by the model;
* ``ddp``: one step of ``DistributedDataParallel`` with one rank (NCCL on cuda, gloo on the CPU):
  forward, backward with the gradient all-reduce, optimizer step.

The check starts no part once ``--max-minutes`` (6) have passed and records the rest as
skipped; a part started before then runs to its end (the longest, ``train`` with its compiles,
is expected to fit the two minutes left of an 8-minute call).
On a CPU the same script runs at tiny sizes (the test suite does that); the figures mean
something only on the device they were measured on.

Example: ``python train/gpu_check.py --device cuda --out runs/gpu_check``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.runner import run_episodes
from agents.search_agent import SearchAgent
from envs import sudoku
from envs.puzzle_pool import PuzzlePool
from envs.vector_env import LatentReasoningSudokuVectorEnv
from train import bench_train, cli
from train.bench_env import steps_per_second
from train.run_folder import atomic_write_json, check_device, check_writable, run_info
from trm.config import TrainConfig, TRMConfig
from trm.model import TRM

PARTS = ("env", "train", "search", "ddp")
PRECISIONS = ("fp32", "bf16", "compile")


@dataclass
class Args:
    device: str = "cuda"  # the accelerator to check (cpu runs the same code, for tests)
    out: str = "runs/gpu_check"  # folder of gpu_check.json
    max_minutes: float = 6.0  # no part starts after this much wall clock (a part started in time may run on: keep 2 minutes)
    skip: str = ""  # comma-separated parts to leave out: env, train, search, ddp
    env_sizes: str = "16384,65536"  # numbers of environments of the vector-env measurement
    env_seconds: float = 5.0  # timed seconds per vector-env size
    hidden: int = 512  # width D of the trained and searched networks (the paper's)
    batch_size: int = 768  # puzzles per training batch (the paper's global batch)
    precisions: str = ",".join(PRECISIONS)  # training variants: fp32, bf16 (autocast), compile (torch.compile of f)
    batches: int = 2  # timed training batches per repeat (TRM: of --trm-steps supervision steps)
    repeats: int = 2  # timed repeats per training variant (median reported)
    trm_steps: int = 2  # TRM supervision steps per timed batch (its puzzles/s scaled to all 16)
    search_puzzles: int = 256  # puzzles of the search measurement
    search_k: int = 16  # trajectories per puzzle

    def validate(self) -> None:
        check_device(self.device)
        check_writable(self.out)
        unknown = [p for p in self.skip.split(",") if p and p not in PARTS]
        if unknown:
            raise ValueError(f"--skip: unknown part {unknown}; parts: {', '.join(PARTS)}")
        bad = [p for p in self.precisions.split(",") if p and p not in PRECISIONS]
        if bad:
            raise ValueError(f"--precisions: unknown {bad}; known: {', '.join(PRECISIONS)}")
        try:
            sizes = self.size_list()
        except ValueError:
            raise ValueError(f"--env-sizes must be comma-separated integers, got {self.env_sizes!r}") from None
        if not sizes or min(sizes) < 1:
            raise ValueError(f"--env-sizes must list integers >= 1, got {self.env_sizes!r}")
        for name in ("hidden", "batch_size", "batches", "repeats", "trm_steps", "search_puzzles", "search_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.hidden % 8:
            raise ValueError(f"--hidden must be a multiple of 8, got {self.hidden}")
        if not (self.max_minutes > 0 and self.env_seconds > 0):
            raise ValueError("--max-minutes and --env-seconds must be above 0")

    def size_list(self) -> list[int]:
        return [int(n) for n in self.env_sizes.split(",") if n]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_env(args: Args, device: torch.device) -> list[dict[str, Any]]:
    """Env-steps/s of the batched environment at each size (random answers, 5% halts)."""
    p, s = sudoku.generate(512, "medium", seed=5)
    pool, rng, rows = PuzzlePool(p, s, "gpu_check"), np.random.default_rng(0), []
    for n in args.size_list():
        acts = rng.integers(0, 10, size=(4, n, 82))
        acts[..., 81] = rng.random((4, n)) < 0.05
        venv = LatentReasoningSudokuVectorEnv(num_envs=n, pool=pool, device=str(device))
        venv.reset(seed=0)
        t_acts = [torch.as_tensor(a, device=device) for a in acts]
        venv.step(t_acts[0])

        def step(a: torch.Tensor, venv: LatentReasoningSudokuVectorEnv = venv) -> None:
            venv.step(a)
            sync(device)

        rows.append({"num_envs": n, "env_steps_per_s": steps_per_second(step, t_acts, args.env_seconds) * n})
    return rows


def check_train(args: Args, device: torch.device) -> list[dict[str, Any]]:
    """Puzzles/s, optimizer steps/s and training forward passes/s of DIS and TRM at ``--hidden``, per precision."""
    p, s = sudoku.generate(max(args.batch_size, 64), "easy", seed=0)
    puzzles, solutions = torch.as_tensor(p, dtype=torch.long), torch.as_tensor(s, dtype=torch.long)
    bench = bench_train.Args(batches=args.batches, warmup=1, repeats=args.repeats, trm_steps=args.trm_steps, device=str(device))
    schemes = {"dis": (TRMConfig.dis(hidden=args.hidden), TrainConfig.dis(batch_size=args.batch_size)),
               "trm": (TRMConfig.paper_sudoku(hidden=args.hidden), TrainConfig.paper_sudoku(batch_size=args.batch_size))}
    variants = {"fp32": bench_train.Variant(lambda c: c), "bf16": bench_train.Variant(lambda c: c, autocast=True),
                "compile": bench_train.Variant(lambda c: c, compile=True)}
    rows = []
    for scheme, cfgs in schemes.items():
        per_puzzle: float | None = None  # network calls of one puzzle's schedule, counted once per scheme
        for name in [v for v in args.precisions.split(",") if v]:
            row: dict[str, Any] = {"scheme": scheme, "precision": name, "hidden": args.hidden, "batch": args.batch_size}
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                if per_puzzle is None:
                    per_puzzle = counted_passes(cfgs[0], device)
                pps, sps = bench_train.measure(cfgs, variants[name], puzzles, solutions, bench)
                row.update(puzzles_per_s=pps, optimizer_steps_per_s=sps, train_forward_passes_per_s=pps * per_puzzle)
                if name == "compile":  # a handful; dozens would mean it kept recompiling
                    row["compiled_graphs"] = bench_train.compiled_graphs()
                if device.type == "cuda":
                    row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            except Exception as e:  # a variant this machine cannot run (no compiler, no bf16) is recorded, not fatal
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            rows.append(row)
    return rows


def counted_passes(cfg: TRMConfig, device: torch.device) -> float:
    """Network calls per puzzle of one full supervision schedule (every step, no halting), counted by the
    model on a 2-puzzle batch: training runs the same calls, so passes/s = puzzles/s times this."""
    model = TRM(cfg).to(device)
    tokens = torch.zeros(2, cfg.seq_len, dtype=torch.long, device=device)
    y, z = model.initial_state(2)
    model.reset_counter()
    with torch.no_grad():
        for s in range(1, cfg.n_sup + 1):
            out = model.step(tokens, y, z, step=s if cfg.step_embedding else None)
            y, z = out.y, out.z
    return model.net.sample_calls / 2


def check_search(args: Args, device: torch.device) -> dict[str, Any]:
    """Trajectories/s and forward passes/s of the verified search (untrained DIS network: every trajectory runs to the end)."""
    torch.manual_seed(0)
    model = TRM(TRMConfig.dis(hidden=args.hidden)).to(device)
    p, s = sudoku.generate(args.search_puzzles, "hard", seed=3)
    agent = SearchAgent(model, k=args.search_k)
    run_episodes(agent, p[:2], s[:2], device=str(device), max_steps=agent.max_steps)  # warm-up
    model.reset_counter()
    sync(device)
    t0 = time.perf_counter()
    res = run_episodes(agent, p, s, device=str(device), max_steps=agent.max_steps)
    sync(device)
    dt = time.perf_counter() - t0
    n = len(p) * args.search_k
    return {"puzzles": len(p), "k": args.search_k, "hidden": args.hidden, "seconds": dt, "trajectories_per_s": n / dt,
            "forward_passes_per_s": float(res["forward_passes"].sum()) / dt, "solved": float(res["solved"].mean())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StepLogits(torch.nn.Module):
    """One supervision step of a TRM as a module whose forward returns the logits ``(B, 81, 10)`` (what DDP wraps)."""

    def __init__(self, model: TRM) -> None:
        super().__init__()
        self.trm = model

    def forward(self, tokens: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.trm.step(tokens, y, z, step=1 if self.trm.cfg.step_embedding else None).logits


def check_ddp(args: Args, device: torch.device) -> dict[str, Any]:
    """One DistributedDataParallel step with one rank in this process (NCCL on cuda, gloo on the CPU):
    forward through the wrapper, backward (DDP's gradient all-reduce), optimizer step, one explicit all-reduce."""
    import torch.distributed as dist

    if dist.is_initialized():
        raise RuntimeError("a process group is already initialised in this process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    t0 = time.perf_counter()
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        model = TRM(TRMConfig.dis(hidden=min(args.hidden, 64))).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(StepLogits(model), find_unused_parameters=True,  # the Q head
                                                        device_ids=[device.index or 0] if device.type == "cuda" else None)
        opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
        p, s = sudoku.generate(8, "easy", seed=0)
        puzzle = torch.as_tensor(p, dtype=torch.long, device=device)
        y, z = model.initial_state(len(p))
        logits = ddp(model.input_tokens(puzzle, torch.zeros_like(puzzle)), y, z)
        target = torch.as_tensor(s, dtype=torch.long, device=device).reshape(-1)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        check = torch.ones(1, device=device)
        dist.all_reduce(check)
        sync(device)
        return {"backend": backend, "world_size": dist.get_world_size(), "loss": loss.item(), "all_reduce_of_one": float(check),
                "seconds": time.perf_counter() - t0}
    finally:
        dist.destroy_process_group()


CHECKS: dict[str, Callable[[Args, torch.device], Any]] = {"env": check_env, "train": check_train, "search": check_search,
                                                          "ddp": check_ddp}


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                            "float32_matmul_precision": torch.get_float32_matmul_precision()}  # "highest": fp32 is strict fp32
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}",
                    cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the parts in order within ``--max-minutes``; returns (and writes) the JSON payload."""
    args = cli.parse(Args, argv, description=__doc__)
    device = torch.device(args.device)
    skip = {p for p in args.skip.split(",") if p}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"device": device_info(device), "settings": vars(args).copy(), "parts": {},
                               "run": run_info({"gpu_check": vars(args).copy()}, 0, args.device)}
    p, _ = sudoku.generate(2, "easy", seed=0)  # compile (or load) the numba kernels before any timing
    sudoku.propagate_step(p.astype(np.int8))
    t0 = time.perf_counter()
    for part in PARTS:
        if part in skip:
            payload["parts"][part] = {"skipped": "--skip"}
        elif time.perf_counter() - t0 > args.max_minutes * 60:
            payload["parts"][part] = {"skipped": f"--max-minutes {args.max_minutes} had passed"}
        else:
            start = time.perf_counter()
            try:
                result = CHECKS[part](args, device)
                payload["parts"][part] = {"result": result, "seconds": time.perf_counter() - start}
            except Exception as e:  # one part failing must not cost the others' figures
                payload["parts"][part] = {"error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - start}
            print(f"{part}: {payload['parts'][part]}", flush=True)
        payload["seconds"] = time.perf_counter() - t0
        atomic_write_json(out / "gpu_check.json", payload)
    print(f"wrote {out / 'gpu_check.json'} ({payload['seconds']:.0f} s)")
    return payload


if __name__ == "__main__":
    main()
