"""Models to share: a folder of ``config.json`` and ``model.safetensors``, read without running any code.

A training checkpoint (``checkpoint.pt``) holds the optimizer, random states and the run's
settings, and is read back with ``torch.load(weights_only=True)``. A *pretrained folder*
is what one publishes instead, in the layout the Hugging Face hub uses::

    models/dis/
        config.json         {"format": "latent-reasoning-gym/trm", "format_version": 1, "kind": "dis",
                             "config": {TRMConfig fields}, "weights": "ema" | "live", "package_version": ...}
        model.safetensors   the state dict of :class:`trm.model.TRM` (safetensors: plain tensors, no pickle)
        train_grids.npy     optional: uint64 hashes of the solution grids the model trained on
                            (:func:`envs.canonical.grid_hash`), read with ``allow_pickle=False``

so a benchmark can still drop puzzles the model was trained on. ``save_pretrained`` /
``from_pretrained`` write and read it; :func:`export_checkpoint` turns a checkpoint into one
(``train/export_model.py`` on the command line). The model agents (``make_agent``),
``benchmark.py --checkpoint``, ``search_curve.py`` and ``tier_table.py`` take such a folder
where they take a checkpoint (:func:`trm.checkpoint.load_model`); training (``--init-from``,
``--resume``) reads checkpoints only, which hold the optimizer and the run's settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from envs import __version__
from trm.checkpoint import atomic_write, load_checkpoint, model_weights
from trm.config import TRMConfig
from trm.model import TRM

FORMAT, FORMAT_VERSION = "latent-reasoning-gym/trm", 1
CONFIG, WEIGHTS, GRIDS = "config.json", "model.safetensors", "train_grids.npy"
KINDS = ("trm", "dis", "onepass", "ppo_recursion", "expert_iteration")


def check_model_path(path: str | os.PathLike, option: str = "checkpoint") -> None:
    """Refuse, before any work, a model path that is neither a file nor a readable pretrained folder
    (``ValueError`` naming ``option`` and the path)."""
    p = Path(path)
    if p.is_dir():
        try:
            read_config(p)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"{option} {path}: {e}") from None
    elif not p.is_file():
        raise ValueError(f"{option} {path}: no such file or model folder")


def save_pretrained(
    directory: str | os.PathLike, model: TRM, *, kind: str, weights: str = "live",
    train_grids: np.ndarray | None = None, overwrite: bool = False,
) -> Path:
    """Write ``model`` to ``directory`` as ``config.json`` + ``model.safetensors`` (+ ``train_grids.npy``).

    ``kind`` is the trainer that made it (one of :data:`KINDS`: which agents may load it);
    ``weights`` says which weights these are (``"ema"`` or ``"live"``), for the record;
    ``train_grids`` (uint64 ``(G,)``) the hashes of the grids it trained on. A folder that
    already holds a model is refused unless ``overwrite``; each file is written atomically.
    Returns the folder.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if weights not in ("ema", "live"):
        raise ValueError(f"weights must be 'ema' or 'live', got {weights!r}")
    d = Path(directory)
    if str(directory) == "":
        raise ValueError("the model folder must be named (got an empty path)")
    if d.exists() and not d.is_dir():
        raise FileExistsError(f"{d} exists and is not a folder")
    if not overwrite and any((d / f).exists() for f in (CONFIG, WEIGHTS, GRIDS)):
        raise FileExistsError(f"{d} already holds a model; pass overwrite=True (--overwrite) to replace it")
    d.mkdir(parents=True, exist_ok=True)
    # contiguous copies on the CPU: safetensors stores each tensor once and refuses shared storage
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(d / WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    if train_grids is not None:
        grids = np.ascontiguousarray(train_grids, dtype=np.uint64)
        atomic_write(d / GRIDS, lambda tmp: tmp.write_bytes(_npy_bytes(grids)))
    elif (d / GRIDS).exists():
        (d / GRIDS).unlink()  # an older model's lineage must not describe this one
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "weights": weights,
            "config": asdict(model.cfg), "package_version": __version__}
    atomic_write(d / CONFIG, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
    return d


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The checked ``config.json`` of a pretrained folder; ``ValueError`` naming the file (and line) otherwise."""
    path = Path(directory) / CONFIG
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"model folder {directory} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a pretrained model folder (config.json + model.safetensors)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a Latent Reasoning Gym model config (its 'format' is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    if meta.get("kind") not in KINDS:
        raise ValueError(f"{path}: 'kind' must be one of {KINDS}, got {meta.get('kind')!r}")
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: 'config' must be an object of TRMConfig fields")
    try:
        cfg = TRMConfig.from_dict(meta["config"])
        with torch.device("meta"):  # builds the network's shapes without allocating it
            TRM(cfg)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: bad 'config': {e}") from None
    return meta


def from_pretrained(directory: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> tuple[TRM, dict[str, Any]]:
    """The :class:`TRM` of a pretrained folder (on the CPU, in eval mode) and its ``config.json``.

    The returned dict also holds ``train_grids`` (an int64 tensor viewing the uint64 hashes, as a
    checkpoint stores them) when the folder has them. ``kind`` names the accepted kinds.
    Nothing in the folder is executed: JSON, safetensors and a pickle-free ``.npy``.
    """
    d = Path(directory)
    meta = read_config(d)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and meta["kind"] not in kinds:
        raise ValueError(f"model folder {d} holds a {meta['kind']!r} model; expected {' or '.join(kinds)}")
    if not (d / WEIGHTS).is_file():
        raise FileNotFoundError(f"{d / WEIGHTS} does not exist")
    try:
        state = load_file(str(d / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{d / WEIGHTS} is not a readable safetensors file: {e}") from None
    cfg = TRMConfig.from_dict(meta["config"])
    with torch.device("meta"):  # compare shapes before allocating a network the config may size wrongly
        expected = TRM(cfg).state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} (config: {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        raise ValueError(f"{d / WEIGHTS} does not match {d / CONFIG}: missing {missing[:4]}, unexpected {extra[:4]}, "
                         f"wrong shape {wrong[:4]}")
    model = TRM(cfg)
    model.load_state_dict(state)
    out = dict(meta)
    if (d / GRIDS).is_file():
        try:
            grids = np.load(d / GRIDS, allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise ValueError(f"{d / GRIDS} is not a plain array file: {e}") from None
        if not isinstance(grids, np.ndarray):  # an .npz archive under the .npy name
            raise ValueError(f"{d / GRIDS} is not a plain array file (an archive of several arrays)")
        if grids.dtype != np.uint64 or grids.ndim != 1:
            raise ValueError(f"{d / GRIDS} must hold a 1-D uint64 array of grid hashes, got {grids.dtype} {grids.shape}")
        out["train_grids"] = torch.from_numpy(grids.view(np.int64).copy())
    return model.eval(), out


def export_checkpoint(checkpoint: str | os.PathLike, directory: str | os.PathLike, *, ema: bool = True,
                      overwrite: bool = False) -> Path:
    """Write a training checkpoint's model (its weight average when it has one and ``ema``) and lineage
    as a pretrained folder. Returns the folder."""
    ck = load_checkpoint(checkpoint, KINDS)
    use_ema = bool(ema and ck.get("ema"))
    model = TRM(TRMConfig.from_dict(ck["config"]))
    model.load_state_dict(model_weights(ck, use_ema))
    grids = ck.get("train_grids")
    return save_pretrained(directory, model, kind=ck["kind"], weights="ema" if use_ema else "live", overwrite=overwrite,
                           train_grids=None if grids is None else grids.numpy().view(np.uint64))
