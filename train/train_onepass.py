"""Train the one-pass baseline: TRM's network called once per puzzle, on the same data pipeline.

The model is a :class:`trm.model.TRM` with ``n_sup=1, T=1, n=0``: a single call
``y <- f(x + y + z)`` and the answer head, trained with stable-max cross-entropy on
the solution. Same flags and run folder as ``train/train_trm.py`` and ``train/train_dis.py``.

Example: ``python train/train_onepass.py --difficulty medium --minutes 5 --out runs/onepass``.
"""

from train.supervised import main

if __name__ == "__main__":
    main("onepass", __doc__)
