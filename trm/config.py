"""TRMConfig: every setting of the Tiny Recursive Model and of its supervision scheme."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TRMConfig:
    """Model shape, recursion schedule and supervision flags.

    Recursion (``docs/design.md``, "TRM"): one *supervision step* is a deep recursion: ``T - 1``
    latent recursions without gradients, then one with; a latent recursion is ``n``
    updates ``z <- f(x + y + z)`` followed by ``y <- f(y + z)`` (with ``n = 0`` the single
    update reads the input: ``y <- f(x + y + z)``, the one-pass network). So a sample costs
    ``n_sup * T * (n + 1)`` network calls when every step runs (the model counts them).

    The defaults are a CPU-sized TRM-MLP; :meth:`paper_sudoku` gives the paper's
    Sudoku settings and :meth:`dis` the DIS schedule.
    """

    # shape
    hidden: int = 64  # D, the width of x, y, z
    layers: int = 2  # blocks of the network f
    expansion: float = 4.0  # SwiGLU inner width over D (times 2/3)
    mixer: str = "mlp"  # "mlp" (TRM-MLP, mixes the 81 positions) or "attention" (TRM-Att, rotary)
    heads: int = 4  # attention heads (mixer "attention")
    embed_init: str = "trm"  # token embedding init: "trm" (std 1/sqrt(D), so x starts at RMS ~1 as y and z) or "unit" (std 1)
    mixer_norm: str = "positions"  # TRM-MLP post-norm after the position mixer: over "positions" (TRM code) or "hidden" units
    inner_multiple: int = 256  # round SwiGLU inner widths up to a multiple of this (TRM code: 256; 1: no rounding)
    prefix_tokens: int = 16  # learned tokens before the 81 cells (TRM's puzzle-embedding positions, zero init); 0: none
    pos_embedding: bool = False  # a learned position embedding added to x (TRM-MLP in the TRM code has none)
    init_state: str = "fixed"  # y0, z0: "fixed" random buffers of std 1 (TRM code) or "learned" parameters
    seq_len: int = field(default=81, metadata={"cli": False})  # positions: the 81 cells
    vocab: int = field(default=10, metadata={"cli": False})  # 0 = blank / undecided, 1..9 digits
    # recursion
    n_sup: int = 16  # supervision steps (deep recursions) per puzzle
    T: int = 3  # latent recursions per supervision step (T - 1 without gradients)
    n: int = 6  # z updates per latent recursion
    # supervision
    scheme: str = field(default="trm", metadata={"cli": False})  # "trm", "dis" or "onepass": set by the script
    halting: bool = True  # train the Q head; in training a sample stops when it says halt
    halt_exploration: float = 0.1  # in training, with this probability a sample runs at least U{2..n_sup} steps before halting
    q_loss_weight: float = 0.5  # weight of the halting BCE in the loss (TRM code: 0.5)
    halt_confidence: bool = False  # the halting logit also reads the least confident cell (see TRM.step)
    step_embedding: bool = False  # add an embedding of the step index s to x (DIS)
    step_embed_scale: str = "token"  # "token": std 1/sqrt(D), scaled by sqrt(D) with the tokens (DIS code); "unit": std 1, after
    dis_path: str = "linear"  # "linear" (growing random reveal) or "rules" (propagation rounds)
    step_weights: str = "uniform"  # "uniform" (released code) or "increasing" (paper text: w_s ∝ s)
    input_mode: str = "puzzle"  # x embeds the "puzzle", the "previous_answer" written, or "answer_and_givens" (givens marked)
    # optimisation
    optimizer: str = "adam_atan2"  # "adam_atan2" (TRM code) or "adamw" (released DIS code); both decouple weight decay
    lr: float = 1e-3  # peak learning rate (linear warm-up, then constant)
    weight_decay: float = 0.1  # decoupled (adamw) or L2 (adam)
    beta1: float = 0.9  # Adam's first-moment decay
    beta2: float = 0.95  # Adam's second-moment decay
    adam_eps: float = 1e-8  # Adam's epsilon
    grad_clip: float = 0.0  # clip the gradient norm to this value before each optimizer step (0: off)
    warmup_steps: int = 100  # optimizer steps of linear learning-rate warm-up
    lr_min_ratio: float = 1.0  # cosine decay to lr * this over the run (--steps, else --minutes); 1: constant (TRM code)
    batch_size: int = 64  # puzzles per batch
    ema_decay: float = 0.999  # 0 disables the EMA

    def __post_init__(self) -> None:
        choices = {
            "mixer": ("mlp", "attention"),
            "scheme": ("trm", "dis", "onepass"),
            "dis_path": ("linear", "rules"),
            "step_weights": ("uniform", "increasing"),
            "input_mode": ("puzzle", "previous_answer", "answer_and_givens"),
            "optimizer": ("adamw", "adam_atan2"),
            "embed_init": ("trm", "unit"),
            "mixer_norm": ("positions", "hidden"),
            "init_state": ("fixed", "learned"),
            "step_embed_scale": ("token", "unit"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TRMConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("hidden", "layers", "n_sup", "T", "batch_size", "heads", "warmup_steps", "inner_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"TRMConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "adam_eps", "grad_clip", "ema_decay", "expansion", "q_loss_weight"):
            if not (self.__dict__[name] >= 0 and self.__dict__[name] < float("inf")):
                raise ValueError(f"TRMConfig.{name} must be a finite number >= 0, got {self.__dict__[name]}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.ema_decay < 1):
            raise ValueError("TRMConfig.beta1, beta2 and ema_decay must lie in [0, 1)")
        if not 0 <= self.lr_min_ratio <= 1:
            raise ValueError(f"TRMConfig.lr_min_ratio must lie in [0, 1], got {self.lr_min_ratio}")
        if not 0 <= self.halt_exploration <= 1:
            raise ValueError(f"TRMConfig.halt_exploration must lie in [0, 1], got {self.halt_exploration}")
        if self.n < 0 or self.prefix_tokens < 0:
            raise ValueError(f"TRMConfig.n and prefix_tokens must be >= 0, got {self.n} and {self.prefix_tokens}")
        if self.mixer == "attention" and self.hidden % (2 * self.heads):
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of 2 * heads ({2 * self.heads}) for rotary attention")

    @classmethod
    def paper_sudoku(cls, **overrides: Any) -> TRMConfig:
        """TRM-MLP with the TRM code's Sudoku-Extreme recipe: D=512, 2 layers, N_sup=16, T=3, n=6 (336 calls),
        Adam-atan2 at lr 1e-4 (betas 0.9, 0.95) after 2,000 warm-up steps, weight decay 1.0, global batch 768, EMA 0.999."""
        base = {"hidden": 512, "layers": 2, "n_sup": 16, "T": 3, "n": 6, "lr": 1e-4, "weight_decay": 1.0}
        base.update({"optimizer": "adam_atan2", "batch_size": 768, "warmup_steps": 2000, "ema_decay": 0.999})
        return cls(**{**base, **overrides})

    @classmethod
    def dis(cls, **overrides: Any) -> TRMConfig:
        """The DIS schedule: N_sup=6, T=1, n=2 (18 calls), step embedding, no halting head, AdamW, and (as
        the released DIS code, and as the environment's MDP) each step reading the answer written at the
        step before, here with the givens as tokens of their own."""
        base = {"scheme": "dis", "n_sup": 6, "T": 1, "n": 2, "halting": False, "step_embedding": True, "optimizer": "adamw"}
        # measured on 2 CPU cores (docs/deviations.md): no prefix tokens, batch 16 at lr 2e-3 with a
        # cosine to 5% over the run, the givens marked in the input
        base.update({"prefix_tokens": 0, "batch_size": 16, "lr": 2e-3, "lr_min_ratio": 0.05})
        base["input_mode"] = "answer_and_givens"
        # targets from rounds of singles deduction, and two layers: with them DIS passes 90% on easy in
        # 4 minutes (92.6%) and on medium in 15 (91.0%); one layer: 93.4% and 64.5%; the released
        # code's random reveal with one layer: 86.3% and 59.8%
        base.update({"dis_path": "rules", "layers": 2})
        return cls(**{**base, **overrides})

    @classmethod
    def onepass(cls, **overrides: Any) -> TRMConfig:
        """The one-pass baseline: TRM's network called once, ``y <- f(x + y + z)`` (n=0, 1 call)."""
        base = {"scheme": "onepass", "n_sup": 1, "T": 1, "n": 0, "halting": False}
        return cls(**{**base, **overrides})

    def calls_per_sample(self) -> int:
        """``n_sup * T * (n + 1)``: for documentation only; runs report the model's own count."""
        return self.n_sup * self.T * (self.n + 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TRMConfig:
        """The config a checkpoint recorded; a field it predates takes its value from :data:`LEGACY`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TRMConfig fields: {unknown}")
        return cls(**{**LEGACY, **d})

    def shape_fields(self) -> dict[str, Any]:
        """The fields that fix the parameter shapes (a checkpoint must match them)."""
        keys = ("hidden", "layers", "expansion", "mixer", "heads", "seq_len", "vocab", "step_embedding", "n_sup", "input_mode")
        keys += ("halting", "halt_confidence", "inner_multiple", "prefix_tokens", "pos_embedding", "init_state")
        return {k: getattr(self, k) for k in keys}


LEGACY: dict[str, Any] = {
    "mixer_norm": "hidden",
    "inner_multiple": 1,
    "prefix_tokens": 0,
    "pos_embedding": True,
    "init_state": "learned",
    "step_embed_scale": "unit",
    "halt_exploration": 0.0,
    "q_loss_weight": 1.0,
}
"""The model before the fidelity fixes of ``docs/deviations.md``: post-norm over hidden units, no
inner-width rounding, no prefix tokens, a learned position embedding, learned initial states,
a step embedding of std 1 added after the sqrt(D) scaling, no halting exploration, Q-loss weight 1.
Checkpoints written before these fields existed load with these values; the training-speed
benchmark runs them as its baseline."""
