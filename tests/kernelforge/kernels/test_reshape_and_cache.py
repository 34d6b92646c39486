"""reshape_and_cache (DSL kernel) against the torch reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import DTYPES, backend_param, randn, seeded

import kernelforge as kf
from kernelforge.kernels import reference, reshape_and_cache


def check(backend, num_tokens, num_kv_heads, head_size, block_size, num_blocks, dtype, index_dtype, seed):
    gen = seeded(seed)
    key = randn((num_tokens, num_kv_heads, head_size), dtype, gen)
    value = randn((num_tokens, num_kv_heads, head_size), dtype, gen)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[torch.rand(num_tokens, generator=gen) < 0.25] = -1  # padding tokens
    slots = slots.to(index_dtype)
    key_cache = randn((num_blocks, block_size, num_kv_heads, head_size), dtype, gen)
    value_cache = randn((num_blocks, block_size, num_kv_heads, head_size), dtype, gen)
    kc, vc = key_cache.clone(), value_cache.clone()
    with kf.backend(backend):
        reshape_and_cache(key, value, key_cache, value_cache, slots)
    reference.reshape_and_cache(key, value, kc, vc, slots)
    assert torch.equal(key_cache, kc) and torch.equal(value_cache, vc)


@given(num_tokens=st.integers(1, 40), num_kv_heads=st.integers(1, 4), head_size=st.sampled_from([64, 80, 96, 128, 256]),
       block_size=st.sampled_from([16, 32, 64, 128]), dtype=st.sampled_from(DTYPES),
       index_dtype=st.sampled_from([torch.int32, torch.int64]), seed=st.integers(0, 2**16))
def test_matches_reference_cpu(num_tokens, num_kv_heads, head_size, block_size, dtype, index_dtype, seed):
    num_blocks = -(-num_tokens // block_size) + 1
    check("cpu", num_tokens, num_kv_heads, head_size, block_size, num_blocks, dtype, index_dtype, seed)


@pytest.mark.slow
@settings(max_examples=6)
@given(num_tokens=st.integers(1, 8), head_size=st.sampled_from([64, 128]), block_size=st.sampled_from([16, 32, 64]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("backend", [backend_param("interpret")])
def test_matches_reference_interpret(backend, num_tokens, head_size, block_size, dtype, seed):
    check(backend, num_tokens, 2, head_size, block_size, 2, dtype, torch.int64, seed)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
def test_strided_key_value_from_a_fused_projection(backend):
    """key/value sliced out of one [T, (q + k + v) heads * head_size] buffer."""
    gen = seeded(1)
    qkv = randn((5, 4 * 64 + 2 * 2 * 64), torch.float32, gen)
    key = qkv[:, 256:384].view(5, 2, 64)
    value = qkv[:, 384:].view(5, 2, 64)
    slots = torch.tensor([3, -1, 17, 0, 31])
    caches = [torch.zeros(2, 16, 2, 64) for _ in range(4)]
    with kf.backend(backend):
        reshape_and_cache(key, value, caches[0], caches[1], slots)
    reference.reshape_and_cache(key, value, caches[2], caches[3], slots)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])


def test_all_padding_writes_nothing():
    key = torch.randn(3, 1, 64)
    cache = torch.zeros(1, 16, 1, 64)
    reshape_and_cache(key, key, cache, cache.clone(), torch.full((3,), -1))
    assert (cache == 0).all()
