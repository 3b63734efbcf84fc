"""The Tiny Recursive Model: one small network applied recursively to (x, y, z).

Shapes: ``B`` samples, ``L = 81`` cells after ``P`` learned prefix tokens, ``D`` hidden
units. ``x`` is the embedded input (puzzle or previous answer, plus the step embedding for
DIS), ``y`` the embedded current answer, ``z`` the latent scratchpad; all three are
``(B, P + L, D)``.

* latent recursion: ``n`` times ``z <- f(x + y + z)``, then ``y <- f(y + z)``;
* deep recursion (one supervision step): ``T - 1`` latent recursions under
  ``torch.no_grad()``, then one with gradients, so gradients reach the parameters
  only through the last latent recursion;
* readouts: reference logits ``l_u = head(y)`` before the step and conditional logits
  ``l_c = head(y)`` after it, ``(B, L, 10)``, read from the cell positions; halting logit
  ``q = q_head(y_0)``, the first prefix position (``mean_L y`` without prefix tokens); with
  ``halt_confidence``, plus ``u * c``, ``c`` the best digit's log-probability in the least
  sure cell.

The network ``f`` is post-norm: ``h <- RMSNorm(h + mix(h))``, ``h <- RMSNorm(h + SwiGLU(h))``
per layer, where ``mix`` is an MLP over the positions (TRM-MLP; its norm runs over the
positions, as in the TRM code) or rotary self-attention (TRM-Att). ``f`` counts the
samples it processes: ``model.net.sample_calls`` after a rollout divided by the number of
samples is the forward passes per sample.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trm.config import TRMConfig


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """``c = min_i max_{a in 1..9} log softmax(l)_i[a]`` per sample ``(B,)``, clamped to [-20, 0].

    The log-probability of the best digit in the least sure cell: near 0 only when every
    cell holds a confident digit. A read-only statistic (computed without gradients).
    """
    with torch.no_grad():
        return torch.log_softmax(logits.float(), -1)[..., 1:].amax(-1).amin(-1).clamp(min=-20.0)


def rms_norm(h: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Parameter-free RMSNorm over the last dimension."""
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)


