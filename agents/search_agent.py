"""Test-time search with the rules as verifier: ``K`` sampled recursions per puzzle, the first verified answer wins.

A complete, conflict-free grid that keeps the givens is the solution of a puzzle with
one solution, so the rules can check an answer exactly without reading any label.
:class:`SearchAgent` spends more compute per puzzle to find one: it runs ``K``
trajectories of the recursive model per puzzle side by side, one batch of
``N * K`` rows, and stops a puzzle as soon as any of its trajectories holds a
verified answer.

* Trajectory 0 is the greedy one (argmax cells, as :class:`agents.trm_agent.TRMAgent`),
  so ``K = 1`` is exactly greedy decoding.
* Trajectories ``1 .. K - 1`` sample their answers: each blank cell's digit is drawn
  from ``softmax(l_c / T)`` (``temperature``), and that sampled answer is what the
  trajectory reads at its next step (the model's input is its previous answer), so
  different samples explore different paths. ``latent_noise > 0`` also adds
  ``N(0, sigma^2)`` noise to the sampled trajectories' latent ``z`` after each step
  (for models whose input does not carry the answer).

At each step every trajectory offers two candidates to the verifier, its greedy
readout (argmax) and the answer it sampled; the puzzle's answer is the first verified
candidate, else the greedy trajectory's; a puzzle halts once verified or after ``n_sup`` steps.
``info["forward_passes"]`` is counted by the model at run time and covers all ``K``
trajectories of the puzzles still searching.
"""

from __future__ import annotations

from typing import Any

import torch

from agents.base import AgentBase, make_action
from envs import augmentation
from envs.rules import verified
from trm.carry import Carry
from trm.checkpoint import load_model
from trm.model import TRM


class SearchAgent(AgentBase):
    """``K`` recursions per puzzle in one batch; returns the first answer the rules verify.

    Shapes: the agent sees ``N`` puzzles; internally it carries ``(N * K, P + 81, D)``
    latents and ``(N * K, 81)`` answers, row ``n * K + k`` being puzzle ``n``'s trajectory ``k``.
    """

    def __init__(
        self,
        model: TRM,
        *,
        k: int = 16,
        temperature: float = 1.0,
        latent_noise: float = 0.0,
        symmetries: bool = True,
        sample: bool = True,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if int(k) < 1:
            raise ValueError(f"k (trajectories per puzzle) must be at least 1, got {k}")
        if not temperature > 0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        if not latent_noise >= 0:
            raise ValueError(f"latent_noise must be >= 0, got {latent_noise}")
        self.model = model.eval()
        self.cfg = model.cfg
        self.k = int(k)
        self.temperature = float(temperature)
        self.latent_noise = float(latent_noise)
        self.symmetries = bool(symmetries)
        self.sample = bool(sample)
        self.seed = int(seed)
        self.max_steps = self.cfg.n_sup
        self.name = name or f"search K={self.k}"

    @classmethod
    def from_checkpoint(cls, path: str, *, device: str | torch.device = "cpu", ema: bool = True, **kw: Any) -> SearchAgent:
        """The (EMA, when saved) weights of a ``train_dis.py``, ``train_trm.py`` or RL run."""
        model, _ = load_model(path, ("dis", "trm", "ppo_recursion", "expert_iteration"), ema)
        return cls(model.to(device), **kw)

    def reset(self, obs: dict[str, torch.Tensor]) -> dict[str, Any]:
        puzzle = obs["puzzle"]
        n, dev = puzzle.shape[0], puzzle.device
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        if self.symmetries:
            src, digit = augmentation.random_symmetry(n * self.k, gen, dev)
        else:
            src, digit = augmentation.identity(n * self.k, dev)
        src[:: self.k], digit[:: self.k] = augmentation.identity(n, dev)  # the greedy trajectory sees the puzzle as given
        view = augmentation.apply(src, digit, puzzle.repeat_interleave(self.k, 0))[0]
        return {
            "inverse": augmentation.inverse(src, digit),
            "view": view,
            "carry": Carry(self.model, n * self.k),
            "step": 0,
            "active": torch.ones(n, dtype=torch.bool, device=dev),
            "answers": view.clone(),
            "generator": gen,
        }

    @torch.no_grad()
    def act(self, obs: dict[str, torch.Tensor], state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        model, k = self.model, self.k
        s = state["step"] + 1
        active = state["active"]
        puzzle = obs["puzzle"]
        n, dev = puzzle.shape[0], puzzle.device
        idx = active.nonzero().squeeze(-1)
        rows = (idx[:, None] * k + torch.arange(k, device=dev)).reshape(-1)
        p_rows = state["view"][rows]  # each trajectory's own view of its puzzle
        answers = state["answers"]
        tokens = model.input_tokens(p_rows, answers[rows])
        carry = state["carry"]
        before = model.net.sample_calls
        out = carry.step(model, tokens, rows, s)
        calls = (model.net.sample_calls - before) / max(1, idx.numel())  # per puzzle, all K trajectories
        sampled = (rows % k) > 0
        if self.latent_noise > 0:
            noise = torch.randn(out.z.shape, generator=state["generator"], device=dev) * self.latent_noise
            carry.z[rows] = out.z + noise * sampled[:, None, None]
        logits = out.logits.float()
        best = logits.argmax(-1)
        if self.sample:
            probs = torch.softmax(logits / self.temperature, -1).reshape(-1, 10)
            draw = torch.multinomial(probs, 1, generator=state["generator"]).reshape(logits.shape[:2])
        else:
            draw = best
        greedy = torch.where(p_rows > 0, p_rows, best)
        new = torch.where(sampled[:, None], torch.where(p_rows > 0, p_rows, draw), greedy)
        answers = answers.clone()
        answers[rows] = new
        # candidates, 2K per puzzle: each trajectory's greedy readout, then its sampled answer
        pairs = torch.stack([greedy, new], 1)  # (rows, 2, 81)
        cand = pairs.reshape(-1, k, 2, 81).transpose(1, 2).reshape(-1, 2 * k, 81)
        ok = verified(p_rows[:, None], pairs).reshape(-1, k, 2).transpose(1, 2).reshape(-1, 2 * k)  # (acting puzzles, 2K)
        found = ok.any(-1)
        pick = torch.where(found, ok.float().argmax(-1), 0)  # first verified candidate, else the greedy trajectory
        answer = obs["answer"].clone()
        chosen = cand[torch.arange(idx.numel(), device=dev), pick]
        src_inv, digit_inv = (x[idx * k + pick % k] for x in state["inverse"])  # back from the trajectory's view
        answer[idx] = augmentation.apply(src_inv, digit_inv, chosen)[0]
        halt = torch.zeros(n, dtype=torch.bool, device=dev)
        halt[idx] = found | (s >= self.cfg.n_sup)
        fp = torch.zeros(n, device=dev)
        fp[idx] = calls
        new_state = {**state, "step": s, "active": active & ~halt, "answers": answers}
        return make_action(answer, halt), new_state, {"forward_passes": fp, "rows": idx}
