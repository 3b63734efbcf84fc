"""RL over recursion steps, the library below ``train/ppo_recursion.py`` and ``train/expert_iteration.py``.

``rollout`` (episodes of the sampled policy in the batched env), ``advantages`` (GAE,
group-relative), ``update`` (the clipped-ratio and policy-improvement objectives),
``start`` (warm start, initial model, training env), ``controls`` (the measurements and
no-RL controls of the before/after table) and ``loop`` (the run both scripts share).
"""
