"""Starting checkpoints shipped with the package: ``shipped:NAME`` for an RL script's ``--init-from`` or ``--start``.

The main job (``train/ppo_recursion.py``) runs RL without labels on real 17-clue puzzles. A
label-free run learns only from answers the rules verify, so its start must already solve
some of them with the verified search; a DIS warm start short enough for a 10-minute job
does not (``docs/results/rl.md``). The package therefore ships one start, trained once with
labels on generated puzzles only (no real puzzle, no label RL reads):

* ``shipped:dis_medium`` (``trm/shipped/dis_medium.pt``): DIS on the generated medium tier,
  ``python train/train_dis.py --difficulty medium --steps 1994 --minutes 60 --eval-size 256``
  then :func:`slim`; how it was made and what it scores: ``trm/shipped/README.md``.

A shipped start is a checkpoint without the run's optimizer, generators and live weights: its
``model`` is the run's weight average (``ema`` is empty), beside the network config, the
training settings, the data settings and the hashes of the grids it trained on, so the RL
scripts, their DIS controls and the benchmark read it like the checkpoint it came from. It is
loaded like every checkpoint (``torch.load(weights_only=True)``: never runs code).
"""

from __future__ import annotations

import os
from pathlib import Path

from trm.checkpoint import load_checkpoint, model_weights, save_checkpoint

PREFIX = "shipped:"
FOLDER = Path(__file__).resolve().parent / "shipped"
KEEP = ("kind", "config", "training", "args", "state", "train_grids")


def names() -> list[str]:
    """The shipped starts, by name."""
    return sorted(p.stem for p in FOLDER.glob("*.pt"))


def resolve(spec: str) -> str:
    """``shipped:NAME`` -> the path of that shipped start; any other ``spec`` is returned as it is.

    Raises ``ValueError`` naming the shipped starts when ``NAME`` is not one of them."""
    if not spec.startswith(PREFIX):
        return spec
    name = spec[len(PREFIX):]
    path = FOLDER / f"{name}.pt"
    if not path.is_file():
        raise ValueError(f"no shipped start {spec!r}; the package ships: {', '.join(PREFIX + n for n in names()) or 'none'}")
    return str(path)


def slim(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``checkpoint``'s weight average (its live weights if it keeps no average) with its config,
    training and data settings, counters and trained grid hashes to ``out``: a start to ship. Returns ``out``."""
    ck = load_checkpoint(checkpoint)
    payload = {k: ck[k] for k in KEEP if k in ck}
    payload.update({"model": model_weights(ck), "ema": None})
    save_checkpoint(out, payload)
    return Path(out)
