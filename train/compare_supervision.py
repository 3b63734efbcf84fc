"""Train TRM deep supervision and DIS on the same puzzles, seed and wall-clock budget; print one table.

Both runs draw the same generated (or file) training pool and the same held-out
set (same ``--seed``, :mod:`train.held_out`), get the same ``--minutes`` and are
measured by the same evaluation: exact and cell accuracy on held-out puzzles,
inference forward passes per puzzle (counted by the model), training forward passes
and wall time. Writes ``OUT/trm``, ``OUT/dis`` (full run folders) and
``OUT/compare.md`` / ``compare.json``.

Example: ``python train/compare_supervision.py --difficulty medium --minutes 20``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from train import cli
from train.run_folder import Diverged, RunArgs, RunFolderBusy, atomic_write_json, atomic_write_text
from train.supervised import train


@dataclass
class Args(RunArgs):
    out: str = "runs/compare"  # folder of the two run folders (OUT/trm, OUT/dis) and the table
    minutes: float = 2.0  # wall-clock budget per method
    eval_size: int = 500  # held-out puzzles
    trm_args: str = ""  # extra flags for train/train_trm.py, e.g. '--paper'
    dis_args: str = ""  # extra flags for train/train_dis.py


def table(rows: dict[str, dict]) -> str:
    head = "| method | solve rate | cell accuracy | forward passes / puzzle | train forward passes | batches | wall s |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['solve_rate']:.1%} | {m['cell_accuracy']:.3f} | {m['forward_passes_per_puzzle']:.1f} | "
            f"{m['train_forward_passes']:,} | {m['batches']} | {m['wall_seconds']:.0f} |"
        )
    if "trm" in rows and "dis" in rows:
        ratio = rows["trm"]["forward_passes_per_puzzle"] / rows["dis"]["forward_passes_per_puzzle"]
        lines.append(f"\nInference forward passes, TRM / DIS: {ratio:.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = cli.parse(Args, argv, description=__doc__)
    common = ["--seed", str(args.seed), "--device", args.device, "--minutes", str(args.minutes)]
    common += ["--difficulty", args.difficulty, "--eval-size", str(args.eval_size), "--pool-size", str(args.pool_size)]
    common += ["--checkpoint-every", str(args.checkpoint_every)] + (["--puzzles", args.puzzles] if args.puzzles else [])
    out = Path(args.out)
    rows = {}
    try:
        for scheme, extra in (("trm", args.trm_args), ("dis", args.dis_args)):
            print(f"training {scheme} for {args.minutes} min ...", flush=True)
            resume = ["--resume"] if args.resume and (out / scheme / "checkpoint.pt").is_file() else []
            rows[scheme] = train(scheme, common + ["--out", str(out / scheme)] + resume + shlex.split(extra))
    except (ValueError, FileNotFoundError, Diverged, RunFolderBusy) as e:
        raise SystemExit(f"error: {e}") from None
    text = table(rows)
    print(text)
    data = args.puzzles or f"generated {args.difficulty}"
    atomic_write_text(out / "compare.md", f"Data: {data}, seed {args.seed}, {args.minutes} min per method.\n\n{text}\n")
    atomic_write_json(out / "compare.json", rows)
    return rows


if __name__ == "__main__":
    main()
