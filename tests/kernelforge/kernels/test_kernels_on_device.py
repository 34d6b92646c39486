"""Every LLM kernel on a device backend, with device tensors, against the torch reference run
on CPU copies of the same inputs.

KF_DEVICE_TEST="<backend>:<device>" picks the pair. The default is triton on CUDA when
there is a GPU, else interpret on the CPU, so a machine without one still runs this
module (and checks it). On a GPU machine: `make test-gpu`.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import ATTN_TOL, DTYPES, TOL, make_paged_batch, randn, seeded, sequences

import kernelforge as kf
from kernelforge.kernels import (fused_add_rms_norm, paged_attention, reference, reshape_and_cache, rms_norm,
                                 rotary_embedding)
from kernelforge.kernels.rms_norm import MAX_BLOCK

PAIR = os.environ.get("KF_DEVICE_TEST") or ("triton:cuda" if torch.cuda.is_available() else "interpret:cpu")
BACKEND, DEVICE = PAIR.split(":", 1)

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def on_device(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """Copies (also on the CPU: the reference must not see the kernel's in-place writes)."""
    return [None if t is None else t.to(DEVICE, copy=True) for t in tensors]


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: dict) -> None:
    torch.testing.assert_close(got.cpu().float(), want.float(), equal_nan=True, **tol)


@settings(max_examples=8)
@given(rows=st.integers(1, 9), hidden=st.sampled_from([7, 576, MAX_BLOCK + 100]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_norms(rows, hidden, dtype, seed):
    gen = seeded(seed)
    x, residual, weight = randn((rows, hidden), dtype, gen), randn((rows, hidden), dtype, gen), randn((hidden,), dtype, gen)
    out = torch.empty_like(x)
    dx, dres, dweight, dout = on_device(x, residual, weight, out)
    with kf.backend(BACKEND):
        rms_norm(dout, dx, dweight, 1e-6)
        fused_add_rms_norm(dx, dres, dweight, 1e-6)
    reference.rms_norm(out, x, weight, 1e-6)
    reference.fused_add_rms_norm(x, residual, weight, 1e-6)
    assert_close(dout, out, TOL[dtype])
    assert_close(dres, residual, TOL[dtype])
    assert_close(dx, x, TOL[dtype])


@settings(max_examples=8)
@given(tokens=st.integers(1, 12), heads=st.integers(1, 9), kv_heads=st.integers(0, 3), head_size=st.sampled_from([64, 128]),
       partial=st.booleans(), is_neox=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_rotary_embedding(tokens, heads, kv_heads, head_size, partial, is_neox, dtype, seed):
    gen = seeded(seed)
    rot_dim = head_size // 2 if partial else head_size
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rot_dim, 2).float() / rot_dim))
    freqs = torch.outer(torch.arange(512).float(), inv_freq)
    cos_sin = torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(dtype)
    positions = torch.randint(0, 512, (tokens,), generator=gen)
    query = randn((tokens, heads * head_size), dtype, gen)
    key = randn((tokens, kv_heads, head_size), dtype, gen) if kv_heads else None
    dpos, dq, dk, dcache = on_device(positions, query, key, cos_sin)
    with kf.backend(BACKEND):
        rotary_embedding(dpos, dq, dk, head_size, dcache, is_neox)
    reference.rotary_embedding(positions, query, key, head_size, cos_sin, is_neox)
    assert_close(dq, query, TOL[dtype])
    if key is not None:
        assert_close(dk, key, TOL[dtype])


@settings(max_examples=8)
@given(tokens=st.integers(1, 40), kv_heads=st.integers(1, 4), head_size=st.sampled_from([64, 128]),
       block_size=st.sampled_from([16, 32, 64]), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_reshape_and_cache(tokens, kv_heads, head_size, block_size, dtype, seed):
    gen = seeded(seed)
    num_blocks = -(-tokens // block_size) + 1
    key, value = randn((tokens, kv_heads, head_size), dtype, gen), randn((tokens, kv_heads, head_size), dtype, gen)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:tokens]
    slots[torch.rand(tokens, generator=gen) < 0.25] = -1  # padding tokens are skipped
    key_cache = randn((num_blocks, block_size, kv_heads, head_size), dtype, gen)
    value_cache = randn((num_blocks, block_size, kv_heads, head_size), dtype, gen)
    dkey, dvalue, dkc, dvc, dslots = on_device(key, value, key_cache, value_cache, slots)
    with kf.backend(BACKEND):
        reshape_and_cache(dkey, dvalue, dkc, dvc, dslots)
    reference.reshape_and_cache(key, value, key_cache, value_cache, slots)
    assert torch.equal(dkc.cpu(), key_cache) and torch.equal(dvc.cpu(), value_cache)


@settings(max_examples=10)
@given(data=st.data(), block_size=st.sampled_from([16, 32]), head_size=st.sampled_from([64, 128]),
       num_kv_heads=st.integers(1, 2), group=st.integers(1, 3), window=st.sampled_from([None, 5]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_paged_attention_mixed_batch(data, block_size, head_size, num_kv_heads, group, window, dtype, seed):
    """Ragged decode, prefill, chunked prefill and empty slots in one batch, GQA, sliding window."""
    q_lens, ctx_lens = data.draw(sequences(block_size, max_seqs=4, max_ctx=70))
    batch = make_paged_batch(q_lens, ctx_lens, num_kv_heads * group, num_kv_heads, head_size, block_size, dtype, seed)
    check_attention(batch.args(), dtype, window)


@pytest.mark.parametrize("dtype", DTYPES)
def test_paged_attention_long_decode(dtype):
    """A few decodes over long contexts: on a GPU too few to fill it, so they run the
    split-KV kernel and its merge (`num_kv_segments`)."""
    batch = make_paged_batch([1, 1, 1], [600, 33, 1100], 8, 2, 64, 16, dtype, seed=3)
    check_attention(batch.args(), dtype, None)


def check_attention(args: tuple, dtype: torch.dtype, window: int | None) -> None:
    query, *rest = args
    scale = query.shape[-1] ** -0.5
    want = torch.full_like(query, float("nan"))  # rows past the last sequence stay untouched
    reference.paged_attention(want, query, *rest, scale, sliding_window=window)
    tensors = on_device(query, *rest[:5])
    out = torch.full_like(tensors[0], float("nan"))
    with kf.backend(BACKEND):
        paged_attention(out, *tensors, *rest[5:], scale, sliding_window=window)
    assert_close(out, want, ATTN_TOL[dtype])
