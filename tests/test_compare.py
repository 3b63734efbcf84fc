"""TRM against DIS (train/compare_supervision.py), seed intervals, learning curves and their plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train import cli, supervised
from train.compare_supervision import Args, at_puzzles, dis_eval_every, rows
from train.stats import seed_interval

REPO = Path(__file__).resolve().parents[1]
TINY = "--hidden 16 --layers 1 --batch-size 8 --warmup-steps 1"
COMPARE_TINY = ["--hidden", "16", "--layers", "1", "--trm-batch-size", "8", "--dis-batch-size", "8"]


def test_seed_interval_is_the_student_t_interval_over_seeds():
    m, lo, hi = seed_interval([0.80, 0.84, 0.88])
    # mean 0.84, s = 0.04, t_{0.975, 2} = 4.303: half-width 4.303 * 0.04 / sqrt(3)
    assert m == pytest.approx(0.84)
    assert hi - m == pytest.approx(4.303 * 0.04 / np.sqrt(3), rel=1e-6) and m - lo == pytest.approx(hi - m)
    assert seed_interval([0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError):
        seed_interval([])


def test_equal_puzzles_seen_takes_the_first_dis_point_past_trms_count():
    curve = [{"batch": b, "puzzles_seen": 32 * b, "solve_rate": b / 100, "wall_seconds": b} for b in (10, 20, 30)]
    assert at_puzzles(curve, 320)["batch"] == 10
    assert at_puzzles(curve, 321)["batch"] == 20
    assert at_puzzles(curve, 10_000)["batch"] == 30  # never reached: the last point
    trm = {"solve_rate": 0.25, "puzzles_seen": 500, "wall_seconds": 60}
    dis = {"solve_rate": 0.5, "puzzles_seen": 960, "wall_seconds": 60, "curve": curve}
    r = rows({0: {"trm": trm, "dis": dis}})
    assert r["equal wall clock"]["diff"] == [pytest.approx(0.25)]
    assert r["equal puzzles seen"]["dis"] == [0.2] and r["equal puzzles seen"]["dis_seen"] == [640]


def test_dis_curve_points_fall_at_trms_puzzle_count_unless_given():
    auto = cli.parse(Args, ["--dis-batch-size", "16"])
    assert dis_eval_every(auto, 352) == 22  # 22 batches of 16 = 352 puzzles: a point exactly at TRM's count
    assert dis_eval_every(auto, 353) == 23  # the first point past it, within one batch
    assert dis_eval_every(auto, 0) == 1
    default_batch = cli.parse(Args, [])
    assert dis_eval_every(default_batch, 1000) == -(-1000 // supervised.parse_args("dis", []).training.batch_size)
    assert dis_eval_every(cli.parse(Args, ["--dis-eval-every", "80"]), 352) == 80
    with pytest.raises(SystemExit):
        cli.parse(Args, ["--dis-eval-every", "-1"])


@pytest.mark.slow
def test_compare_runs_two_seeds_writes_the_table_and_reuses_finished_seeds(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, str(REPO / "train" / "compare_supervision.py"), "--out", str(out), "--seeds", "0,1"]
    cmd += ["--minutes", "5", "--eval-size", "16", "--pool-size", "64", "--dis-eval-every", "2", "--trm-eval-every", "1"]
    cmd += [*COMPARE_TINY, "--trm-steps", "2", "--trm-n-sup", "2", "--trm-T", "1", "--trm-n", "1", "--dis-steps", "4"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (out / "compare.md").read_text()
    assert "| equal wall clock |" in text and "| equal puzzles seen |" in text and "ratio" in text
    data = json.loads((out / "compare.json").read_text())
    assert set(data["runs"]) == {"0", "1"}
    dis = data["runs"]["0"]["dis"]
    assert [p["batch"] for p in dis["curve"]] == [2, 4]  # every 2 batches; the end falls on a point
    assert dis["puzzles_seen"] == 4 * 8
    # the held-out set is the same for both schemes of a seed (same split), and TRM is the costlier per puzzle
    trm = data["runs"]["0"]["trm"]
    assert trm["forward_passes_per_puzzle"] == 2 * 1 * 2 and dis["forward_passes_per_puzzle"] == 18
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("reusing") == 4


@pytest.mark.slow
def test_plot_curves_draws_a_png_from_run_folders_and_names_a_missing_one(tmp_path):
    run = tmp_path / "dis"
    train = [sys.executable, str(REPO / "train" / "train_dis.py"), "--out", str(run), "--steps", "4", "--eval-every", "2"]
    train += [*TINY.split(), "--pool-size", "64", "--eval-size", "16"]
    assert subprocess.run(train, capture_output=True, text=True, timeout=600, cwd=tmp_path).returncode == 0
    plot = [sys.executable, str(REPO / "train" / "plot_curves.py"), "--run", f"dis={run}", "--out", str(tmp_path / "c.png")]
    r = subprocess.run(plot, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run(plot[:2] + ["--run", f"x={tmp_path / 'nope'}"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nope" in bad.stderr and "metrics.json" in bad.stderr
