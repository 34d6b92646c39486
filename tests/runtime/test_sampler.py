"""Sampler: greedy, the top-k / top-p / min-p masks against direct definitions, seeded
reproducibility independent of the batch, sampling frequencies, and logprobs."""

from __future__ import annotations

import pytest
import torch

from runtime.sampler import Sampler, SamplingMetadata, apply_min_p, apply_top_k, apply_top_p
from runtime.sampling_params import SamplingParams

V = 10


def meta_for(params: list[SamplingParams], seeds: bool = True) -> SamplingMetadata:
    gens = [torch.Generator().manual_seed(p.seed) if seeds and p.seed is not None else None for p in params]
    return SamplingMetadata.build(params, gens, V, torch.device("cpu"))


def kept(logits: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in logits]


def test_top_k_keeps_the_k_largest_per_row_and_zero_means_off():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    out = apply_top_k(logits, torch.tensor([2, 1, 0]))
    assert kept(out) == [{1, 2}, {0}, {0, 1, 2, 3}]


def test_top_p_keeps_the_smallest_head_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    out = apply_top_p(probs.log(), torch.tensor([0.79, 0.81]))
    assert kept(out) == [{0, 1}, {3, 2, 1}]
    tiny = apply_top_p(probs.log(), torch.tensor([1e-6, 1e-6]))
    assert kept(tiny) == [{0}, {3}], "the most likely token always survives"


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    probs = torch.tensor([[0.6, 0.25, 0.1, 0.05]])
    out = apply_min_p(probs, torch.tensor([0.2]))
    assert torch.equal(out, torch.tensor([[0.6, 0.25, 0.0, 0.0]]))


def test_greedy_is_argmax_even_in_a_mixed_batch():
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=1),
              SamplingParams(temperature=0.0, top_k=3), SamplingParams(temperature=0.7)]
    out = Sampler()(logits, meta_for(params))
    assert out.token_ids[[0, 2]].tolist() == logits.argmax(-1)[[0, 2]].tolist()


def test_seeded_rows_reproduce_regardless_of_batch_composition():
    gen = torch.Generator().manual_seed(1)
    row = torch.randn(1, V, generator=gen)
    target = SamplingParams(temperature=1.0, seed=1234)
    meta = meta_for([target])
    alone = [int(Sampler()(row, meta).token_ids[0]) for _ in range(20)]
    batch_meta = meta_for([SamplingParams(temperature=0.9), target, SamplingParams(temperature=0.0),
                           SamplingParams(temperature=1.3, seed=7)])
    batched = []
    for _ in range(20):
        logits = torch.cat([torch.randn(1, V, generator=gen), row, torch.randn(2, V, generator=gen)])
        batched.append(int(Sampler()(logits, batch_meta).token_ids[1]))
    assert batched == alone
    assert len(set(alone)) > 1, "a seeded stream still samples, it does not repeat one token"


def test_samples_follow_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05] + [1e-9] * (V - 4)]))
    params = SamplingParams(temperature=1.0, top_k=3, seed=0)
    meta = meta_for([params])
    counts = torch.bincount(torch.tensor([int(Sampler()(logits, meta).token_ids[0]) for _ in range(3000)]),
                            minlength=V)
    freqs = counts.float() / counts.sum()
    expected = torch.tensor([0.5, 0.3, 0.15]) / 0.95
    assert counts[3:].sum() == 0, "top-k=3 never samples the 4th token"
    assert torch.allclose(freqs[:3], expected, atol=0.04)


def test_temperature_sharpens_the_distribution():
    logits = torch.log(torch.tensor([[0.6, 0.4] + [1e-9] * (V - 2)]))
    meta = meta_for([SamplingParams(temperature=0.25, seed=3)])
    picks = [int(Sampler()(logits, meta).token_ids[0]) for _ in range(2000)]
    share = picks.count(0) / len(picks)
    assert share == pytest.approx(0.6**4 / (0.6**4 + 0.4**4), abs=0.04)


def test_logprobs_are_raw_log_softmax_with_topk_and_rank():
    logits = torch.tensor([[2.0, 1.0, 3.0, 0.0] + [-5.0] * (V - 4)])
    meta = meta_for([SamplingParams(temperature=0.0, logprobs=2)])
    out = Sampler()(logits, meta)
    ref = logits.log_softmax(-1)
    assert out.token_ids.tolist() == [2] and out.ranks.tolist() == [1]
    assert out.top_ids.tolist() == [[2, 0]]
    assert torch.allclose(out.top_logprobs, ref[:, [2, 0]]) and torch.allclose(out.logprobs, ref[:, 2])
    forced = meta_for([SamplingParams(temperature=1.0, top_k=1, seed=0, logprobs=0)])
    low = torch.tensor([[0.0, 9.0] + [-9.0] * (V - 2)])
    out = Sampler()(low, forced)
    assert out.token_ids.tolist() == [1] and out.ranks.tolist() == [1] and out.top_ids.shape == (1, 0)


def test_no_logprobs_unless_asked():
    out = Sampler()(torch.randn(2, V), meta_for([SamplingParams(temperature=0.0)] * 2))
    assert out.logprobs is None and out.top_ids is None
