"""Training throughput of DIS and TRM on this machine: each option as a ratio against a baseline in the same run.

For each scheme (DIS and TRM at their default sizes) the script trains a few batches of
generated puzzles with :func:`train.deep_supervision.train_batch` under every variant and
prints puzzles/s and supervision steps/s (optimizer steps/s), each divided by the
baseline's, measured in the same process. The baseline is the model before the
fidelity fixes (:data:`trm.config.LEGACY`) at the scheme's defaults, so the table shows
both what the fixes cost and what each speed option buys:

* ``defaults``: the current defaults (TRM-code MLP block, prefix tokens, fixed initial state);
* ``threads=1``: one intra-op thread instead of all cores;
* ``batch=32``, ``batch=128``: other batch sizes (per-puzzle throughput);
* ``compile``: ``torch.compile`` of the recursive network ``f``;
* ``no-prefix``, ``no-rounding``: the two fidelity choices that add compute, one at a time;
* ``bf16-autocast``: bfloat16 autocast on the CPU.

Timing: ``--warmup`` batches untimed (compilation happens there), then ``--batches``
timed, repeated ``--repeats`` times; the median is reported. A TRM batch (16 supervision
steps of 21 network calls) takes about a minute on a laptop CPU, so TRM is timed on its
first ``--trm-steps`` supervision steps and its batch time is that per-step time times 16:
the halting head starts at "continue", so no sample leaves the batch early and every step
costs the same.

Usage: ``python train/bench_train.py [--batches 4] [--schemes dis,trm] [--variants ...]``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from envs import sudoku
from train import cli
from train.deep_supervision import make_optimizer, train_batch
from train.run_folder import check_device
from train.supervised import BASE_CONFIGS
from trm.config import LEGACY, LEGACY_TRAINING, TrainConfig, TRMConfig
from trm.ema import EMA
from trm.model import TRM

VARIANT_NAMES = ("defaults", "threads=1", "batch=32", "batch=128", "compile", "bf16-autocast")
VARIANT_NAMES += ("no-prefix", "prefix=16", "no-rounding")


@dataclass
class Args:
    schemes: str = "dis,trm"  # comma-separated schemes to measure
    variants: str = ",".join(VARIANT_NAMES)  # comma-separated variants
    batches: int = 3  # timed batches per repeat
    warmup: int = 1  # untimed batches before timing (torch.compile compiles here)
    repeats: int = 3  # timed repeats; the median is reported
    difficulty: str = "easy"  # tier of the generated puzzles
    seed: int = 0  # puzzle and initialisation seed
    trm_steps: int = 2  # supervision steps per timed TRM batch (its puzzles/s is scaled to the full 16)
    device: str = "cpu"  # device of the model and the batches

    def validate(self) -> None:
        for name in ("batches", "repeats", "trm_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        check_device(self.device)
        unknown = [v for v in self.variants.split(",") if v and v not in VARIANTS]
        if unknown:
            raise ValueError(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
        bad = [s for s in self.schemes.split(",") if s not in ("dis", "trm")]
        if bad:
            raise ValueError(f"--schemes: unknown {bad}; known: dis, trm")


Configs = tuple[TRMConfig, TrainConfig]  # a network and its training settings


@dataclass
class Variant:
    """A config change plus how to run: threads, compile, autocast."""

    config: Callable[[Configs], Configs]
    threads: int | None = None
    compile: bool = False
    autocast: bool = False


OLD_DEFAULTS = {
    "dis": {"layers": 2, "batch_size": 64, "lr": 1e-3, "input_mode": "previous_answer"},
    "trm": {"optimizer": "adamw"},
}


def changed(cfg: Configs, **kw: object) -> Configs:
    """``cfg`` with each setting in ``kw`` replaced in whichever of the two configs has it."""
    model, training = cfg
    names = {f.name for f in fields(TRMConfig)}
    return (replace(model, **{k: v for k, v in kw.items() if k in names}),
            replace(training, **{k: v for k, v in kw.items() if k not in names}))


def legacy(cfg: Configs) -> Configs:
    """The scheme's defaults before this release: :data:`LEGACY` plus the old sizes and optimizer."""
    return changed(cfg, **LEGACY, **LEGACY_TRAINING, **OLD_DEFAULTS[cfg[1].scheme])