def inner_width(dim: int, expansion: float, multiple: int = 1) -> int:
    """SwiGLU inner width: ``round(expansion * dim * 2 / 3)`` rounded up to a multiple of ``multiple``."""
    return -(-int(round(expansion * dim * 2 / 3)) // multiple) * multiple


class SwiGLU(nn.Module):
    """``W_o (silu(W_g h) * W_u h)`` over the last dimension, inner width :func:`inner_width`."""

    def __init__(self, dim: int, expansion: float, multiple: int = 1) -> None:
        super().__init__()
        inner = inner_width(dim, expansion, multiple)
        self.gate_up = nn.Linear(dim, 2 * inner, bias=False)
        self.out = nn.Linear(inner, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        g, u = self.gate_up(h).chunk(2, dim=-1)
        return self.out(F.silu(g) * u)


def rotary(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables ``(L, head_dim / 2)`` for rotary position embeddings."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    ang = torch.arange(seq_len).float()[:, None] * inv[None]
    return ang.cos(), ang.sin()


def apply_rotary(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(q_2i, q_2i+1)`` of ``(B, H, L, hd)`` by the position angle."""
    q1, q2 = q[..., 0::2], q[..., 1::2]
    return torch.stack([q1 * cos - q2 * sin, q1 * sin + q2 * cos], dim=-1).flatten(-2)


class Attention(nn.Module):
    """Bidirectional multi-head self-attention with rotary positions."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden, bias=False)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        cos, sin = rotary(cfg.seq_len + cfg.prefix_tokens, cfg.hidden // cfg.heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, seq, d = h.shape
        q, k, v = self.qkv(h).view(b, seq, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, self.cos, self.sin), apply_rotary(k, self.cos, self.sin)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, seq, d))


class PositionMLP(nn.Module):
    """TRM-MLP's mixer: a SwiGLU across the ``P + L`` positions, shared over hidden units.

    ``forward`` takes and returns ``(B, D, P + L)``: the block works on the transposed tensor.
    """

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.mlp = SwiGLU(cfg.seq_len + cfg.prefix_tokens, cfg.expansion, cfg.inner_multiple)

    def forward(self, ht: torch.Tensor) -> torch.Tensor:
        return self.mlp(ht)


class Block(nn.Module):
    """One post-norm block. TRM-MLP with ``mixer_norm="positions"`` (the TRM code):
    ``h^T <- RMSNorm_P+L(h^T + mix(h^T))``, the norm over positions; with ``"hidden"``,
    ``h <- RMSNorm_D(h + mix(h^T)^T)``. Then ``h <- RMSNorm_D(h + SwiGLU(h))``."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.mix = PositionMLP(cfg) if cfg.mixer == "mlp" else Attention(cfg)
        self.mlp = SwiGLU(cfg.hidden, cfg.expansion, cfg.inner_multiple)
        self.norm_positions = cfg.mixer == "mlp" and cfg.mixer_norm == "positions"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if isinstance(self.mix, PositionMLP):
            ht = h.transpose(1, 2)
            h = rms_norm(ht + self.mix(ht)).transpose(1, 2) if self.norm_positions else rms_norm(h + self.mix(ht).transpose(1, 2))
        else:
            h = rms_norm(h + self.mix(h))
        return rms_norm(h + self.mlp(h))


class TinyNet(nn.Module):
    """The shared network ``f``: ``layers`` blocks; counts the samples it processes."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.sample_calls = 0  # sum over calls of the batch size: forward passes, per sample

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.sample_calls += h.shape[0]
        for blk in self.blocks:
            h = blk(h)
        return h


@dataclass
class StepOutput:
    """One supervision step: the carried state, both readouts and the halting logit."""

    y: torch.Tensor  # (B, P + L, D), detached
    z: torch.Tensor  # (B, P + L, D), detached
    logits_ref: torch.Tensor  # l_u = head(y before the step), (B, L, vocab)
    logits: torch.Tensor  # l_c = head(y after the step), (B, L, vocab); keeps its graph
    q: torch.Tensor  # halting logit (B,), keeps its graph: > 0 means "the answer is exactly right, stop"


class TRM(nn.Module):
    """Tiny Recursive Model over Sudoku grids (``TRMConfig`` fixes shape and schedule).

    The sequence is ``P`` prefix tokens (``cfg.prefix_tokens``, TRM's puzzle-embedding
    positions: learned, zero at init) followed by the ``L = 81`` cells; ``y`` and ``z`` are
    ``(B, P + L, D)``. Readouts take the cells (:meth:`cells`); the halting logit reads the
    first prefix position when there is one (as the TRM code), else the mean over cells.
    """

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        # with "answer_and_givens" a given digit v is its own token vocab - 1 + v: the model can tell
        # the puzzle's digits from the ones it wrote
        self.embed = nn.Embedding(cfg.vocab + (cfg.vocab - 1 if cfg.input_mode == "answer_and_givens" else 0), d)
        if cfg.embed_init == "trm":  # x = embed * sqrt(D) then starts at RMS ~1, like y and z
            nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(d))
        self.prefix = nn.Parameter(torch.zeros(cfg.prefix_tokens, d)) if cfg.prefix_tokens else None
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, d) / math.sqrt(d)) if cfg.pos_embedding else None
        self.step_embed = nn.Embedding(cfg.n_sup + 1, d) if cfg.step_embedding else None
        if self.step_embed is not None and cfg.step_embed_scale == "token":
            nn.init.normal_(self.step_embed.weight, std=1.0 / math.sqrt(d))
        if cfg.init_state == "fixed":  # TRM code: fixed draws of a truncated N(0, 1), saved with the weights
            self.register_buffer("y_init", nn.init.trunc_normal_(torch.empty(d), std=1.0, a=-2.0, b=2.0))
            self.register_buffer("z_init", nn.init.trunc_normal_(torch.empty(d), std=1.0, a=-2.0, b=2.0))
        else:
            self.y_init = nn.Parameter(torch.randn(d) / math.sqrt(d))
            self.z_init = nn.Parameter(torch.randn(d) / math.sqrt(d))
        self.net = TinyNet(cfg)
        self.head = nn.Linear(d, cfg.vocab, bias=False)
        self.q_head = nn.Linear(d, 1)
        with torch.no_grad():  # start by not halting, as TRM does
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        # optional halting feature: weight u of the least confident cell's best digit (see step)
        self.q_confidence = nn.Parameter(torch.ones(1)) if cfg.halt_confidence else None

    # ------------------------------------------------------------------ pieces
    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial ``(y, z)``, each ``(batch, P + L, D)`` (fixed buffers or learned, ``cfg.init_state``)."""
        shape = (batch, self.cfg.prefix_tokens + self.cfg.seq_len, self.cfg.hidden)
        return self.y_init.expand(shape), self.z_init.expand(shape)

    def input_tokens(self, puzzle: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
        """The tokens ``(B, L)`` a step reads, from the puzzle and the answer written last (both ``(B, L)``).

        ``input_mode``: "puzzle" -> the puzzle; "previous_answer" -> the answer with the givens
        in place; "answer_and_givens" -> the same, each given digit ``v`` as token ``9 + v``.
        At the first step the answer is blank, so the input is the puzzle itself.
        """
        mode = self.cfg.input_mode
        if mode == "puzzle":
            return puzzle
        given = puzzle > 0
        return torch.where(given, puzzle + (self.cfg.vocab - 1 if mode == "answer_and_givens" else 0), answer)

    def cells(self, h: torch.Tensor) -> torch.Tensor:
        """The ``L`` cell positions of a state ``(B, P + L, D)`` -> ``(B, L, D)``."""
        return h[:, self.cfg.prefix_tokens :]

    def readout(self, y: torch.Tensor) -> torch.Tensor:
        """Answer logits ``(B, L, vocab)`` from ``y (B, P + L, D)``."""
        return self.head(self.cells(y))

    def embed_input(self, tokens: torch.Tensor, step: int | torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, P + L, D)`` from input tokens ``(B, L)`` in 0..9 and, with DIS, the step index.

        ``x = sqrt(D) * ([prefix; E[tokens]] + e_s)`` with the step embedding ``e_s`` at token
        scale (``step_embed_scale="token"``, the DIS code), or ``sqrt(D) * [...] + e_s`` (``"unit"``).
        ``step`` is one index ``s`` for the whole batch or a tensor ``(B,)`` of indices.
        """
        x = self.embed(tokens.long())
        if self.prefix is not None:
            x = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], dim=1)
        e = None
        if self.step_embed is not None:
            s = torch.as_tensor(step if step is not None else -1, device=x.device)
            if step is None or (s.numel() and (s.min() < 0 or s.max() > self.cfg.n_sup)):
                raise ValueError(f"this model embeds the step index: pass 0 <= step <= {self.cfg.n_sup}, got {step}")
            e = self.step_embed(s.long())
            e = e[:, None, :] if e.dim() == 2 else e
        if e is not None and self.cfg.step_embed_scale == "token":
            x = x + e
        x = x * math.sqrt(self.cfg.hidden)
        if e is not None and self.cfg.step_embed_scale == "unit":
            x = x + e
        if self.pos is not None:
            x = x + F.pad(self.pos, (0, 0, self.cfg.prefix_tokens, 0))
        return x

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` updates ``z <- f(x + y + z)``, then ``y <- f(y + z)``: ``n + 1`` network calls.

        With ``n = 0`` (the one-pass network) the answer update reads the input itself:
        ``y <- f(x + y + z)``.
        """
        for _ in range(self.cfg.n):
            z = self.net(x + y + z)
        y = self.net(y + z if self.cfg.n > 0 else x + y + z)
        return y, z

    def deep_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``T - 1`` latent recursions without gradients, then one with."""
        with torch.no_grad():
            for _ in range(self.cfg.T - 1):
                y, z = self.latent_recursion(x, y, z)
        return self.latent_recursion(x, y, z)

    # ------------------------------------------------------------------ one supervision step
    def step(self, tokens: torch.Tensor, y: torch.Tensor, z: torch.Tensor, step: int | torch.Tensor | None = None) -> StepOutput:
        """Run one supervision step from input tokens ``(B, L)`` and state ``(y, z)``.

        The returned state is detached (deep supervision carries it to the next step
        without gradients); ``logits`` and ``q`` keep their graph for the loss.
        """
        x = self.embed_input(tokens, step)
        with torch.no_grad():
            logits_ref = self.readout(y)
        y, z = self.deep_recursion(x, y, z)
        logits = self.readout(y)
        q = self.q_head(y[:, 0] if self.cfg.prefix_tokens else y.mean(1)).squeeze(-1)
        if self.q_confidence is not None:
            # q += u * c with c = confidence(l_c), the least sure cell's best-digit log-probability
            q = q + self.q_confidence * confidence(logits).to(q.dtype)
        return StepOutput(y.detach(), z.detach(), logits_ref, logits, q)

    def reset_counter(self) -> None:
        self.net.sample_calls = 0

    def save_pretrained(self, directory: str | os.PathLike, *, kind: str, **kw: Any) -> Path:
        """Write this model as a shareable folder (``config.json`` + ``model.safetensors``); see
        :func:`trm.pretrained.save_pretrained` for ``kind`` and the other keywords."""
        from trm.pretrained import save_pretrained

        return save_pretrained(directory, self, kind=kind, **kw)

    @staticmethod
    def from_pretrained(directory: str | os.PathLike) -> TRM:
        """The model of a folder written by :meth:`save_pretrained` (CPU, eval mode); no code in it runs."""
        from trm.pretrained import from_pretrained

        return from_pretrained(directory)[0]


def training_bytes(cfg: TRMConfig, batch: float) -> float:
    """A rough estimate of the memory (bytes) training ``cfg`` on ``batch`` puzzles takes: weights, gradients,
    Adam's two moments and the EMA in fp32, and a share of the batch's activations. The parameters are
    counted on the meta device, without allocating them; a check before a run, not a measurement."""
    with torch.device("meta"):
        params = sum(p.numel() for p in TRM(cfg).parameters())
    activations = batch * (cfg.seq_len + cfg.prefix_tokens) * cfg.hidden * 4 * 16
    return params * 4 * 5 + activations
