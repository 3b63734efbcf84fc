"""Train TRM deep supervision and DIS on the same puzzles, seed and wall-clock budget; print one table.

Both runs draw the same generated (or file) training pool and the same held-out
set (same ``--seed``), get the same ``--minutes`` and are measured by the same
evaluation: exact and cell accuracy on held-out puzzles, inference forward passes per
puzzle (counted by the model), training forward passes and wall time. Writes
``OUT/trm``, ``OUT/dis`` (full run folders) and ``OUT/compare.md`` / ``compare.json``.

Example: ``python train/compare_supervision.py --difficulty medium --minutes 20``.
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep train/ from shadowing the top-level packages (and stdlib's dis)


import argparse

from train.run import atomic_write_json, atomic_write_text  # noqa: E402
from train.supervised import TrainingDiverged, train  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--minutes", type=float, default=2.0, help="wall-clock budget per method")
    ap.add_argument("--difficulty", default="easy")
    ap.add_argument("--puzzles", default=None)
    ap.add_argument("--eval-size", type=int, default=500)
    ap.add_argument("--pool-size", type=int, default=4096)
    ap.add_argument("--trm-args", default="", help="extra flags for train/trm.py, e.g. '--paper'")
    ap.add_argument("--dis-args", default="", help="extra flags for train/dis.py")
    args = ap.parse_args()
    common = ["--seed", str(args.seed), "--device", args.device, "--minutes", str(args.minutes)]
    common += ["--difficulty", args.difficulty, "--eval-size", str(args.eval_size), "--pool-size", str(args.pool_size)]
    if args.puzzles:
        common += ["--puzzles", args.puzzles]
    out = Path(args.out)
    rows = {}
    try:
        for scheme, extra in (("trm", args.trm_args), ("dis", args.dis_args)):
            print(f"training {scheme} for {args.minutes} min ...", flush=True)
            rows[scheme] = train(scheme, common + ["--out", str(out / scheme)] + extra.split())
    except (ValueError, FileNotFoundError, TrainingDiverged) as e:
        raise SystemExit(f"error: {e}") from None
    text = table(rows)
    print(text)
    data = args.puzzles or f"generated {args.difficulty}"
    atomic_write_text(out / "compare.md", f"Data: {data}, seed {args.seed}, {args.minutes} min per method.\n\n{text}\n")
    atomic_write_json(out / "compare.json", rows)


if __name__ == "__main__":
    main()
