"""Run folders: what makes a run repeatable, atomic writes, checkpoints that refuse to mismatch.

A run folder holds ``run.json`` (full config, seed, package versions, device, git
commit, command line), ``checkpoint.pt``, TensorBoard events under ``tb/`` and, at
the end, ``metrics.json``. Every file is written to a temporary name and renamed,
so an interrupted run never leaves a half-written checkpoint or table.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

PACKAGES = ("torch", "numpy", "gymnasium", "stable-baselines3", "numba")


def git_commit() -> str:
    """The repository's HEAD commit (with ``+dirty`` when the tree has changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=root, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_info(config: dict[str, Any], seed: int, device: str) -> dict[str, Any]:
    """Everything needed to repeat a run."""
    return {
        "config": config,
        "seed": seed,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "versions": versions(),
        "git_commit": git_commit(),
        "command": sys.argv,
    }


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds libraries that use the global state
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing corrupt files and other kinds.

    ``kind`` names the accepted ``payload["kind"]`` values. Raises ``FileNotFoundError``
    for a missing file and ``ValueError`` naming the problem otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise ValueError(f"checkpoint {path} is corrupt or not a checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(payload, dict) or "kind" not in payload:
        raise ValueError(f"checkpoint {path} is not a Latent Reasoning Gym checkpoint (no 'kind' entry)")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and payload["kind"] not in kinds:
        raise ValueError(f"checkpoint {path} holds a {payload['kind']!r} model; expected {' or '.join(kinds)}")
    return payload


def config_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: saved -> current`` for every field whose value differs."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
