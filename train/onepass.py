"""Train the one-pass baseline: TRM's network called once per puzzle, on the same data pipeline.

The model is a :class:`trm.model.TRM` with ``n_sup=1, T=1, n=0``: a single call
``y <- f(x + y + z)`` and the answer head, trained with stable-max cross-entropy on
the solution. Same flags and run folder as ``train/trm.py`` and ``train/dis.py``.

Example: ``python train/onepass.py --difficulty medium --minutes 5 --out runs/onepass``.
"""

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # run as a script: keep train/ from shadowing the top-level packages (and stdlib's dis)

from train.supervised import main  # noqa: E402

if __name__ == "__main__":
    main("onepass", __doc__)
