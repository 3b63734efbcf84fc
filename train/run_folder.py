"""What every training script shares: the run folder, its lock, checkpoints on a cadence, the budget.

A run folder (``--out``) holds ``run.json`` (full config, seed, package versions,
device, git commit, command line, and one entry per ``--resume``), ``checkpoint.pt``,
TensorBoard events under ``tb/`` and, at the end, ``metrics.json``. Every file is
written to a unique temporary name and renamed (:func:`trm.checkpoint.atomic_write`),
so a stopped run never leaves a half-written checkpoint or table.

One live run per folder: :class:`RunFolder` holds an OS file lock (``fcntl.flock``)
on ``OUT/run.lock`` while it is open; a second run on the same folder stops at once
naming the holder. The OS drops the lock when its process dies, so a crashed run
leaves a folder that the next run can take.

SIGINT and SIGTERM do not kill a run mid-update: :class:`RunFolder` records the
request, the loop finishes its update and stops (``run.stop_requested``), and the
script saves and exits non-zero.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import real_sets, sudoku
from trm.checkpoint import atomic_write, save_checkpoint

PACKAGES = ("torch", "numpy", "gymnasium", "stable-baselines3", "numba")
CHECKPOINT = "checkpoint.pt"
FIRST_CHECKPOINT_SECONDS = 30.0  # the first checkpoint is written this soon, whatever the cadence


@dataclass
class RunArgs:
    """The options every training script takes; a script's ``Args`` extends this and may redeclare defaults."""

    out: str = "runs/run"  # run folder: checkpoint.pt, tb/, run.json, metrics.json
    seed: int = 0  # seeds the data, the model and the held-out split
    device: str = "cpu"  # cpu, cuda or cuda:K
    minutes: float = 3.0  # wall-clock training budget
    resume: bool = False  # continue from OUT/checkpoint.pt with the same settings
    overwrite: bool = False  # start afresh in an OUT that holds a run, deleting its checkpoint, metrics and events
    difficulty: str = "easy"  # generated tier: easy, medium, hard or extreme
    puzzles: str = ""  # sudoku17 or top1465 (their training part), or a puzzle file (held out: its last --eval-size)
    pool_size: int = 4096  # generated training puzzles
    eval_size: int = 256  # held-out puzzles
    checkpoint_every: float = 1.0  # minutes between checkpoints (the first comes within 30 s; 0: every batch)
    forward_passes: int = 0  # stop once the training forward passes (counted by the model) reach this (0: no limit)

    checkpoint_file = CHECKPOINT  # what --resume reads in OUT (a class attribute, not an option)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option and value of the first bad setting; creates nothing."""
        if not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ValueError(f"--minutes must be a finite number above 0, got {self.minutes}")
        if not (math.isfinite(self.checkpoint_every) and self.checkpoint_every >= 0):
            raise ValueError(f"--checkpoint-every must be a finite number of minutes >= 0, got {self.checkpoint_every}")
        for name in ("pool_size", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.puzzles and self.difficulty not in sudoku.TIERS:
            raise ValueError(f"--difficulty must be one of {', '.join(sudoku.TIERS)}, got {self.difficulty!r}")
        if self.puzzles and real_sets.parse_spec(self.puzzles) is None and not Path(self.puzzles).is_file():
            raise ValueError(f"--puzzles: no file {self.puzzles} (and not a collection: {', '.join(real_sets.REAL_SETS)})")
        if not str(self.out).strip():
            raise ValueError("--out must name a folder, got an empty string")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite deletes it: give one of them")
        if self.resume:
            self.check_resumable()
        held = [n for n in (self.checkpoint_file, "run.json", "metrics.json") if (Path(self.out) / n).is_file()]
        if held and not self.resume and not self.overwrite:
            raise ValueError(f"--out {self.out} holds a run ({', '.join(held)}): add --resume to continue it or "
                             "--overwrite to replace it")
        check_seed(self.seed)
        if self.forward_passes < 0:
            raise ValueError(f"--forward-passes must be >= 0 (0: no limit), got {self.forward_passes}")
        for record in ("run.json", "metrics.json"):
            if self.resume and (Path(self.out) / record).is_file():
                read_json(Path(self.out) / record)  # a corrupt one is named now, not after training
        # the pool and held-out puzzles as int64 tensors with their solutions (the env's copies), x4 for working copies
        check_memory((self.pool_size + self.eval_size) * 81 * 8 * 2 * 4, "--pool-size and --eval-size")
        check_device(self.device)
        check_writable(self.out)


    def check_resumable(self) -> None:
        """``--resume`` needs the checkpoint it continues (a script whose run is several folders overrides this)."""
        if not (Path(self.out) / self.checkpoint_file).is_file():
            raise ValueError(f"--resume: no checkpoint at {Path(self.out) / self.checkpoint_file}")


def same_start(saved: str, given: str) -> bool:
    """Whether two ``--init-from`` values name the same checkpoint ("" is none): the same file however the
    path is spelled, or, where one no longer exists, the same absolute path."""
    if not saved or not given:
        return saved == given
    try:
        return os.path.samefile(saved, given)
    except OSError:
        return os.path.abspath(saved) == os.path.abspath(given)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; ``ValueError`` naming the file and line when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None


def check_seed(seed: int, count: int = 1, option: str = "--seed") -> None:
    """Seeds ``seed .. seed + count - 1`` must be what numpy's and torch's generators take: [0, 2**32)."""
    if not (0 <= seed and seed + count - 1 < 2**32):
        raise ValueError(f"{option} must lie in [0, 2**32){' with its --seeds' if count > 1 else ''}, got {seed}")


def device_memory(device: str = "cpu") -> int | None:
    """Bytes of memory of ``device``: the GPU's for cuda, else this machine's RAM (None where unknown)."""
    try:
        d = torch.device(device)
        if d.type == "cuda" and torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(d.index or 0).total_memory)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def check_memory(nbytes: float, what: str, device: str = "cpu") -> None:
    """Refuse, before anything is allocated, settings whose estimated memory exceeds the memory of ``device``."""
    have = device_memory(device)
    if have is not None and nbytes > have:
        raise ValueError(f"{what}: about {nbytes / 2**30:,.0f} GiB of memory needed; {device} has {have / 2**30:,.0f} GiB")


