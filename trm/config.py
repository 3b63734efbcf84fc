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
    seq_len: int = field(default=81, metadata={"cli": False})  # positions: the 81 cells
    vocab: int = field(default=10, metadata={"cli": False})  # 0 = blank / undecided, 1..9 digits
    # recursion
    n_sup: int = 16  # supervision steps (deep recursions) per puzzle
    T: int = 3  # latent recursions per supervision step (T - 1 without gradients)
    n: int = 6  # z updates per latent recursion
    # supervision
    scheme: str = field(default="trm", metadata={"cli": False})  # "trm", "dis" or "onepass": set by the script
    halting: bool = True  # train the Q head; in training a sample stops when it says halt
    halt_confidence: bool = False  # the halting logit also reads the least confident cell (see TRM.step)
    step_embedding: bool = False  # add an embedding of the step index s to x (DIS)
    dis_path: str = "linear"  # "linear" (growing random reveal) or "rules" (propagation rounds)
    step_weights: str = "uniform"  # "uniform" (released code) or "increasing" (paper text: w_s ∝ s)
    input_mode: str = "puzzle"  # "puzzle", or "previous_answer": from step 2 on x embeds the answer written last
    # optimisation
    optimizer: str = "adamw"  # "adamw" (released code) or "adam"
    lr: float = 1e-3  # peak learning rate (linear warm-up, then constant)
    weight_decay: float = 0.1  # decoupled (adamw) or L2 (adam)
    beta1: float = 0.9  # Adam's first-moment decay
    beta2: float = 0.95  # Adam's second-moment decay
    adam_eps: float = 1e-8  # Adam's epsilon
    grad_clip: float = 0.0  # clip the gradient norm to this value before each optimizer step (0: off)
    warmup_steps: int = 100  # optimizer steps of linear learning-rate warm-up
    batch_size: int = 64  # puzzles per batch
    ema_decay: float = 0.999  # 0 disables the EMA

    def __post_init__(self) -> None:
        choices = {
            "mixer": ("mlp", "attention"),
            "scheme": ("trm", "dis", "onepass"),
            "dis_path": ("linear", "rules"),
            "step_weights": ("uniform", "increasing"),
            "input_mode": ("puzzle", "previous_answer"),
            "optimizer": ("adamw", "adam"),
            "embed_init": ("trm", "unit"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TRMConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("hidden", "layers", "n_sup", "T", "batch_size", "heads", "warmup_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TRMConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "adam_eps", "grad_clip", "ema_decay", "expansion"):
            if not (self.__dict__[name] >= 0 and self.__dict__[name] < float("inf")):
                raise ValueError(f"TRMConfig.{name} must be a finite number >= 0, got {self.__dict__[name]}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.ema_decay < 1):
            raise ValueError("TRMConfig.beta1, beta2 and ema_decay must lie in [0, 1)")
        if self.n < 0:
            raise ValueError(f"TRMConfig.n must be >= 0, got {self.n}")
        if self.mixer == "attention" and self.hidden % (2 * self.heads):
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of 2 * heads ({2 * self.heads}) for rotary attention")

    @classmethod
    def paper_sudoku(cls, **overrides: Any) -> TRMConfig:
        """TRM-MLP as in the TRM paper on Sudoku: D=512, 2 layers, N_sup=16, T=3, n=6 (336 calls)."""
        return cls(**{"hidden": 512, "layers": 2, "n_sup": 16, "T": 3, "n": 6, "lr": 1e-4, "weight_decay": 1.0, **overrides})

    @classmethod
    def dis(cls, **overrides: Any) -> TRMConfig:
        """The DIS schedule: N_sup=6, T=1, n=2 (18 calls), step embedding, no halting head, and (as the
        released DIS code, and as the environment's MDP) each step reading the answer written at the step before."""
        base = {"scheme": "dis", "n_sup": 6, "T": 1, "n": 2, "halting": False, "step_embedding": True}
        base["input_mode"] = "previous_answer"
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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TRMConfig fields: {unknown}")
        return cls(**d)

    def shape_fields(self) -> dict[str, Any]:
        """The fields that fix the parameter shapes (a checkpoint must match them)."""
        keys = ("hidden", "layers", "expansion", "mixer", "heads", "seq_len", "vocab", "step_embedding", "n_sup")
        keys += ("halting", "halt_confidence")
        return {k: getattr(self, k) for k in keys}
