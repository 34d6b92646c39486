"""rotary_embedding (DSL kernel) against the torch reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import DTYPES, TOL, backend_param, randn, seeded

import kernelforge as kf
from kernelforge.kernels import reference, rotary_embedding


def cos_sin_cache(max_position: int, rot_dim: int, dtype: torch.dtype) -> torch.Tensor:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rot_dim, 2).float() / rot_dim))
    freqs = torch.outer(torch.arange(max_position).float(), inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(dtype)


def check(backend, num_tokens, num_heads, num_kv_heads, head_size, rot_dim, is_neox, three_d, dtype,
          cache_dtype, seed):
    gen = seeded(seed)
    shape = (lambda h: (num_tokens, h, head_size)) if three_d else (lambda h: (num_tokens, h * head_size))
    query = randn(shape(num_heads), dtype, gen)
    key = None if num_kv_heads == 0 else randn(shape(num_kv_heads), dtype, gen)
    cache = cos_sin_cache(4096, rot_dim, cache_dtype)
    positions = torch.randint(0, 4096, (num_tokens,), generator=gen)
    q1, q2 = query.clone(), query.clone()
    k1, k2 = (None, None) if key is None else (key.clone(), key.clone())
    with kf.backend(backend):
        rotary_embedding(positions, q1, k1, head_size, cache, is_neox)
    reference.rotary_embedding(positions, q2, k2, head_size, cache, is_neox)
    torch.testing.assert_close(q1, q2, **TOL[dtype])
    if key is not None:
        torch.testing.assert_close(k1, k2, **TOL[dtype])


@st.composite
def rotary_cases(draw, head_sizes):
    head_size = draw(st.sampled_from(head_sizes))
    rot_dim = draw(st.sampled_from([head_size, head_size // 2, 2 * (head_size // 4 // 2) or 2]))
    dtype = draw(st.sampled_from(DTYPES))
    return dict(num_tokens=draw(st.integers(1, 12)), num_heads=draw(st.integers(1, 9)),
                num_kv_heads=draw(st.integers(0, 3)), head_size=head_size, rot_dim=rot_dim,
                is_neox=draw(st.booleans()), three_d=draw(st.booleans()), dtype=dtype,
                cache_dtype=draw(st.sampled_from([dtype, torch.float32])), seed=draw(st.integers(0, 2**16)))


@given(case=rotary_cases([64, 80, 96, 128, 256]))
def test_matches_reference_cpu(case):
    check("cpu", **case)


@pytest.mark.slow
@settings(max_examples=6)
@given(case=rotary_cases([64, 128]))
@pytest.mark.parametrize("backend", [backend_param("interpret")])
def test_matches_reference_interpret(backend, case):
    check(backend, **case)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("is_neox", [True, False])
def test_query_and_key_sliced_from_fused_qkv(backend, is_neox):
    gen = seeded(3)
    qkv = randn((6, (4 + 2 + 2) * 64), torch.float32, gen)
    expected = qkv.clone()
    positions = torch.arange(6) * 100
    cache = cos_sin_cache(1024, 32, torch.float32)
    with kf.backend(backend):
        rotary_embedding(positions, qkv[:, :256], qkv[:, 256:384], 64, cache, is_neox)
    reference.rotary_embedding(positions, expected[:, :256], expected[:, 256:384], 64, cache, is_neox)
    torch.testing.assert_close(qkv, expected)
    assert torch.equal(qkv[:, 384:], expected[:, 384:]), "the value part must be untouched"


def test_reference_matches_complex_rotation():
    """gpt-j style rotary is multiplication of (x[2i], x[2i+1]) by e^{i * pos * freq}."""
    positions = torch.tensor([0, 5, 77])
    rot_dim = 32
    query = torch.randn(3, 2, 64)
    rotated = query.clone()
    cache = cos_sin_cache(100, rot_dim, torch.float32)
    reference.rotary_embedding(positions, rotated, None, 64, cache, is_neox=False)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rot_dim, 2).float() / rot_dim))
    angle = torch.outer(positions.float(), inv_freq)[:, None, :]
    pairs = torch.view_as_complex(query[..., :rot_dim].reshape(3, 2, rot_dim // 2, 2).contiguous())
    expected = torch.view_as_real(pairs * torch.polar(torch.ones_like(angle), angle)).flatten(-2)
    torch.testing.assert_close(rotated[..., :rot_dim], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(rotated[..., rot_dim:], query[..., rot_dim:])
