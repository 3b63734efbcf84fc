"""Plot learning curves of supervised runs: held-out solve rate against training wall time, puzzles seen and passes.

Reads the ``curve`` that ``train/train_dis.py`` / ``train_trm.py`` write into
``metrics.json`` (one point per ``--eval-every`` batches plus the end; evaluation time
is not counted in the wall time) and draws one line per run, two panels, into one PNG.

Example::

    python train/plot_curves.py --run "before=runs/before/dis" --run "after=runs/after/dis" --out docs/curves_easy.png
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from train import cli
from train.run_folder import read_json
from trm.checkpoint import atomic_write


@dataclass
class Args:
    run: list[str] = field(default_factory=list)  # LABEL=RUN_FOLDER (repeatable): a run folder with metrics.json
    out: str = "curves.png"  # the PNG to write
    title: str = ""  # figure title
    target: float = 0.0  # draw a horizontal line at this solve rate (0: none)

    def validate(self) -> None:
        if not self.run:
            raise ValueError("give at least one --run LABEL=RUN_FOLDER")
        for spec in self.run:
            label, sep, path = spec.partition("=")
            if not sep or not label or not path:
                raise ValueError(f"--run {spec!r}: expected LABEL=RUN_FOLDER")
            if not (Path(path) / "metrics.json").is_file():
                raise ValueError(f"--run {spec!r}: {Path(path) / 'metrics.json'} does not exist (has the run finished?)")
        if not 0 <= self.target <= 1:
            raise ValueError(f"--target is a solve rate in [0, 1], got {self.target}")


def load_curve(path: Path) -> list[dict]:
    """The learning-curve points of a run folder, in batch order; raises ``ValueError`` if it has none."""
    m = read_json(path / "metrics.json")
    curve = sorted(m.get("curve", []), key=lambda p: p["batch"])
    if not curve:
        raise ValueError(f"{path / 'metrics.json'} holds no learning curve (train with --eval-every N)")
    return curve


def main(argv: list[str] | None = None) -> Path:
    args = cli.parse(Args, argv, description=__doc__)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_n, ax_f) = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    try:
        curves = {spec.partition("=")[0]: load_curve(Path(spec.partition("=")[2])) for spec in args.run}
    except ValueError as e:
        cli.input_error(e)
    for label, curve in curves.items():
        ax_t.plot([p["wall_seconds"] / 60 for p in curve], [p["solve_rate"] for p in curve], marker=".", label=label)
        ax_n.plot([p["puzzles_seen"] for p in curve], [p["solve_rate"] for p in curve], marker=".", label=label)
        ax_f.plot([p["train_forward_passes"] for p in curve], [p["solve_rate"] for p in curve], marker=".", label=label)
    ax_f.set_xscale("log")
    for ax, xl in ((ax_t, "training wall time (min, 2 CPU cores unless noted)"), (ax_n, "puzzles seen"),
                   (ax_f, "training forward passes (counted by the model)")):
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
        if args.target:
            ax.axhline(args.target, color="grey", ls="--", lw=1)
    ax_t.set_ylabel("held-out exact solve rate")
    ax_n.legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=110))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
