"""Latent Reasoning Gym environments. Importing this package registers the ids.

* ``LatentReasoning-Sudoku-v0``: generated ``easy`` puzzles by default;
* ``LatentReasoning-Sudoku-Extreme-v0``: the ``extreme`` tier (puzzles that need guessing).

Both have the batched torch vector env as their ``vector_entry_point``::

    env = gym.make("LatentReasoning-Sudoku-v0")
    venv = gym.make_vec("LatentReasoning-Sudoku-v0", num_envs=4096, device="cuda")
"""

from importlib import metadata

from gymnasium.envs.registration import register, registry

from envs.sudoku_env import LatentReasoningSudokuEnv
from envs.vector_env import LatentReasoningSudokuVectorEnv

__all__ = ["LatentReasoningSudokuEnv", "LatentReasoningSudokuVectorEnv", "__version__"]

try:
    __version__ = metadata.version("latent-reasoning-gym")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

for _id, _kwargs in (
    ("LatentReasoning-Sudoku-v0", {}),
    ("LatentReasoning-Sudoku-Extreme-v0", {"difficulty": "extreme"}),
):
    if _id not in registry:
        register(
            id=_id,
            entry_point="envs.sudoku_env:LatentReasoningSudokuEnv",
            vector_entry_point="envs.vector_env:LatentReasoningSudokuVectorEnv",
            kwargs=_kwargs,
        )