def check_device(device: str) -> None:
    """Raise ``ValueError`` unless ``device`` names a device this machine has."""
    try:
        d = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device: {device!r} is not a device name (cpu, cuda, cuda:K)") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    if d.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: unsupported device type {d.type!r}")
    if d.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: this PyTorch build or machine has no MPS (Apple GPU) support")


def check_writable(out: str) -> None:
    """Raise ``ValueError`` unless the folder ``out`` exists writable or can be created."""
    p = Path(out).absolute()
    if p.exists() and not p.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {probe} is not writable")


class Diverged(RuntimeError):
    """A loss became NaN or infinite (or an RL update's KL exploded); the last good checkpoint is kept."""


class RunFolderBusy(RuntimeError):
    """Another live run holds the folder's lock."""


# ----------------------------------------------------------------------------- what makes a run repeatable


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
    """Python's and the main packages' versions."""
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
    """Write ``text`` to ``path`` through a unique temporary file and a rename."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Indented, key-sorted JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds libraries that use the global state
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states, to store in a checkpoint: tensors and plain types only, so that
    the checkpoint loads with ``torch.load(weights_only=True)``."""
    name, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):  # older checkpoints hold numpy's tuple itself
        n = (n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_finite(value: torch.Tensor | float, where: str) -> None:
    """Raise :class:`Diverged` when a loss is NaN or infinite."""
    v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if not math.isfinite(v):
        raise Diverged(f"loss became {v} {where}")


# ----------------------------------------------------------------------------- budget and cadence


class Budget:
    """A wall-clock budget in minutes, an optional limit on a count (batches, updates) and an optional
    limit on training forward passes (counted by the model; ``passes_limit`` 0: none).

    ``elapsed`` carries the seconds already spent before a ``--resume``.
    """

    def __init__(self, minutes: float, limit: int | None = None, elapsed: float = 0.0, passes_limit: int = 0) -> None:
        self.seconds = minutes * 60
        self.limit = limit
        self.passes_limit = passes_limit
        self.start = time.perf_counter() - elapsed

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self, count: int, passes: int = 0) -> bool:
        return ((self.limit is not None and count >= self.limit) or self.elapsed() >= self.seconds
                or (self.passes_limit > 0 and passes >= self.passes_limit))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (a learning-curve evaluation) is not counted against the budget."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.start += time.perf_counter() - t0


class Cadence:
    """Checkpoints every ``minutes`` of wall clock, the first after at most 30 seconds (0: every call)."""

    def __init__(self, minutes: float, first_seconds: float = FIRST_CHECKPOINT_SECONDS) -> None:
        self.interval = minutes * 60
        self.next_in = min(self.interval, first_seconds)
        self.last = time.perf_counter()

    def due(self) -> bool:
        now = time.perf_counter()
        if now - self.last < self.next_in:
            return False
        self.last, self.next_in = now, self.interval
        return True