VARIANTS: dict[str, Variant] = {
    "baseline": Variant(legacy),
    "defaults": Variant(lambda c: c),
    "threads=1": Variant(lambda c: c, threads=1),
    "batch=32": Variant(lambda c: changed(c, batch_size=32)),
    "batch=128": Variant(lambda c: changed(c, batch_size=128)),
    "compile": Variant(lambda c: c, compile=True),
    "no-prefix": Variant(lambda c: changed(c, prefix_tokens=0)),
    "prefix=16": Variant(lambda c: changed(c, prefix_tokens=16)),
    "layers=2": Variant(lambda c: changed(c, layers=2)),
    "no-rounding": Variant(lambda c: changed(c, inner_multiple=1)),
    "bf16-autocast": Variant(lambda c: c, autocast=True),
}


def compile_blocks(model: TRM) -> None:
    """``torch.compile`` each block of the recursive network ``f`` in place (``nn.Module.compile``).

    Not ``f`` itself: its forward counts the samples it processes in a Python int
    (:class:`trm.model.TinyNet`), which the compiler would guard on and recompile for at every
    call, falling back to eager once it hits its recompile limit. The blocks hold all of ``f``'s
    compute; the count stays in eager Python. Resets the compiler's caches first, so that each
    measurement compiles afresh and :func:`compiled_graphs` counts its graphs only.
    """
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for blk in model.net.blocks:
        blk.compile()


def compiled_graphs() -> int:
    """Graphs ``torch.compile`` has built since the last :func:`compile_blocks` (a few, unless it kept recompiling)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def measure(cfgs: Configs, variant: Variant, puzzles: torch.Tensor, solutions: torch.Tensor, args: Args) -> tuple[float, float]:
    """Median puzzles/s and optimizer steps/s over ``args.repeats`` timings of ``args.batches`` batches on
    ``args.device`` (on cuda each timing waits for the device to finish)."""
    mc, cfg = cfgs
    full = mc.n_sup
    if cfg.scheme == "trm":
        mc = replace(mc, n_sup=min(full, args.trm_steps))
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = TRM(mc).to(device)
    puzzles, solutions = puzzles.to(device), solutions.to(device)
    opt, ema = make_optimizer(cfg, model), EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    if variant.compile:
        compile_blocks(model)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(variant.threads or threads)
    b, step, rates = cfg.batch_size, 0, []
    try:
        for r in range(-1, args.repeats):
            n = args.warmup if r < 0 else args.batches
            sync()
            t0, steps = time.perf_counter(), 0
            for _ in range(n):
                idx = torch.randint(len(puzzles), (b,), generator=gen, device=device)
                # autocast through train_batch's own switch (the trainers' --amp): an outer autocast would be
                # switched off again by train_batch's disabled one, and the forward would run in fp32
                logs = train_batch(model, ema, opt, cfg, puzzles[idx], solutions[idx], gen, step, amp=variant.autocast)
                steps += logs["opt_step"] - step
                step = logs["opt_step"]
            sync()
            dt = time.perf_counter() - t0
            if r >= 0:  # puzzles/s for batches of the full n_sup steps
                rates.append((n * b / dt * mc.n_sup / full, steps / dt))
    finally:
        torch.set_num_threads(threads)
    return statistics.median(p for p, _ in rates), statistics.median(s for _, s in rates)


def main(argv: list[str] | None = None) -> list[dict]:
    args = cli.parse(Args, argv, description=__doc__)
    p, s = sudoku.generate(512, args.difficulty, seed=args.seed)
    puzzles, solutions = torch.as_tensor(p, dtype=torch.long), torch.as_tensor(s, dtype=torch.long)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; baseline = the model before the fidelity fixes")
    print("| scheme | variant | batch | puzzles/s | supervision steps/s | ratio (puzzles/s) vs baseline |")
    print("|---|---|---|---|---|---|")
    for scheme in args.schemes.split(","):
        base_cfg = tuple(make() for make in BASE_CONFIGS[scheme])
        base_rate = None
        for name in ["baseline"] + [v for v in args.variants.split(",") if v]:
            variant = VARIANTS[name]
            cfgs = variant.config(base_cfg)
            cfg = cfgs[1]
            try:
                pps, sps = measure(cfgs, variant, puzzles, solutions, args)
            except Exception as e:  # an option this machine cannot run (e.g. no compiler) is reported, not fatal
                print(f"| {scheme} | {name} | {cfg.batch_size} | failed: {type(e).__name__}: {str(e).splitlines()[0][:80]} | | |")
                continue
            base_rate = base_rate or pps
            rows.append({"scheme": scheme, "variant": name, "batch": cfg.batch_size, "puzzles_per_s": pps, "steps_per_s": sps})
            print(f"| {scheme} | {name} | {cfg.batch_size} | {pps:.1f} | {sps:.2f} | {pps / base_rate:.2f}x |", flush=True)
    return rows


if __name__ == "__main__":
    main()
