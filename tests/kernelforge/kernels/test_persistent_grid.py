"""The NPU launch geometry — a core-sized grid whose programs loop over the work items —
run on the CPU backends by pretending to be an NPU with 3 cores."""

from __future__ import annotations

import importlib

import pytest
import torch
from kernel_cases import ATTN_TOL, backend_param, make_paged_batch, seeded

import kernelforge as kf
from kernelforge.kernels import (fused_add_rms_norm, paged_attention, reference, reshape_and_cache, rms_norm,
                                 rotary_embedding)

MODULES = ["rms_norm", "rotary_embedding", "reshape_and_cache", "paged_attention"]


@pytest.fixture
def three_core_npu(monkeypatch):
    for name in MODULES:
        module = importlib.import_module(f"kernelforge.kernels.{name}")
        monkeypatch.setattr(module, "persistent", lambda device: True)
        monkeypatch.setattr(module, "grid_size", lambda n_work, device: min(n_work, 3))


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
def test_norms_rotary_and_cache_writes(backend, three_core_npu):
    gen = seeded(0)
    x, residual, weight = torch.randn(7, 96, generator=gen), torch.randn(7, 96, generator=gen), torch.randn(96)
    out, expected = torch.empty_like(x), torch.empty_like(x)
    x1, r1, x2, r2 = x.clone(), residual.clone(), x.clone(), residual.clone()
    q, k = torch.randn(7, 4 * 64, generator=gen), torch.randn(7, 2 * 64, generator=gen)
    q1, k1, q2, k2 = q.clone(), k.clone(), q.clone(), k.clone()
    cos_sin, positions = torch.randn(50, 64, generator=gen), torch.randint(0, 50, (7,), generator=gen)
    key = torch.randn(7, 2, 64, generator=gen)
    slots = torch.tensor([5, -1, 0, 17, 30, 2, -1])
    caches = [torch.zeros(2, 16, 2, 64) for _ in range(4)]
    with kf.backend(backend):
        rms_norm(out, x, weight, 1e-6)
        fused_add_rms_norm(x1, r1, weight, 1e-6)
        rotary_embedding(positions, q1, k1, 64, cos_sin, False)
        reshape_and_cache(key, key, caches[0], caches[1], slots)
    reference.rms_norm(expected, x, weight, 1e-6)
    reference.fused_add_rms_norm(x2, r2, weight, 1e-6)
    reference.rotary_embedding(positions, q2, k2, 64, cos_sin, False)
    reference.reshape_and_cache(key, key, caches[2], caches[3], slots)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close((x1, r1), (x2, r2))
    torch.testing.assert_close((q1, k1), (q2, k2))
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("segments", [1, 2])
def test_paged_attention(backend, segments, three_core_npu, monkeypatch):
    monkeypatch.setattr(importlib.import_module("kernelforge.kernels.paged_attention"), "num_kv_segments",
                        lambda *args: segments)
    batch = make_paged_batch(q_lens=[1, 0, 1, 1], ctx_lens=[40, 3, 17, 1], num_heads=4, num_kv_heads=2,
                             head_size=64, block_size=16, dtype=torch.float32, seed=1)
    if segments == 1:  # prefill only exists without the split
        batch = make_paged_batch(q_lens=[1, 0, 9, 20], ctx_lens=[40, 3, 17, 20], num_heads=4, num_kv_heads=2,
                                 head_size=64, block_size=16, dtype=torch.float32, seed=1)
    out, expected = torch.full_like(batch.query, float("nan")), torch.full_like(batch.query, float("nan"))
    with kf.backend(backend):
        paged_attention(out, *batch.args(), 0.125)
    reference.paged_attention(expected, *batch.args(), 0.125)
    torch.testing.assert_close(out, expected, equal_nan=True, **ATTN_TOL[torch.float32])
