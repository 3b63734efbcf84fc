"""The Tiny Recursive Model: one small network applied recursively to (x, y, z).

Shapes: ``B`` samples, ``L = 81`` positions, ``D`` hidden units. ``x`` is the embedded
input (puzzle or previous answer, plus the step embedding for DIS), ``y`` the embedded
current answer, ``z`` the latent scratchpad; all three are ``(B, L, D)``.

* latent recursion: ``n`` times ``z <- f(x + y + z)``, then ``y <- f(y + z)``;
* deep recursion (one supervision step): ``T - 1`` latent recursions under
  ``torch.no_grad()``, then one with gradients, so gradients reach the parameters
  only through the last latent recursion;
* readouts: reference logits ``l_u = head(y)`` before the step and conditional logits
  ``l_c = head(y)`` after it, ``(B, L, 10)``; halting logit ``q = q_head(mean_L y)`` (with
  ``halt_confidence``, plus ``u * c``, ``c`` the best digit's log-probability in the least
  sure cell).

The network ``f`` is post-norm: ``h <- RMSNorm(h + mix(h))``, ``h <- RMSNorm(h + SwiGLU(h))``
per layer, where ``mix`` is an MLP over the positions (TRM-MLP) or rotary self-attention
(TRM-Att). ``f`` counts the samples it processes: ``model.net.sample_calls`` after a
rollout divided by the number of samples is the forward passes per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


class SwiGLU(nn.Module):
    """``W_o (silu(W_g h) * W_u h)`` over the last dimension, hidden width ``expansion * dim``."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        inner = int(round(expansion * dim * 2 / 3))
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
        cos, sin = rotary(cfg.seq_len, cfg.hidden // cfg.heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, seq, d = h.shape
        q, k, v = self.qkv(h).view(b, seq, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, self.cos, self.sin), apply_rotary(k, self.cos, self.sin)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, seq, d))


class PositionMLP(nn.Module):
    """TRM-MLP's mixer: a SwiGLU across the ``L`` positions, shared over hidden units."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.mlp = SwiGLU(cfg.seq_len, cfg.expansion)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h.transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.mix = PositionMLP(cfg) if cfg.mixer == "mlp" else Attention(cfg)
        self.mlp = SwiGLU(cfg.hidden, cfg.expansion)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
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

    y: torch.Tensor  # (B, L, D), detached
    z: torch.Tensor  # (B, L, D), detached
    logits_ref: torch.Tensor  # l_u = head(y before the step), (B, L, vocab)
    logits: torch.Tensor  # l_c = head(y after the step), (B, L, vocab); keeps its graph
    q: torch.Tensor  # halting logit (B,), keeps its graph: > 0 means "the answer is exactly right, stop"


class TRM(nn.Module):
    """Tiny Recursive Model over Sudoku grids (``TRMConfig`` fixes shape and schedule)."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.embed = nn.Embedding(cfg.vocab, d)
        if cfg.embed_init == "trm":  # x = embed * sqrt(D) then starts at RMS ~1, like y and z
            nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(d))
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, d) / math.sqrt(d)) if cfg.mixer == "mlp" else None
        self.step_embed = nn.Embedding(cfg.n_sup + 1, d) if cfg.step_embedding else None
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
        """Learned initial ``(y, z)``, each ``(batch, L, D)``."""
        shape = (batch, self.cfg.seq_len, self.cfg.hidden)
        return self.y_init.expand(shape), self.z_init.expand(shape)

    def embed_input(self, tokens: torch.Tensor, step: int | torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, L, D)`` from input tokens ``(B, L)`` in 0..9 and, with DIS, the step index.

        ``step`` is one index ``s`` for the whole batch or a tensor ``(B,)`` of indices.
        """
        x = self.embed(tokens.long()) * math.sqrt(self.cfg.hidden)
        if self.pos is not None:
            x = x + self.pos
        if self.step_embed is not None:
            s = torch.as_tensor(step if step is not None else -1, device=x.device)
            if step is None or (s.numel() and (s.min() < 0 or s.max() > self.cfg.n_sup)):
                raise ValueError(f"this model embeds the step index: pass 0 <= step <= {self.cfg.n_sup}, got {step}")
            e = self.step_embed(s.long())
            x = x + (e[:, None, :] if e.dim() == 2 else e)
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
            logits_ref = self.head(y)
        y, z = self.deep_recursion(x, y, z)
        logits = self.head(y)
        q = self.q_head(y.mean(1)).squeeze(-1)
        if self.q_confidence is not None:
            # q += u * c with c = confidence(l_c), the least sure cell's best-digit log-probability
            q = q + self.q_confidence * confidence(logits).to(q.dtype)
        return StepOutput(y.detach(), z.detach(), logits_ref, logits, q)

    def reset_counter(self) -> None:
        self.net.sample_calls = 0
