"""Model checkpoints: written atomically under a unique temporary name, read back with their kind checked.

A checkpoint is a ``dict`` saved by ``torch.save`` with at least ``kind`` (which
trainer wrote it: ``"dis"``, ``"trm"``, ``"onepass"``, ``"ppo_recursion"``),
``config`` (a :class:`trm.config.TRMConfig` as a dict) and ``model`` (the state dict),
and optionally ``ema`` (``{"model": state dict}`` of the averaged weights).

Every write goes to a fresh temporary file in the target's folder and is renamed
over the target (``os.replace``, atomic on POSIX), so a reader never sees a half
written file and two writers never share a temporary name.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trm.config import TRMConfig
from trm.model import TRM

# numpy arrays, as checkpoints written before their random states became tensors hold one (numpy's
# RNG key): rebuilding an array calls no other code, so these join the tensors weights_only allows
_NUMPY_ARRAYS = [np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                 (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct]

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a unique temporary path next to ``path``, then rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was; a write that fails
    on a full disk raises ``OSError(ENOSPC)`` naming ``path``.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # the permissions a plain open() would give, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException as e:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and shutil.disk_usage(path.parent).free <= max(written, 1 << 20):
            # torch reports a full disk as "unexpected pos"; say what happened and what was kept
            kept = "the previous file is kept" if path.exists() else "nothing was written"
            raise OSError(errno.ENOSPC, f"no space left on the disk of {path} while writing it; {kept}") from e
        raise


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """``torch.save(payload)`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing corrupt files and other kinds.

    ``kind`` names the accepted ``payload["kind"]`` values. Raises ``FileNotFoundError``
    for a missing file and ``ValueError`` naming the problem otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # weights_only: tensors, containers and plain types only; a pickle that would import or call
        # anything else is refused, so loading a checkpoint never runs code from it
        with torch.serialization.safe_globals(_NUMPY_ARRAYS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"checkpoint {path} is corrupt or not a checkpoint, or holds objects other than tensors and "
                         f"plain values (refused unread: loading never runs code): {first}") from None
    if not isinstance(payload, dict) or "kind" not in payload:
        raise ValueError(f"checkpoint {path} is not a Latent Reasoning Gym checkpoint (no 'kind' entry)")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and payload["kind"] not in kinds:
        raise ValueError(f"checkpoint {path} holds a {payload['kind']!r} model; expected {' or '.join(kinds)}")
    return payload


def model_weights(payload: dict[str, Any], ema: bool = True) -> dict[str, torch.Tensor]:
    """The averaged (EMA) weights when the checkpoint has them and ``ema``, else the live ones."""
    return payload["ema"]["model"] if ema and payload.get("ema") else payload["model"]


def load_model(path: str | os.PathLike, kind: str | tuple[str, ...] | None = None, ema: bool = True) -> tuple[TRM, dict]:
    """The :class:`TRM` stored in a checkpoint (on the CPU) and the checkpoint itself.

    ``path`` may also be a pretrained folder (:mod:`trm.pretrained`: ``config.json`` +
    ``model.safetensors``); its weights are the ones chosen when it was written, so ``ema`` is
    not used, and the dict returned is its ``config.json`` (with ``kind``, ``config`` and, when
    recorded, ``train_grids``)."""
    if Path(path).is_dir():
        from trm.pretrained import from_pretrained  # it builds on this module

        return from_pretrained(path, kind)
    payload = load_checkpoint(path, kind)
    model = TRM(TRMConfig.from_dict(payload["config"]))
    model.load_state_dict(model_weights(payload, ema))
    return model, payload


def config_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: saved -> current`` for every key whose value differs."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
