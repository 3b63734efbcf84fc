"""The supervised core's fidelity to the TRM and DIS code (docs/deviations.md): block, widths,
initial state, prefix tokens, step embedding, halting exploration and weight, Adam-atan2,
the ``--paper`` recipe, several processes, and the legacy model."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import train.deep_supervision as deep_supervision
import train.supervised as supervised
from envs import sudoku
from train.run_folder import Budget
from trm.adam_atan2 import AdamAtan2
from trm.config import LEGACY, TrainConfig, TRMConfig
from trm.model import TRM, Block, inner_width, rms_norm

REPO = Path(__file__).resolve().parents[1]
TINY = dict(hidden=16, layers=1, expansion=2.0)
TRAIN = TrainConfig(batch_size=8, warmup_steps=1)


@pytest.fixture(scope="module")
def batch(tdoku_lines):
    rows = [(p, s) for p, c, s in tdoku_lines if c == 1][:8]
    p = torch.from_numpy(sudoku.parse([r[0] for r in rows])).long()
    s = torch.from_numpy(sudoku.parse([r[1] for r in rows])).long()
    return p, s


def test_inner_widths_round_up_to_the_trm_codes_multiples():
    # the TRM code's Sudoku MLP mixes 81 cells + 16 prefix positions: round(4*97*2/3) = 259 -> 512
    assert inner_width(97, 4.0, 256) == 512
    assert inner_width(81, 4.0, 256) == 256
    assert inner_width(512, 4.0, 256) == 1536  # hidden SwiGLU at D=512
    assert inner_width(64, 4.0, 256) == 256
    assert inner_width(81, 4.0, 1) == 216  # no rounding: the legacy width
    model = TRM(TRMConfig())
    assert model.net.blocks[0].mix.mlp.out.in_features == 512
    assert model.net.blocks[0].mlp.out.in_features == 256


def test_mlp_block_normalises_over_positions_after_the_mixer_and_over_hidden_units_after_the_mlp():
    cfg = TRMConfig(hidden=8, prefix_tokens=2, inner_multiple=1)
    blk = Block(cfg)
    with torch.no_grad():  # both sublayers output zero: the block is then just its two norms
        blk.mix.mlp.out.weight.zero_()
        blk.mlp.out.weight.zero_()
    h = torch.randn(3, 83, 8) * torch.linspace(0.1, 5, 83)[None, :, None]
    expect = rms_norm(rms_norm(h.transpose(1, 2)).transpose(1, 2))
    assert torch.allclose(blk(h), expect, atol=1e-5)
    hidden = Block(replace(cfg, mixer_norm="hidden"))
    with torch.no_grad():
        hidden.mix.mlp.out.weight.zero_()
        hidden.mlp.out.weight.zero_()
    assert torch.allclose(hidden(h), rms_norm(rms_norm(h)), atol=1e-5)
    assert not torch.allclose(expect, rms_norm(h), atol=1e-3)


def test_fixed_initial_state_is_a_saved_buffer_of_unit_scale_that_training_leaves_alone(batch):
    cfg = TRMConfig.dis(**{**TINY, "hidden": 256})
    model = TRM(cfg)
    names = {n for n, _ in model.named_parameters()}
    assert "y_init" not in names and "z_init" not in names
    assert {"y_init", "z_init"} <= set(model.state_dict())
    for t in (model.y_init, model.z_init):
        assert 0.75 < float(t.std()) < 1.1 and float(t.abs().max()) <= 2.0  # truncated N(0, 1)
    before = model.y_init.clone()
    opt = deep_supervision.make_optimizer(TRAIN, model)
    deep_supervision.train_batch(model, None, opt, TRAIN, *batch, torch.Generator().manual_seed(0), 0)
    assert torch.equal(model.y_init, before)
    learned = TRM(replace(cfg, init_state="learned"))
    assert "y_init" in {n for n, _ in learned.named_parameters()}


def test_prefix_tokens_carry_state_the_halting_head_reads_and_the_readout_ignores():
    cfg = TRMConfig(**TINY, prefix_tokens=3)
    model = TRM(cfg)
    y, z = model.initial_state(2)
    assert y.shape == (2, 84, 16)
    out = model.step(torch.randint(0, 10, (2, 81)), y, z)
    assert out.logits.shape == (2, 81, 10) and out.y.shape == (2, 84, 16)
    with torch.no_grad():
        model.q_head.weight.normal_()
        y2 = out.y.clone()
        y2[:, 0] += 1.0
        assert not torch.allclose(model.q_head(y2[:, 0]), model.q_head(out.y[:, 0]))
        y3 = out.y.clone()
        y3[:, :3] += 5.0  # the prefix positions do not reach the answer readout
        assert torch.equal(model.readout(y3), model.readout(out.y))
    assert torch.equal(model.embed_input(torch.zeros(2, 81, dtype=torch.long))[:, :3], torch.zeros(2, 3, 16))


def test_step_embedding_is_added_at_token_scale_before_the_sqrt_d_scaling():
    cfg = TRMConfig.dis(hidden=16, layers=1, prefix_tokens=0)
    model = TRM(cfg)
    tokens = torch.randint(0, 10, (2, 81))
    x = model.embed_input(tokens, 3)
    expect = (model.embed(tokens) + model.step_embed.weight[3]) * 4.0
    assert torch.allclose(x, expect, atol=1e-6)
    assert float(model.step_embed.weight.detach().std()) == pytest.approx(float(model.embed.weight.detach().std()), rel=0.5)
    unit = TRM(replace(cfg, step_embed_scale="unit"))
    assert torch.allclose(unit.embed_input(tokens, 3), unit.embed(tokens) * 4.0 + unit.step_embed.weight[3], atol=1e-6)


def test_halting_exploration_keeps_samples_running_that_the_q_head_would_halt(batch):
    steps = {}
    for p in (0.0, 1.0):
        cfg, tc = TRMConfig(**TINY, n_sup=6, T=1, n=1), replace(TRAIN, halt_exploration=p)
        model = TRM(cfg)
        with torch.no_grad():
            model.q_head.bias.fill_(10.0)  # the head says "halt" at once
        opt = deep_supervision.make_optimizer(tc, model)
        logs = deep_supervision.train_batch(model, None, opt, tc, *batch, torch.Generator().manual_seed(1), 0)
        steps[p] = len(logs["samples"])
    assert steps[0.0] == 1  # everyone halts after the first step
    assert steps[1.0] >= 2  # exploration: each sample runs U{2..6} steps at least


def test_q_loss_enters_the_loss_with_its_weight(batch):
    losses = {}
    for w in (0.0, 0.5):
        cfg, tc = TRMConfig(**TINY, n_sup=1, T=1, n=1), replace(TRAIN, q_loss_weight=w, halt_exploration=0.0)
        torch.manual_seed(0)
        model = TRM(cfg)
        opt = deep_supervision.make_optimizer(tc, model)
        logs = deep_supervision.train_batch(model, None, opt, tc, *batch, torch.Generator().manual_seed(1), 0)
        losses[w] = (logs["loss"][0], logs["q_loss"][0])
    assert losses[0.5][0] - losses[0.0][0] == pytest.approx(0.5 * losses[0.5][1], rel=1e-4)
    assert losses[0.5][1] > 0


def test_adam_atan2_first_step_is_lr_times_pi_over_4_against_the_gradient_sign_with_decoupled_decay():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = AdamAtan2([p], lr=0.1, betas=(0.9, 0.95), weight_decay=0.5)
    p.grad = torch.tensor([1e-6, -4.0, 0.0])
    opt.step()
    # step 1: m_hat = g, sqrt(v_hat) = |g|, atan2(g, |g|) = sign(g) pi/4 (0 where g = 0); decay (1 - lr wd)
    expect = torch.tensor([1.0, -2.0, 3.0]) * (1 - 0.05) - 0.1 * torch.tensor([math.pi / 4, -math.pi / 4, 0.0])
    assert torch.allclose(p.detach(), expect, atol=1e-6)
    # a large gradient cannot move a parameter by more than lr * pi / 2 per step
    q = torch.nn.Parameter(torch.zeros(1))
    big = AdamAtan2([q], lr=0.1, betas=(0.0, 0.0))
    q.grad = torch.tensor([1e9])
    big.step()
    assert abs(float(q.detach())) <= 0.1 * math.pi / 2 + 1e-9


def test_paper_configuration_builds_and_takes_one_step_on_cpu(batch):
    args = supervised.parse_args("trm", ["--paper"])
    cfg, tc = args.model, args.training
    assert (cfg.hidden, cfg.n_sup, cfg.T, cfg.n, tc.batch_size) == (512, 16, 3, 6, 768)
    assert (tc.optimizer, tc.lr, tc.weight_decay, tc.warmup_steps, tc.ema_decay) == ("adam_atan2", 1e-4, 1.0, 2000, 0.999)
    block = (cfg.prefix_tokens, cfg.mixer_norm, cfg.inner_multiple)
    assert block == (16, "positions", 256) and (tc.halt_exploration, tc.q_loss_weight) == (0.1, 0.5)
    model = TRM(replace(cfg, n_sup=1))  # one supervision step of the paper's model, on two puzzles
    assert 4_000_000 < sum(p.numel() for p in model.parameters()) < 8_000_000
    opt = deep_supervision.make_optimizer(tc, model)
    assert isinstance(opt, AdamAtan2)
    before = [p.detach().clone() for p in model.parameters()]
    model.reset_counter()
    deep_supervision.train_batch(model, None, opt, tc, batch[0][:2], batch[1][:2], torch.Generator().manual_seed(0), 0)
    assert model.net.sample_calls == 2 * 3 * 7  # T (n + 1) calls per sample, counted by the model
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))


def test_a_checkpoint_config_that_predates_the_fixes_loads_as_the_legacy_model():
    old = {k: v for k, v in TRMConfig.dis().to_dict().items() if k not in LEGACY}
    cfg = TRMConfig.from_dict(old)
    assert all(getattr(cfg, k) == v for k, v in LEGACY.items())
    model = TRM(cfg)
    assert model.prefix is None and model.pos is not None and isinstance(model.y_init, torch.nn.Parameter)


def test_budget_does_not_count_time_spent_paused():
    import time

    b = Budget(minutes=1.0)
    t0 = b.elapsed()
    with b.paused():
        time.sleep(0.2)
    assert b.elapsed() - t0 < 0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_ranks_train_dis_and_write_one_run(tmp_path):
    out = tmp_path / "dis"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += [str(REPO / "train" / "train_dis.py"), "--out", str(out), "--steps", "3", "--hidden", "16", "--batch-size", "8"]
    cmd += ["--pool-size", "64", "--eval-size", "16", "--minutes", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and m["batches"] == 3
    # global batch 8 over 2 ranks: 3 batches x 8 puzzles x 18 calls, summed over ranks by the counter
    assert m["train_forward_passes"] == 3 * 8 * 18
    assert r.stdout.count("dis: solve rate") == 1  # rank 0 alone reports
