"""The shared run machinery: one live run per folder, atomic writes, the held-out split, the cadence."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from envs import sudoku
from train.held_out import EVAL_SEED_OFFSET, split
from train.run_folder import Cadence, RunFolder, RunFolderBusy
from trm.checkpoint import atomic_write, load_checkpoint, save_checkpoint


def _hold(path: str, ready, release) -> None:
    with RunFolder(path):
        ready.set()
        release.wait(30)


def test_a_second_run_on_a_live_folder_stops_naming_the_holder(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunFolderBusy, match=rf"in use by another live run \(pid {holder.pid}, started"):
            with RunFolder(tmp_path):
                pass
    finally:
        release.set()
        holder.join(30)
    with RunFolder(tmp_path):  # released when the holder ended
        pass


def test_a_crashed_holder_leaves_a_folder_the_next_run_can_take(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(60)
    holder.kill()  # SIGKILL: no clean-up ran
    holder.join(30)
    with RunFolder(tmp_path) as run:
        assert run.path == tmp_path


def test_atomic_writes_leave_no_temporary_files_and_failures_change_nothing(tmp_path):
    target = tmp_path / "checkpoint.pt"
    save_checkpoint(target, {"kind": "dis", "x": 1})
    with pytest.raises(RuntimeError):
        atomic_write(target, lambda tmp: (tmp.write_bytes(b"half"), (_ for _ in ()).throw(RuntimeError("disk full"))))
    assert load_checkpoint(target)["x"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_the_first_checkpoint_is_due_within_30_seconds_then_at_the_cadence():
    c = Cadence(minutes=10, first_seconds=0.05)
    assert not c.due()
    time.sleep(0.06)
    assert c.due() and not c.due()  # the next one waits the full interval
    assert Cadence(minutes=0).due()


def test_the_held_out_split_never_overlaps_training_and_keeps_its_size(tmp_path):
    data = split("easy", "", seed=3, pool_size=64, eval_size=16)
    held = {bytes(p) for p in data.eval_puzzles}
    assert len(data.eval_puzzles) == 16 and not any(bytes(p) in held for p in data.train.puzzles)
    ep, _ = sudoku.generate(16, "easy", seed=3 + EVAL_SEED_OFFSET)
    assert np.array_equal(ep, data.eval_puzzles)
    # a file whose training part repeats a held-out puzzle: the repeat leaves the training pool
    p, s = sudoku.generate(6, "easy", seed=0)
    f = tmp_path / "dup.txt"
    f.write_text("\n".join(sudoku.format(np.concatenate([p[:4], p[5:6], p[4:6]]))) + "\n")
    data = split("easy", str(f), seed=0, pool_size=1, eval_size=2)
    assert len(data.train) == 4 and len(data.eval_puzzles) == 2
    with pytest.raises(ValueError, match="not more than --eval-size 7"):
        split("easy", str(f), seed=0, pool_size=1, eval_size=7)


def test_a_run_that_fails_on_bad_input_removes_only_what_it_created(tmp_path):
    from train.run_folder import RunFolder

    (tmp_path / "kept").mkdir()
    with pytest.raises(ValueError):
        with RunFolder(tmp_path / "new" / "deeper" / "run"):
            # a sibling run appears under a parent this run created: it must survive the clean-up
            (tmp_path / "new" / "other").mkdir()
            (tmp_path / "new" / "other" / "checkpoint.pt").write_text("theirs")
            raise ValueError("bad --puzzles file")
    assert (tmp_path / "new" / "other" / "checkpoint.pt").read_text() == "theirs"
    assert not (tmp_path / "new" / "deeper").exists()
    with pytest.raises(ValueError):
        with RunFolder(tmp_path / "kept" / "run"):
            raise ValueError("bad")
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "run").exists()
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path / "started") as run:
            (run.path / "checkpoint.pt").write_text("progress")
            raise RuntimeError("crash after a checkpoint")
    assert (tmp_path / "started" / "checkpoint.pt").read_text() == "progress"  # results are never removed


def test_a_full_disk_is_named_and_the_previous_checkpoint_kept(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from trm import checkpoint

    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint(path, {"kind": "dis", "n": 1})
    before = path.read_bytes()

    def full(payload, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    with pytest.raises(OSError, match="no space left on the disk of .*checkpoint.pt while writing it; the previous file is kept"):
        checkpoint.save_checkpoint(path, {"kind": "dis", "n": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, 10**12))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # not a full disk: the error as it was
        checkpoint.save_checkpoint(path, {"kind": "dis", "n": 2})
