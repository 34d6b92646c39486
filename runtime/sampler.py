"""Pick one next token per sequence from the model's logits, batched over the step.

Each row is processed as vLLM does: greedy rows take the argmax of the raw logits; the
others are divided by their temperature, then filtered by top-k, top-p and min-p, and
sampled. Filters are tensor ops over the whole batch (a disabled filter is a no-op value
for that row: k = 0, p = 1, min_p = 0) and are skipped entirely when no row uses them.

Sampling uses the exponential race (argmax of p / q with q ~ Exp(1)), which draws exactly
from p. A seeded request draws its `q` row from its own `torch.Generator`, advanced once
per token, so its samples do not depend on what else is in the batch; unseeded rows
share one draw from the global generator.

Log-probabilities are those of the model's raw distribution (before temperature and
filters), as vLLM reports by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runtime.sampling_params import SamplingParams


@dataclass
class SamplingMetadata:
    """Per-row sampling settings for one step, as tensors on the logits' device."""

    temperature: torch.Tensor          # [N] float32; 1.0 on greedy rows (unused there)
    greedy: torch.Tensor               # [N] bool
    top_k: torch.Tensor | None         # [N] int64, 0 = off; None when no row uses top-k
    top_p: torch.Tensor | None         # [N] float32, None when no row uses top-p
    min_p: torch.Tensor | None         # [N] float32, None when no row uses min-p
    generators: list[torch.Generator | None]
    all_greedy: bool
    num_logprobs: int                  # the most any row asked for; -1 when none asked

    @classmethod
    def build(cls, params: list[SamplingParams], generators: list[torch.Generator | None],
              vocab_size: int, device: torch.device) -> SamplingMetadata:
        greedy = [p.greedy for p in params]
        temps = [1.0 if g else p.temperature for p, g in zip(params, greedy)]
        sampled = [p for p, g in zip(params, greedy) if not g]

        def column(values: list, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        return cls(
            temperature=column(temps, torch.float32),
            greedy=column(greedy, torch.bool),
            top_k=column([p.top_k if 0 < p.top_k < vocab_size and not p.greedy else 0
                          for p in params], torch.int64)
            if any(0 < p.top_k < vocab_size for p in sampled) else None,
            top_p=column([p.top_p for p in params], torch.float32)
            if any(p.top_p < 1.0 for p in sampled) else None,
            min_p=column([p.min_p for p in params], torch.float32)
            if any(p.min_p > 0.0 for p in sampled) else None,
            generators=generators,
            all_greedy=all(greedy),
            num_logprobs=max((p.logprobs for p in params if p.logprobs is not None), default=-1),
        )


@dataclass
class SamplerOutput:
    token_ids: torch.Tensor                     # [N] int64
    logprobs: torch.Tensor | None = None        # [N] log-probability of the sampled token
    ranks: torch.Tensor | None = None           # [N] its rank (1 = most likely)
    top_ids: torch.Tensor | None = None         # [N, K] most likely tokens
    top_logprobs: torch.Tensor | None = None    # [N, K] and their log-probabilities


class Sampler:
    def __call__(self, logits: torch.Tensor, meta: SamplingMetadata) -> SamplerOutput:
        logits = logits.float()
        greedy_ids = logits.argmax(dim=-1)
        if meta.all_greedy:
            token_ids = greedy_ids
        else:
            probs = filtered_probs(logits, meta)
            token_ids = torch.where(meta.greedy, greedy_ids, exponential_race(probs, meta.generators))
        out = SamplerOutput(token_ids=token_ids)
        if meta.num_logprobs >= 0:
            add_logprobs(out, logits, meta.num_logprobs)
        return out


def filtered_probs(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p, as probabilities (vLLM's order)."""
    logits = logits / meta.temperature.unsqueeze(1)
    if meta.top_k is not None:
        logits = apply_top_k(logits, meta.top_k)
    if meta.top_p is not None:
        logits = apply_top_p(logits, meta.top_p)
    probs = logits.softmax(dim=-1)
    if meta.min_p is not None:
        probs = apply_min_p(probs, meta.min_p)
    return probs


def apply_top_k(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep each row's k largest logits (ties with the k-th are kept too); k = 0 keeps all."""
    top = logits.topk(int(k.max()), dim=-1).values
    threshold = top.gather(1, (k - 1).clamp(min=0).unsqueeze(1))
    threshold = threshold.masked_fill((k == 0).unsqueeze(1), float("-inf"))
    return logits.masked_fill(logits < threshold, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches p."""
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= (1.0 - p).unsqueeze(1)
    drop[:, -1] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


def apply_min_p(probs: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens less likely than min_p times the row's most likely token."""
    threshold = probs.amax(dim=-1, keepdim=True) * min_p.unsqueeze(1)
    return probs.masked_fill(probs < threshold, 0.0)


def exponential_race(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One categorical sample per row; seeded rows use their own generator."""
    q = torch.empty_like(probs).exponential_()
    for row, gen in enumerate(generators):
        if gen is not None:
            q[row].exponential_(generator=gen)
    return (probs / q).argmax(dim=-1)


def add_logprobs(out: SamplerOutput, logits: torch.Tensor, k: int) -> None:
    logprobs = logits.log_softmax(dim=-1)
    sampled = logprobs.gather(1, out.token_ids.unsqueeze(1))
    out.logprobs = sampled.squeeze(1)
    out.ranks = (logprobs > sampled).sum(dim=-1) + 1
    out.top_logprobs, out.top_ids = logprobs.topk(k, dim=-1)
