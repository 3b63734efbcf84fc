"""Train a Tiny Recursive Model with TRM's deep supervision and learned halting.

Every supervision step is trained on the solution; the Q head learns, with BCE,
whether the decoded answer is exactly right, and in training a sample stops once
it says so (at test time all ``n_sup`` steps run). ``--n-sup``, ``--T``, ``--n`` set
the schedule (``n_sup * T * (n + 1)`` network calls per puzzle when every step
runs); ``--paper`` takes the paper's Sudoku settings (TRM-MLP, D=512, N_sup=16,
T=3, n=6: 336 calls). The CPU default keeps that schedule with D=64.

Example: ``python train/train_trm.py --difficulty medium --minutes 5 --out runs/trm``.
"""

from train.supervised import main

if __name__ == "__main__":
    main("trm", __doc__)
