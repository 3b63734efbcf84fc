"""Export a training checkpoint as a model to share: ``config.json`` + ``model.safetensors``.

The folder holds the network's config, its weights (the weight average when the checkpoint
has one, unless ``--live``) as safetensors, and the hashes of the solution grids its lineage
trained on (``train_grids.npy``), so that a benchmark of it still drops those puzzles. Nothing
in it can run code when read. The agents, the benchmark, ``search_curve.py`` and
``tier_table.py`` take the folder: ``make_agent("dis", "models/dis")``,
``benchmark.py --checkpoint dis=models/dis``.

Example: ``python train/export_model.py --checkpoint runs/dis/checkpoint.pt --out models/dis``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from train import cli
from train.run_folder import check_writable
from trm.pretrained import export_checkpoint, read_config


@dataclass
class Args:
    checkpoint: str = "runs/dis/checkpoint.pt"  # a checkpoint of train_dis.py, train_trm.py, train_onepass.py or an RL run
    out: str = "models/dis"  # the model folder to write
    live: bool = False  # export the live weights instead of the weight average
    overwrite: bool = False  # replace a model already in OUT

    def validate(self) -> None:
        if not self.out:
            raise ValueError("--out must name a folder")
        if not Path(self.checkpoint).is_file():
            raise ValueError(f"--checkpoint {self.checkpoint}: no such file")
        check_writable(self.out)
        if not self.overwrite and (Path(self.out) / "config.json").exists():
            raise ValueError(f"--out {self.out} already holds a model; add --overwrite to replace it")


def main(argv: list[str] | None = None) -> Path:
    """Parse ``argv``, export the checkpoint; bad input is one line on stderr (exit 2). Returns the folder."""
    args = cli.parse(Args, argv, description=__doc__)
    try:
        out = export_checkpoint(args.checkpoint, args.out, ema=not args.live, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        cli.input_error(e)
    meta = read_config(out)
    print(f"wrote {out}: a {meta['kind']!r} model ({meta['weights']} weights) with config.json and model.safetensors")
    return out


if __name__ == "__main__":
    main()
