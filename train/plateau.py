"""When a learning curve has flattened: the rule behind the trainers' ``--plateau``."""

from __future__ import annotations

from typing import Any

PLATEAU_POINTS = 8  # curve points a run needs before --plateau may stop it


def plateaued(curve: list[dict[str, Any]], points: float, min_points: int = PLATEAU_POINTS) -> bool:
    """Whether a learning curve has flattened: over the last quarter of the run (in training forward
    passes), neither the best held-out solve rate nor the best cell accuracy rose by ``points``
    percentage points or more. With ``P`` the passes at the last point and ``best_x(p)`` the best of
    metric ``x`` over the points at or before ``p``:

    ``plateau  <=>  max_x (best_x(P) - best_x(3P/4)) * 100 < points``.

    Cell accuracy is in the rule so that a run still at 0% solved but learning cells is not called
    flat. Needs at least ``min_points`` points, one of them at or before ``3P/4``.
    """
    if len(curve) < min_points:
        return False
    quarter = 0.75 * curve[-1]["train_forward_passes"]
    before = [c for c in curve if c["train_forward_passes"] <= quarter]
    if not before:
        return False
    gains = [max(c[k] for c in curve) - max(c[k] for c in before) for k in ("solve_rate", "cell_accuracy")]
    return max(gains) * 100 < points
