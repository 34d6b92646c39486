"""Every op under KF_SANITIZE=1: the CPU backend bounds-checks each unmasked load and store,
so a kernel that reads past a tensor (a padded head, a block-table slot past the context,
a skipped padding token) fails here even when its result happens to be right."""

from __future__ import annotations

import pytest
import torch
from kernel_cases import ATTN_TOL, make_paged_batch, seeded

import kernelforge as kf
from kernelforge.kernels import (fused_add_rms_norm, paged_attention, reference, reshape_and_cache, rms_norm,
                                 rotary_embedding)


@pytest.mark.parametrize("head_size", [64, 80])  # attention loads K/V unmasked when the head is not padded
def test_all_ops_stay_in_bounds(monkeypatch, head_size):
    monkeypatch.setenv("KF_SANITIZE", "1")
    gen = seeded(0)
    d = head_size
    x, residual, weight = torch.randn(3, d, generator=gen), torch.randn(3, d, generator=gen), torch.randn(d)
    query, key = torch.randn(3, 2, d, generator=gen), torch.randn(3, 1, d, generator=gen)
    cos_sin = torch.randn(10, d // 2, generator=gen)
    key_cache = torch.zeros(2, 16, 1, d)
    batch = make_paged_batch(q_lens=[1, 0, 5], ctx_lens=[17, 2, 5], num_heads=2, num_kv_heads=1, head_size=d,
                             block_size=16, dtype=torch.float32, seed=1)
    out, expected = torch.full_like(batch.query, float("nan")), torch.full_like(batch.query, float("nan"))
    with kf.backend("cpu"):
        rms_norm(torch.empty_like(x), x, weight, 1e-6)
        fused_add_rms_norm(x, residual, weight, 1e-6)
        rotary_embedding(torch.tensor([0, 9, 3]), query, key, d, cos_sin, False)
        reshape_and_cache(key, key, key_cache, key_cache.clone(), torch.tensor([31, -1, 0]))
        paged_attention(out, *batch.args(), 0.1)
    reference.paged_attention(expected, *batch.args(), 0.1)
    torch.testing.assert_close(out, expected, equal_nan=True, **ATTN_TOL[torch.float32])
