"""Train a Tiny Recursive Model with Deep Improvement Supervision (DIS).

Each of the ``n_sup`` supervision steps (default 6, with T=1 and n=2: 18 network
calls per puzzle) is trained toward its own target on a path from the puzzle to the
solution (``--dis-path linear`` reveals a growing random subset of the blanks,
``rules`` what rounds of singles propagation deduce), the step index is embedded
into the input, and there is no halting head. From the second step on, the input is
the answer the model wrote at the step before, with the givens as tokens of their own
(``--input-mode answer_and_givens``; ``previous_answer`` is the released code's plain
previous answer, ``puzzle`` feeds the puzzle at every step). The defaults are sized for a
2-core CPU (``docs/deviations.md``: two layers, targets from rounds of singles
(``--dis-path rules``), batch 16, lr 2e-3 with a cosine to 5%).
Flags for the released code's other choices: ``--step-weights uniform|increasing``,
``--optimizer adamw|adam_atan2``, ``--lr-min-ratio 1`` (constant); ``run.json`` records
which were used.

Example: ``python train/train_dis.py --difficulty medium --minutes 5 --out runs/dis``.
"""

from train.supervised import main

if __name__ == "__main__":
    main("dis", __doc__)
