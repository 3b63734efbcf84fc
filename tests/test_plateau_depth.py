"""TRM against DIS at their plateau: the plateau rule, the TRM code's training carry (``--refill``), greedy
decoding deeper than trained (``train/depth_curve.py``) and the GPU check run on the CPU at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.runner import run_episodes
from agents.trm_agent import TRMAgent
from envs import sudoku
from train import deep_supervision, refill, supervised
from train.depth_curve import depth_points
from train.evaluate import evaluate
from train.plateau import PLATEAU_POINTS, plateaued
from train.refill import LiveBatch
from trm.checkpoint import load_model
from trm.config import TrainConfig, TRMConfig
from trm.model import TRM
from trm.targets import rules_path

ROOT = Path(__file__).resolve().parent.parent
TINY_TRM = ["--hidden", "16", "--layers", "1", "--batch-size", "8", "--warmup-steps", "1", "--n-sup", "3", "--T", "1", "--n", "1"]
SMALL = ["--pool-size", "64", "--eval-size", "8", "--checkpoint-every", "0"]


def point(passes: int, solve: float, cells: float) -> dict:
    return {"train_forward_passes": passes, "solve_rate": solve, "cell_accuracy": cells}


# ----------------------------------------------------------------------------- the plateau rule


def test_a_curve_is_flat_only_when_neither_solve_rate_nor_cell_accuracy_rose_over_the_last_quarter():
    rising_then_flat = [point(100 * i, min(i, 4) / 10, min(i, 4) / 10) for i in range(1, 13)]
    assert plateaued(rising_then_flat, 1.0)
    assert not plateaued(rising_then_flat[:7], 1.0), "fewer than 8 points"
    cells_still_rising = [point(100 * i, 0.0, i / 20) for i in range(1, 13)]  # nothing solved yet, cells learning
    assert not plateaued(cells_still_rising, 1.0)
    # 1.5 points gained in the last quarter: flat at a 2-point threshold, not at 1
    late_gain = [point(100 * i, 0.5 + (0.015 if i == 12 else 0.0), 0.9) for i in range(1, 13)]
    assert plateaued(late_gain, 2.0) and not plateaued(late_gain, 1.0)
    # a dip and recovery inside the last quarter gains nothing over the best before it
    dip = [point(100 * i, 0.6 if i != 11 else 0.3, 0.9) for i in range(1, 13)]
    assert plateaued(dip, 1.0)


def test_plateau_stops_a_run_at_its_eighth_curve_point_and_the_metrics_say_so(tmp_path):
    tiny_dis = [*SMALL, "--hidden", "16", "--layers", "1", "--batch-size", "8", "--eval-every", "1"]
    args = ["--out", str(tmp_path / "r"), "--steps", "40", "--plateau", "99.9", *tiny_dis]
    m = supervised.train(supervised.parse_args("dis", args))
    assert m["plateaued"] and m["batches"] == PLATEAU_POINTS and len(m["curve"]) == PLATEAU_POINTS
    off = supervised.train(supervised.parse_args("dis", ["--out", str(tmp_path / "off"), "--steps", "10", *tiny_dis]))
    assert not off["plateaued"] and off["batches"] == 10


def test_plateau_without_a_curve_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(SystemExit) as stop:
        supervised.parse_args("dis", ["--out", str(tmp_path / "r"), "--plateau", "1"])
    assert stop.value.code == 2 and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- the TRM code's carry


def tiny(n_sup: int = 3, **kw) -> TRM:
    torch.manual_seed(0)
    return TRM(TRMConfig(hidden=16, layers=1, expansion=2.0, n_sup=n_sup, T=1, n=1, **kw))


def draw_from(p: np.ndarray, s: np.ndarray):
    taken = [0]

    def draw(r: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = taken[0]
        taken[0] += r
        idx = np.arange(i, i + r) % len(p)
        return torch.as_tensor(p[idx], dtype=torch.long), torch.as_tensor(s[idx], dtype=torch.long)

    return draw


def test_refill_keeps_every_step_full_and_replaces_a_slot_when_it_reaches_n_sup():
    model, p_s = tiny(halting=False), sudoku.generate(32, "easy", seed=0)
    tc = TrainConfig(batch_size=4, warmup_steps=1)
    live, gen = LiveBatch(model, 4, torch.device("cpu")), torch.Generator().manual_seed(0)
    opt = deep_supervision.make_optimizer(tc, model)
    model.reset_counter()
    logs = refill.train_refill(model, None, opt, tc, live, draw_from(*p_s), gen, 0, 7)
    assert logs["samples"] == [4] * 7 and logs["opt_step"] == 7
    assert logs["started"] == 4 * 3  # puzzles put in before steps 1, 4 and 7 (n_sup = 3)
    assert model.net.sample_calls == 7 * 4 * 2  # T (n + 1) = 2 calls per slot and step, counted
    assert live.steps.tolist() == [1] * 4
    assert torch.equal(live.puzzle, torch.as_tensor(p_s[0][8:12], dtype=torch.long))


def test_a_slot_that_halts_is_refilled_at_once_while_the_others_go_on():
    model, p_s = tiny(), sudoku.generate(32, "easy", seed=1)
    tc = TrainConfig(batch_size=4, warmup_steps=1, halt_exploration=0.0)
    live, gen = LiveBatch(model, 4, torch.device("cpu")), torch.Generator().manual_seed(0)
    with torch.no_grad():  # the Q head says "halt" for every slot
        model.q_head.bias.fill_(50.0)
        model.q_head.weight.zero_()
    opt = deep_supervision.make_optimizer(replace(tc, lr=0.0), model)
    logs = refill.train_refill(model, None, opt, replace(tc, lr=0.0), live, draw_from(*p_s), gen, 0, 3)
    assert logs["started"] == 12 and live.steps.tolist() == [1] * 4  # every slot halts after one step


def test_dis_targets_follow_each_slots_own_step():
    model = TRM(TRMConfig.dis(hidden=16, layers=1, expansion=2.0))
    p, s = (torch.as_tensor(x, dtype=torch.long) for x in sudoku.generate(3, "easy", seed=2))
    live = LiveBatch(model, 3, torch.device("cpu"), with_targets=True)
    targets = rules_path(p, s, model.cfg.n_sup, torch.Generator().manual_seed(0))
    live.refill(torch.arange(3), p, s, torch.zeros(3, dtype=torch.long), targets)
    live.advance()
    live.steps[1] = 4  # slot 1 is further along
    expected = torch.stack([targets[0, 0], targets[3, 1], targets[0, 2]])
    assert torch.equal(live.target(), expected)


def test_a_refill_run_resumed_midway_ends_with_the_weights_of_one_run_without_a_break(tmp_path):
    def run(out: Path, steps: int, resume: bool = False) -> dict:
        argv = ["--out", str(out), "--steps", str(steps), "--refill", *TINY_TRM, *SMALL] + (["--resume"] if resume else [])
        return supervised.train(supervised.parse_args("trm", argv))

    whole = run(tmp_path / "whole", 4)
    run(tmp_path / "split", 2)
    split = run(tmp_path / "split", 4, resume=True)
    a, b = (torch.load(Path(m["checkpoint"]), weights_only=False)["model"] for m in (whole, split))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole["optimizer_steps"] == 4 * 3 and whole["train_forward_passes"] == 4 * 3 * 8 * 2
    assert whole["puzzles_seen"] == split["puzzles_seen"] >= 8


# ----------------------------------------------------------------------------- depth


def test_decoding_deeper_than_trained_clamps_dis_step_index_and_counts_its_passes(tiny_dis_checkpoint):
    model = load_model(tiny_dis_checkpoint)[0]
    p, s = sudoku.generate(6, "easy", seed=4)
    n_sup = model.cfg.n_sup
    rows = depth_points(model, p, s, [1, 2, 4])
    trained = evaluate(model, p, s)
    assert rows[0]["solve_rate"] == trained["solve_rate"]  # reading at n_sup = a run that stops there
    assert rows[0]["forward_passes_per_puzzle"] == trained["forward_passes_per_puzzle"]
    assert [r["forward_passes_per_puzzle"] for r in rows] == [k * trained["forward_passes_per_puzzle"] for k in (1, 2, 4)]
    res = run_episodes(TRMAgent(model, steps=2 * n_sup), p, s, max_steps=2 * n_sup)
    assert res["solved_per_step"].shape == (6, 2 * n_sup)
    with pytest.raises(ValueError, match="at least 1"):
        TRMAgent(model, steps=0)


def test_depth_curve_writes_its_table_and_refuses_bad_multiples(tiny_dis_checkpoint, tmp_path):
    script = str(ROOT / "train" / "depth_curve.py")
    cmd = [sys.executable, script, "--checkpoint", f"dis={tiny_dis_checkpoint}", "--tiers", "easy,sudoku17:test",
           "--puzzles", "4", "--multiples", "1,2", "--out", str(tmp_path / "d")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "d" / "depth.json").read_text())
    assert [(x["tier"], x["multiple"]) for x in data["rows"]] == [("easy", 1), ("easy", 2), ("sudoku17:test", 1),
                                                                  ("sudoku17:test", 2)]
    assert (tmp_path / "d" / "depth_curve.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run(cmd[:-2] + ["--multiples", "0,2", "--out", str(tmp_path / "bad")], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "--multiples" in bad.stderr and not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- the GPU check, on the CPU


def test_the_gpu_check_runs_every_part_on_the_cpu_at_tiny_sizes(tmp_path):
    cmd = [sys.executable, str(ROOT / "train" / "gpu_check.py"), "--device", "cpu", "--out", str(tmp_path / "g"),
           "--env-sizes", "16,32", "--env-seconds", "0.2", "--hidden", "16", "--batch-size", "4", "--precisions", "fp32,bf16",
           "--batches", "1", "--repeats", "1", "--trm-steps", "1", "--search-puzzles", "4", "--search-k", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    parts = json.loads((tmp_path / "g" / "gpu_check.json").read_text())["parts"]
    assert all("result" in parts[k] for k in ("env", "train", "search", "ddp")), parts
    assert [x["num_envs"] for x in parts["env"]["result"]] == [16, 32]
    assert {(x["scheme"], x["precision"]) for x in parts["train"]["result"]} == {(a, b) for a in ("dis", "trm")
                                                                                  for b in ("fp32", "bf16")}
    dis = next(x for x in parts["train"]["result"] if x["scheme"] == "dis" and x["precision"] == "fp32")
    assert dis["train_forward_passes_per_s"] == pytest.approx(dis["puzzles_per_s"] * 18)  # DIS: 18 calls per puzzle
    assert parts["search"]["result"]["trajectories_per_s"] > 0 and parts["ddp"]["result"]["world_size"] == 1
    bad = subprocess.run(cmd[:4] + ["--skip", "nothing"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and "--skip" in bad.stderr


def _tiny_bench(scheme: str) -> tuple[tuple[TRMConfig, TrainConfig], torch.Tensor, torch.Tensor]:
    p, s = sudoku.generate(8, "easy", seed=0)
    if scheme == "dis":
        cfgs = (TRMConfig.dis(hidden=16, layers=2), TrainConfig.dis(batch_size=4))
    else:
        cfgs = (TRMConfig(hidden=16, layers=2, n_sup=2, T=1, n=1), TrainConfig(batch_size=4))
    return cfgs, torch.as_tensor(p, dtype=torch.long), torch.as_tensor(s, dtype=torch.long)


@pytest.mark.parametrize("scheme", ["dis", "trm"])
def test_the_bf16_throughput_variant_runs_the_network_in_bfloat16(scheme):
    from train import bench_train

    cfgs, p, s = _tiny_bench(scheme)
    dtypes: list[torch.dtype] = []

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            dtypes.append(output.dtype)

    bench = bench_train.Args(batches=1, warmup=0, repeats=1, trm_steps=1)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        bench_train.measure(cfgs, bench_train.Variant(lambda c: c, autocast=True), p, s, bench)
        with_amp = set(dtypes)
        dtypes.clear()
        bench_train.measure(cfgs, bench_train.Variant(lambda c: c), p, s, bench)
    finally:
        handle.remove()
    assert with_amp == {torch.bfloat16} and set(dtypes) == {torch.float32}


@pytest.mark.slow
def test_the_compile_variant_compiles_a_few_graphs_and_keeps_counting_passes():
    from train import bench_train

    cfgs, p, s = _tiny_bench("dis")
    model = TRM(cfgs[0])
    bench_train.compile_blocks(model)
    tokens = model.input_tokens(p[:4], torch.zeros_like(p[:4]))
    y, z = model.initial_state(4)
    model.reset_counter()
    for step in range(1, 7):  # 6 supervision steps of n + 1 = 3 calls: 18 calls of f on the same shapes
        out = model.step(tokens, y, z, step=step)
        y, z = out.y, out.z
    assert model.net.sample_calls == 4 * 18  # the count stays right outside the compiled blocks
    graphs = bench_train.compiled_graphs()
    assert 1 <= graphs <= 4, graphs  # compiled once per block (or once for both), not once per call
    pps, _ = bench_train.measure(cfgs, bench_train.Variant(lambda c: c, compile=True), p, s,
                                 bench_train.Args(batches=1, warmup=1, repeats=1))
    assert pps > 0 and bench_train.compiled_graphs() <= 8
