"""The Tiny Recursive Model, its losses and targets, and the supervised trainers (TRM and DIS)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import train.deep_supervision as deep_supervision
import train.supervised as supervised
from envs import sudoku
from train.evaluate import evaluate
from trm.checkpoint import load_checkpoint, save_checkpoint
from trm.config import TrainConfig, TRMConfig
from trm.losses import advantage_margin, guided_logits, log_stablemax, stablemax_cross_entropy
from trm.model import TRM
from trm.targets import PATHS

TINY = dict(hidden=16, layers=1, expansion=2.0)
TRAIN = TrainConfig(batch_size=8, warmup_steps=1)


@pytest.fixture(scope="module")
def real(tdoku_lines):
    rows = [(p, s) for p, c, s in tdoku_lines if c == 1]
    return sudoku.parse([p for p, _ in rows]), sudoku.parse([s for _, s in rows])


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("n_sup, T, n", [(2, 1, 1), (3, 2, 2), (6, 1, 2), (2, 3, 4)])
@pytest.mark.parametrize("mixer", ["mlp", "attention"])
def test_counter_reports_n_sup_T_n_plus_1_calls_per_sample(real, n_sup, T, n, mixer):
    cfg = TRMConfig(**TINY, n_sup=n_sup, T=T, n=n, mixer=mixer, halting=False, heads=2)
    model = TRM(cfg)
    m = evaluate(model, real[0][:5], real[1][:5])
    assert m["forward_passes_per_puzzle"] == n_sup * T * (n + 1)
    p = torch.from_numpy(real[0][:4]).long()
    s = torch.from_numpy(real[1][:4]).long()
    model.reset_counter()
    opt = deep_supervision.make_optimizer(TRAIN, model)
    deep_supervision.train_batch(model, None, opt, TRAIN, p, s, torch.Generator().manual_seed(0), 0)
    assert model.net.sample_calls == 4 * n_sup * T * (n + 1)


def test_gradients_flow_only_through_the_last_latent_recursion():
    grad_modes = []
    for T, expect_input_grad in ((1, True), (3, False)):
        model = TRM(TRMConfig(**TINY, T=T, n=2))
        grad_modes.clear()
        hook = model.net.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
        tokens = torch.randint(0, 10, (2, 81))
        y0, z0 = (t.detach().clone().requires_grad_(True) for t in model.initial_state(2))
        out = model.step(tokens, y0, z0)
        out.logits.sum().backward()
        hook.remove()
        # (T - 1) * (n + 1) calls without gradients, then n + 1 with
        assert grad_modes == [False] * ((T - 1) * 3) + [True] * 3
        assert (y0.grad is not None) == expect_input_grad
        assert all(p.grad is not None for p in model.net.parameters())


def test_state_is_detached_between_supervision_steps():
    model = TRM(TRMConfig(**TINY))
    y, z = model.initial_state(2)
    out = model.step(torch.randint(0, 10, (2, 81)), y, z)
    assert out.y.grad_fn is None and out.z.grad_fn is None and not out.y.requires_grad
    assert out.logits.grad_fn is not None and out.logits_ref.grad_fn is None


def test_halt_confidence_adds_the_least_sure_cells_best_digit_to_the_halting_logit():
    torch.manual_seed(0)
    plain = TRM(TRMConfig(**TINY))
    conf = TRM(TRMConfig(**TINY, halt_confidence=True))
    missing, unexpected = conf.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["q_confidence"] and not unexpected
    with torch.no_grad():
        conf.q_confidence.fill_(0.5)
    tokens = torch.randint(0, 10, (3, 81))
    y, z = plain.initial_state(3)
    a, b = plain.step(tokens, y, z), conf.step(tokens, y, z)
    best_digit = torch.log_softmax(a.logits, -1)[..., 1:].max(-1).values  # (3, 81)
    c = best_digit.min(-1).values.clamp(min=-20)
    assert torch.allclose(b.logits, a.logits) and (c < 0).all()
    assert torch.allclose(b.q, a.q + 0.5 * c, atol=1e-5)
    b.q.sum().backward()  # the statistic is read-only: the halting loss does not move the readout
    assert conf.head.weight.grad is None and conf.q_confidence.grad is not None


def test_guidance_endpoints_and_margin_is_minus_the_w_derivative_of_the_loss():
    g = torch.Generator().manual_seed(0)
    lu, lc = torch.randn(5, 81, 10, generator=g), torch.randn(5, 81, 10, generator=g)
    target = torch.randint(0, 10, (5, 81), generator=g)
    assert torch.equal(guided_logits(lu, lc, 0.0), lu)
    assert torch.allclose(guided_logits(lu, lc, 1.0), lc, atol=1e-6)
    for w in (0.0, 1.0, 2.5):
        eps = 1e-4

        def nll(w_):
            guided = guided_logits(lu.double(), lc.double(), w_)
            return -torch.log_softmax(guided, -1).gather(-1, target[..., None]).squeeze(-1)

        slope = (nll(w + eps) - nll(w - eps)) / (2 * eps)
        assert torch.allclose(-slope.float(), advantage_margin(lu, lc, target, w), atol=1e-3)


def test_stablemax_is_a_distribution_and_its_loss_prefers_the_right_class():
    logits = torch.tensor([[3.0, -1.0, 0.0], [-50.0, 100.0, 2.0]])
    assert torch.allclose(log_stablemax(logits).exp().sum(-1), torch.ones(2, dtype=torch.float64))
    right = stablemax_cross_entropy(logits, torch.tensor([0, 1]))
    wrong = stablemax_cross_entropy(logits, torch.tensor([1, 0]))
    assert right < wrong and torch.isfinite(wrong)


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize("path", list(PATHS))
def test_dis_targets_approach_the_solution_monotonically_and_end_at_it(real, path):
    extreme_p, extreme_s = sudoku.generate(6, "extreme", seed=3)
    p = torch.from_numpy(np.concatenate([real[0], extreme_p])).long()
    s = torch.from_numpy(np.concatenate([real[1], extreme_s])).long()
    for n_sup in (1, 4, 6):
        t = PATHS[path](p, s, n_sup, torch.Generator().manual_seed(1))
        assert t.shape == (n_sup, len(p), 81)
        hamming = (t != s[None]).sum(-1)
        assert torch.all(hamming[1:] <= hamming[:-1])
        assert hamming[0].lt((p != s).sum(-1)).all() or n_sup == 1
        assert torch.equal(t[-1], s)
        assert torch.all((t == 0) | (t == s[None]))  # only correct digits are revealed
        assert torch.all(t[:, p > 0] == p[p > 0])  # givens stay


def test_rules_path_reveals_the_singles_first(real):
    p = torch.from_numpy(real[0][:3]).long()
    s = torch.from_numpy(real[1][:3]).long()
    t = PATHS["rules"](p, s, 40, torch.Generator().manual_seed(0))
    first_round = torch.from_numpy(sudoku.propagate_step(real[0][:3]).astype(np.int64))
    assert torch.all((t[0] == first_round) | (first_round == 0))


# ----------------------------------------------------------------------------- trainers


def tiny_args(out, scheme="dis", steps=3, *extra):
    """A tiny run's options; one given in ``extra`` replaces the one here (the CLI takes an option once)."""
    base = {"--out": str(out), "--steps": str(steps), "--pool-size": "64", "--eval-size": "16", "--minutes": "5"}
    base |= {"--hidden": "16", "--layers": "1", "--batch-size": "8", "--checkpoint-every": "0"}
    if scheme == "trm":
        base |= {"--n-sup": "2", "--T": "2", "--n": "1"}
    return [t for option, value in base.items() if option not in extra for t in (option, value)] + list(extra)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["trm", "dis"])
def test_trainer_writes_a_complete_run_folder(tmp_path, scheme):
    m = supervised.train(supervised.parse_args(scheme, tiny_args(tmp_path, scheme)))
    for key in ("solve_rate", "cell_accuracy", "forward_passes_per_puzzle", "train_forward_passes", "wall_seconds"):
        assert key in m
    assert m["batches"] == 3
    run = __import__("json").loads((tmp_path / "run.json").read_text())
    assert run["seed"] == 0 and run["training"]["scheme"] == scheme and "torch" in run["versions"] and run["git_commit"]
    assert any((tmp_path / "tb").iterdir())
    ck = load_checkpoint(tmp_path / "checkpoint.pt", kind=scheme)
    model = TRM(TRMConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["model"])
    again = TRM(TRMConfig.from_dict(ck["config"]))
    save_checkpoint(tmp_path / "copy.pt", {"kind": scheme, "config": ck["config"], "model": model.state_dict()})
    again.load_state_dict(load_checkpoint(tmp_path / "copy.pt")["model"])
    tokens = torch.randint(0, 10, (3, 81))
    y, z = model.initial_state(3)
    steps = {"step": 1} if model.cfg.step_embedding else {}
    assert torch.equal(model.step(tokens, y, z, **steps).logits, again.step(tokens, y, z, **steps).logits)


@pytest.mark.slow
def test_resume_continues_at_the_same_step_with_the_same_data(tmp_path):
    # a run extended from 2 to 4 batches matches a 4-batch run when the learning rate is constant
    # (a decaying schedule runs over --steps, so extending the run changes it by design)
    const = ("--lr-min-ratio", "1")
    straight = supervised.train(supervised.parse_args("dis", tiny_args(tmp_path / "a", "dis", 4, *const)))
    supervised.train(supervised.parse_args("dis", tiny_args(tmp_path / "b", "dis", 2, *const)))
    resumed = supervised.train(supervised.parse_args("dis", tiny_args(tmp_path / "b", "dis", 4, "--resume", *const)))
    assert resumed["batches"] == straight["batches"] == 4
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["state"]["opt_step"] == b["state"]["opt_step"] == 4 * 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed["solve_rate"] == straight["solve_rate"] and resumed["cell_accuracy"] == straight["cell_accuracy"]


def test_bad_checkpoints_are_refused_with_the_reason(tmp_path, capsys):
    supervised.train(supervised.parse_args("dis", tiny_args(tmp_path, "dis", 1)))
    with pytest.raises(ValueError, match=r"another config: hidden: 16 -> 32"):
        supervised.train(supervised.parse_args("dis", tiny_args(tmp_path, "dis", 2, "--resume", "--hidden", "32")))
    with pytest.raises(ValueError, match="holds a 'dis' model; expected trm"):
        supervised.train(supervised.parse_args("trm", tiny_args(tmp_path, "trm", 2, "--resume")))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt or not a checkpoint"):
        supervised.train(supervised.parse_args("dis", tiny_args(tmp_path / "bad", "dis", 2, "--resume")))
    with pytest.raises(SystemExit) as stop:
        supervised.train(supervised.parse_args("dis", tiny_args(tmp_path / "missing", "dis", 2, "--resume")))
    assert stop.value.code == 2 and "no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()  # refused before anything was created


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = deep_supervision.stablemax_cross_entropy
    calls = {"n": 0}

    def loss_that_breaks(logits, target, weight=None):
        calls["n"] += 1
        value = real_loss(logits, target, weight)
        return value * float("nan") if calls["n"] > 6 * 2 else value  # third batch goes bad

    monkeypatch.setattr(deep_supervision, "stablemax_cross_entropy", loss_that_breaks)
    with pytest.raises(supervised.Diverged, match="loss became nan.*last good checkpoint"):
        supervised.train(supervised.parse_args("dis", tiny_args(tmp_path, "dis", 5)))
    kept = load_checkpoint(tmp_path / "checkpoint.pt", kind="dis")
    assert kept["state"]["batch"] == 2
    assert all(torch.isfinite(v).all() for v in kept["model"].values())
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_a_tiny_dis_model_learns_easy_puzzles(tmp_path):
    """Within a bounded number of updates a small model beats its untrained self."""
    args = ["--out", str(tmp_path), "--steps", "60", "--minutes", "5", "--difficulty", "easy", "--pool-size", "512"]
    args += ["--eval-size", "100", "--hidden", "32", "--layers", "1", "--batch-size", "32", "--n-sup", "3"]
    args += ["--lr", "3e-3", "--ema-decay", "0", "--checkpoint-every", "0"]
    trained = supervised.train(supervised.parse_args("dis", args))
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    cfg = TRMConfig.from_dict(ck["config"])
    torch.manual_seed(0)
    untrained = evaluate(TRM(cfg), *sudoku.generate(100, "easy", seed=1_000_003))
    assert trained["cell_accuracy"] > untrained["cell_accuracy"] + 0.2, (trained["cell_accuracy"], untrained["cell_accuracy"])
