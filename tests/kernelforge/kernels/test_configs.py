"""The tuning spaces the kernels declare: never empty, and the default is one of them."""

from __future__ import annotations

import importlib

import pytest
import torch
from kernel_cases import make_paged_batch

import kernelforge as kf
from kernelforge.autotuning import capture_launches
from kernelforge.kernels import paged_attention, reshape_and_cache, rms_norm, rotary_embedding


def launches(backend: str, hidden: int, heads: int, head_size: int) -> list:
    x = torch.randn(2, hidden)
    q, k = torch.randn(2, heads * head_size), torch.randn(2, head_size)
    cache = torch.zeros(1, 16, 1, head_size)
    batch = make_paged_batch(q_lens=[1, 3], ctx_lens=[9, 3], num_heads=heads, num_kv_heads=1, head_size=head_size,
                             block_size=16, dtype=torch.float16, seed=0)
    with kf.backend(backend), capture_launches() as captured:
        rms_norm(torch.empty_like(x), x, torch.ones(hidden), 1e-6)
        rotary_embedding(torch.tensor([0, 1]), q, k, head_size, torch.randn(4, head_size), True)
        reshape_and_cache(k.view(2, 1, head_size), k.view(2, 1, head_size), cache, cache.clone(), torch.tensor([0, 1]))
        paged_attention(torch.empty_like(batch.query), *batch.args(), 0.1)
    return list(captured)


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
@pytest.mark.parametrize(("hidden", "heads", "head_size"), [(64, 1, 64), (576, 9, 64), (8192, 4, 256)])
def test_default_config_is_in_the_space(backend, hidden, heads, head_size):
    if backend not in kf.available_backends():
        pytest.skip(f"backend {backend} needs upstream triton (pip install -e '.[triton]'); "
                    "make test installs it, and there this skip fails the run")
    found = launches(backend, hidden, heads, head_size)
    assert {launch.autotuned.name for launch in found} >= {
        "_rms_norm_kernel", "_rotary_kernel", "_reshape_and_cache_kernel", "_paged_attention_kernel"}
    with kf.backend(backend):
        for launch in found:
            configs = launch.autotuned.configs(launch)
            assert configs, launch.autotuned.name
            assert launch.autotuned.default_config(launch) in configs, launch.autotuned.name


def test_attention_tiles_respect_the_npu_budget():
    """Off the CPU backend every attention tile config fits the on-chip buffer by the
    compiler's estimate: 256-wide fp16 heads fit only the smallest tile."""
    module = importlib.import_module("kernelforge.kernels.paged_attention")
    batch = make_paged_batch(q_lens=[1], ctx_lens=[40], num_heads=4, num_kv_heads=1, head_size=256,
                             block_size=16, dtype=torch.float16, seed=0)
    with kf.backend("interpret"), capture_launches() as captured:
        paged_attention(torch.empty_like(batch.query), *batch.args(), 0.1)
        (launch,) = captured
        assert [c["TILE"] for c in module._configs(launch)] == [16]
