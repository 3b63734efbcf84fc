"""The two configs: :class:`TRMConfig`, the network, and :class:`TrainConfig`, how it is supervised and optimised.

A checkpoint saves both (``config`` and ``training``); :func:`configs_from_dict` also reads
checkpoints written when the two lived in one dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal


def _check_choices(obj: Any) -> None:
    """Raise ``ValueError`` when a ``Literal`` field of dataclass ``obj`` holds a value outside its choices."""
    import typing

    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        tp = hints[f.name]
        if typing.get_origin(tp) is Literal and getattr(obj, f.name) not in typing.get_args(tp):
            raise ValueError(f"{type(obj).__name__}.{f.name} must be one of {typing.get_args(tp)}, got {getattr(obj, f.name)!r}")


def _check_finite(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        if not (v >= 0 and v < float("inf")):
            raise ValueError(f"{type(obj).__name__}.{name} must be a finite number >= 0, got {v}")


@dataclass
class TRMConfig:
    """The network: shape, recursion schedule, input mode and heads.

    Recursion (``docs/design.md``, "TRM"): one *supervision step* is a deep recursion: ``T - 1``
    latent recursions without gradients, then one with; a latent recursion is ``n``
    updates ``z <- f(x + y + z)`` followed by ``y <- f(y + z)`` (with ``n = 0`` the single
    update reads the input: ``y <- f(x + y + z)``, the one-pass network). So a sample costs
    ``n_sup * T * (n + 1)`` network calls when every step runs (the model counts them).

    The defaults are a CPU-sized TRM-MLP; :meth:`paper_sudoku` gives the paper's
    Sudoku network, :meth:`dis` DIS's and :meth:`onepass` the one-pass baseline's.
    """

    # shape
    hidden: int = 64  # D, the width of x, y, z
    layers: int = 2  # blocks of the network f
    expansion: float = 4.0  # SwiGLU inner width over D (times 2/3)
    mixer: Literal["mlp", "attention"] = "mlp"  # "mlp" (TRM-MLP, mixes the 81 positions) or "attention" (TRM-Att, rotary)
    heads: int = 4  # attention heads (mixer "attention")
    embed_init: Literal["trm", "unit"] = "trm"  # token embedding std: "trm" (1/sqrt(D): x starts at RMS ~1) or "unit" (1)
    mixer_norm: Literal["positions", "hidden"] = "positions"  # TRM-MLP: post-norm of the position mixer over positions or units
    inner_multiple: int = 256  # round SwiGLU inner widths up to a multiple of this (TRM code: 256; 1: no rounding)
    prefix_tokens: int = 16  # learned tokens before the 81 cells (TRM's puzzle-embedding positions, zero init); 0: none
    pos_embedding: bool = False  # a learned position embedding added to x (TRM-MLP in the TRM code has none)
    init_state: Literal["fixed", "learned"] = "fixed"  # y0, z0: "fixed" random buffers of std 1 (TRM code) or "learned"
    seq_len: int = field(default=81, metadata={"cli": False})  # positions: the 81 cells
    vocab: int = field(default=10, metadata={"cli": False})  # 0 = blank / undecided, 1..9 digits
    # recursion
    n_sup: int = 16  # supervision steps (deep recursions) per puzzle
    T: int = 3  # latent recursions per supervision step (T - 1 without gradients)
    n: int = 6  # z updates per latent recursion
    # input and heads
    # x embeds the puzzle, the answer written at the step before, or that answer with the givens marked
    input_mode: Literal["puzzle", "previous_answer", "answer_and_givens"] = "puzzle"  # what x embeds
    step_embedding: bool = False  # add an embedding of the step index s to x (DIS)
    step_embed_scale: Literal["token", "unit"] = "token"  # "token": std 1/sqrt(D), scaled with the tokens (DIS code); "unit"
    halting: bool = True  # the Q head is trained (TRM halting); in training a sample stops when it says halt
    halt_confidence: bool = False  # the halting logit also reads the least confident cell (see TRM.step)

    def __post_init__(self) -> None:
        _check_choices(self)
        for name in ("hidden", "layers", "n_sup", "T", "heads", "inner_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"TRMConfig.{name} must be >= 1, got {getattr(self, name)}")
        _check_finite(self, ("expansion",))
        if self.n < 0 or self.prefix_tokens < 0:
            raise ValueError(f"TRMConfig.n and prefix_tokens must be >= 0, got {self.n} and {self.prefix_tokens}")
        if self.mixer == "attention" and self.hidden % (2 * self.heads):
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of 2 * heads ({2 * self.heads}) for rotary attention")

    @classmethod
    def paper_sudoku(cls, **overrides: Any) -> TRMConfig:
        """TRM-MLP of the TRM code's Sudoku-Extreme recipe: D=512, 2 layers, N_sup=16, T=3, n=6 (336 calls)."""
        return cls(**{"hidden": 512, "layers": 2, "n_sup": 16, "T": 3, "n": 6, **overrides})

    @classmethod
    def dis(cls, **overrides: Any) -> TRMConfig:
        """DIS's network: N_sup=6, T=1, n=2 (18 calls), the step embedded, no halting head, and (as the
        released DIS code, and as the environment's MDP) each step reading the answer written at the
        step before, here with the givens as tokens of their own. Two layers and no prefix tokens
        (measured on 2 CPU cores, ``docs/deviations.md``)."""
        base = {"n_sup": 6, "T": 1, "n": 2, "halting": False, "step_embedding": True, "prefix_tokens": 0, "layers": 2}
        base["input_mode"] = "answer_and_givens"
        return cls(**{**base, **overrides})

    @classmethod
    def onepass(cls, **overrides: Any) -> TRMConfig:
        """The one-pass baseline: TRM's network called once, ``y <- f(x + y + z)`` (n=0, 1 call)."""
        return cls(**{"n_sup": 1, "T": 1, "n": 0, "halting": False, **overrides})

    def calls_per_sample(self) -> int:
        """``n_sup * T * (n + 1)``: for documentation only; runs report the model's own count."""
        return self.n_sup * self.T * (self.n + 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TRMConfig:
        """The network a checkpoint recorded (a field it predates takes its value from :data:`LEGACY`).

        A dict written when this config also held the training settings keeps them: they are
        :class:`TrainConfig`'s and are set aside here (:func:`configs_from_dict` reads both)."""
        known, training = {f.name for f in fields(cls)}, {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(d) - known - training)
        if unknown:
            raise ValueError(f"unknown TRMConfig fields: {unknown}")
        return cls(**{**LEGACY, **{k: v for k, v in d.items() if k in known}})

    def shape_fields(self) -> dict[str, Any]:
        """The fields that fix the parameter shapes (a checkpoint must match them)."""
        keys = ("hidden", "layers", "expansion", "mixer", "heads", "seq_len", "vocab", "step_embedding", "n_sup", "input_mode")
        keys += ("halting", "halt_confidence", "inner_multiple", "prefix_tokens", "pos_embedding", "init_state")
        return {k: getattr(self, k) for k in keys}


@dataclass
class TrainConfig:
    """How the network is supervised and optimised: the scheme, its targets and losses, optimizer, schedule, batch, EMA.

    :meth:`dis`, :meth:`paper_sudoku` and :meth:`onepass` pair with :class:`TRMConfig`'s presets of the same name.
    """

    scheme: Literal["trm", "dis", "onepass"] = field(default="trm", metadata={"cli": False})  # set by the script
    halt_exploration: float = 0.1  # in training, the chance a sample runs at least U{2..n_sup} steps before halting
    q_loss_weight: float = 0.5  # weight of the halting BCE in the loss (TRM code: 0.5)
    dis_path: Literal["linear", "rules"] = "linear"  # DIS targets: "linear" (growing random reveal) or "rules" (singles rounds)
    step_weights: Literal["uniform", "increasing"] = "uniform"  # "uniform" (released code) or "increasing" (paper: w_s ∝ s)
    optimizer: Literal["adam_atan2", "adamw"] = "adam_atan2"  # "adam_atan2" (TRM code) or "adamw" (DIS code); decoupled decay
    lr: float = 1e-3  # peak learning rate (linear warm-up, then constant)
    weight_decay: float = 0.1  # decoupled weight decay
    beta1: float = 0.9  # Adam's first-moment decay
    beta2: float = 0.95  # Adam's second-moment decay
    adam_eps: float = 1e-8  # Adam's epsilon
    grad_clip: float = 0.0  # clip the gradient norm to this value before each optimizer step (0: off)
    warmup_steps: int = 100  # optimizer steps of linear learning-rate warm-up
    lr_min_ratio: float = 1.0  # cosine decay to lr * this over the run (--steps, else --minutes); 1: constant (TRM code)
    batch_size: int = 64  # puzzles per batch
    refill: bool = False  # the TRM code's carry: a halted sample is replaced at once, every step trains on a full batch
    ema_decay: float = 0.999  # 0 disables the EMA

    def __post_init__(self) -> None:
        _check_choices(self)
        for name in ("batch_size", "warmup_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        _check_finite(self, ("lr", "weight_decay", "adam_eps", "grad_clip", "ema_decay", "q_loss_weight"))
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.ema_decay < 1):
            raise ValueError("TrainConfig.beta1, beta2 and ema_decay must lie in [0, 1)")
        if not 0 <= self.lr_min_ratio <= 1:
            raise ValueError(f"TrainConfig.lr_min_ratio must lie in [0, 1], got {self.lr_min_ratio}")
        if not 0 <= self.halt_exploration <= 1:
            raise ValueError(f"TrainConfig.halt_exploration must lie in [0, 1], got {self.halt_exploration}")

    @classmethod
    def paper_sudoku(cls, **overrides: Any) -> TrainConfig:
        """The TRM code's Sudoku-Extreme recipe: Adam-atan2 at lr 1e-4 (betas 0.9, 0.95) after 2,000 warm-up
        steps, weight decay 1.0, global batch 768, EMA 0.999."""
        base = {"lr": 1e-4, "weight_decay": 1.0, "optimizer": "adam_atan2", "batch_size": 768, "warmup_steps": 2000}
        return cls(**{**base, "ema_decay": 0.999, **overrides})

    @classmethod
    def dis(cls, **overrides: Any) -> TrainConfig:
        """DIS: AdamW; measured on 2 CPU cores (``docs/deviations.md``): batch 16 at lr 2e-3 with a cosine to
        5% over the run, and targets from rounds of singles deduction (``dis_path="rules"``)."""
        base = {"scheme": "dis", "optimizer": "adamw", "batch_size": 16, "lr": 2e-3, "lr_min_ratio": 0.05, "dis_path": "rules"}
        return cls(**{**base, **overrides})

    @classmethod
    def onepass(cls, **overrides: Any) -> TrainConfig:
        """The one-pass baseline: the TRM defaults without a halting head to train."""
        return cls(**{"scheme": "onepass", **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The training settings of a dict (fields of :class:`TRMConfig` in it are ignored; missing ones from :data:`LEGACY`)."""
        known = {f.name for f in fields(cls)}
        return cls(**{**LEGACY_TRAINING, **{k: v for k, v in d.items() if k in known}})


def configs_from_dict(config: dict[str, Any], training: dict[str, Any] | None = None) -> tuple[TRMConfig, TrainConfig]:
    """Both configs of a checkpoint: ``config`` (the network) and ``training``; a checkpoint written when the
    two were one dict has no ``training``, and its ``config`` holds both."""
    return TRMConfig.from_dict(config), TrainConfig.from_dict(config if training is None else training)


LEGACY: dict[str, Any] = {
    "mixer_norm": "hidden",
    "inner_multiple": 1,
    "prefix_tokens": 0,
    "pos_embedding": True,
    "init_state": "learned",
    "step_embed_scale": "unit",
}
"""The network before the fidelity fixes of ``docs/deviations.md``: post-norm over hidden units, no
inner-width rounding, no prefix tokens, a learned position embedding, learned initial states,
a step embedding of std 1 added after the sqrt(D) scaling. Checkpoints written before these
fields existed load with these values; the training-speed benchmark runs them as its baseline."""

LEGACY_TRAINING: dict[str, Any] = {"halt_exploration": 0.0, "q_loss_weight": 1.0}
"""Training before the fidelity fixes: no halting exploration, Q-loss weight 1."""