# ----------------------------------------------------------------------------- the folder


class RunFolder:
    """A run's folder, locked while open; use as a context manager.

    ``lead=False`` (every rank but 0 of a multi-process run) takes no lock and writes
    nothing. Inside the ``with`` block, SIGINT and SIGTERM set ``stop_requested``
    instead of raising, so the training loop can end its update and save
    (``catch_signals=False`` leaves them alone, for jobs that have nothing to save).
    """

    def __init__(self, out: str | os.PathLike, *, lead: bool = True, catch_signals: bool = True, fresh: bool = False) -> None:
        self.path = Path(out)
        self.fresh = fresh  # replace the run held in the folder: see clear_old
        self.lead = lead
        self.catch_signals = catch_signals
        self.stop_requested = False
        self._lock_fd: int | None = None
        self._created: Path | None = None
        self._writer: Any = None
        self._old_handlers: dict[int, Any] = {}

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def __enter__(self) -> RunFolder:
        if self.lead:
            top = self.path.absolute()  # the outermost folder this run creates (None: it existed)
            while not top.parent.exists():
                top = top.parent
            self._created = None if top.exists() else top
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
        self._catch_signals()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
            if self.stop_requested and getattr(handler, "run_folder_stop", False):
                handler(sig, None)  # a run inside a run (the RL job's warm start): the outer one stops too
        self._old_handlers = {}
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None
        failed = exc[0] is not None and not issubclass(exc[0], (KeyboardInterrupt, RunFolderBusy))  # type: ignore[arg-type]
        if failed and self._created is not None and not self._holds_results():
            self._remove_created()  # a run that stopped on bad input leaves nothing behind

    def _remove_created(self) -> None:
        """Delete the run folder, then each parent this run created while it is empty (another run may use one)."""
        shutil.rmtree(self.path, ignore_errors=True)
        folder = self.path.absolute().parent
        top = self._created
        while top is not None and (folder == top or top in folder.parents):
            try:
                folder.rmdir()  # only an empty folder: a sibling run keeps its parent
            except OSError:
                break
            folder = folder.parent

    def _holds_results(self) -> bool:
        """Whether the folder holds anything a run produced beyond its lock and its TensorBoard events."""
        return any(p.is_file() and p.name != "run.lock" and "tb" not in p.relative_to(self.path).parts[:1]
                   for p in self.path.rglob("*"))

    def _lock(self) -> None:
        fd = os.open(self.path / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            msg = f"{self.path} is in use by another live run ({holder}); wait for it or pick another --out"
            raise RunFolderBusy(msg) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n".encode())
        self._lock_fd = fd

    def _catch_signals(self) -> None:
        if not self.catch_signals or threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum: int, frame: Any) -> None:
            self.stop_requested = True

        request_stop.run_folder_stop = True  # type: ignore[attr-defined]

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, request_stop)

    @property
    def writer(self) -> Any:
        """The TensorBoard writer of ``OUT/tb`` (a no-op writer when not ``lead``)."""
        if self._writer is None:
            if self.lead:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.path / "tb"))
            else:
                self._writer = _NullWriter()
        return self._writer

    def clear_old(self) -> None:
        """With ``fresh`` (``--overwrite``), delete the run the folder held: checkpoint, model, run.json, metrics and
        events. :meth:`write_run` calls it, after the data and the start were built without error, so a bad command
        loses nothing; it runs once."""
        if not (self.lead and self.fresh):
            return
        for name in (CHECKPOINT, "model.zip", "run.json", "metrics.json"):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / "tb", ignore_errors=True)
        self.fresh = False

    def write_run(self, info: dict[str, Any], resumed: bool = False) -> None:
        """``run.json``: on a fresh run ``info``; on a resume the first run's entry, with this one appended to ``resumes``."""
        if not self.lead:
            return
        self.clear_old()
        path = self.path / "run.json"
        if resumed and path.is_file():
            first = read_json(path)
            first.setdefault("resumes", []).append({k: info[k] for k in ("command", "git_commit", "versions", "device")})
            info = first
        atomic_write_json(path, info)

    def save(self, payload: dict[str, Any]) -> None:
        if self.lead:
            save_checkpoint(self.checkpoint_path, payload)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        if self.lead:
            atomic_write_json(self.path / "metrics.json", metrics)

    def kept(self) -> str:
        """What a stopped run leaves: the last good checkpoint, or none yet."""
        p = self.checkpoint_path
        return f"the last good checkpoint {p} is kept" if p.is_file() else "no checkpoint was written yet"


class _NullWriter:
    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass
