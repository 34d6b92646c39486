"""Shared inputs and tolerances for the LLM kernel tests: ragged paged batches as hypothesis
strategies, the backends to run on, and per-dtype tolerances."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pytest
import torch
from hypothesis import strategies as st

import kernelforge as kf

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# The module (`kernelforge.kernels.paged_attention` the attribute is the op).
_ATTENTION_MODULE = importlib.import_module("kernelforge.kernels.paged_attention")

# Elementwise ops (norms, rotary) round once to the output dtype.
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}
# Attention also rounds the softmax probabilities to the cache dtype before P @ V.
ATTN_TOL = {
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


class FixedRowsProvider:
    """A tuned-config cache answering paged attention with `block_m` query rows (and
    32-key tiles) whatever today's rows rule says: a config tuned before the rule changed,
    or one a test forces."""

    stable = True

    def __init__(self, block_m: int) -> None:
        self.block_m = block_m

    def get_config(self, autotuned, key, named_args):
        if autotuned is _ATTENTION_MODULE._paged_attention_kernel:
            return kf.Config(BLOCK_M=self.block_m, TILE=32)
        return None


def backend_param(name: str):
    """A pytest param for backend `name`, skipped where it is not available."""
    marks = [] if name in kf.available_backends() else [pytest.mark.skip(reason=f"backend {name} unavailable")]
    return pytest.param(name, marks=marks, id=name)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen).to(dtype)


@dataclass
class PagedBatch:
    """One step of a paged-attention batch: inputs of `paged_attention` plus the cache shape."""

    query: torch.Tensor
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    block_table: torch.Tensor
    cu_seqlens_q: torch.Tensor
    seqused_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int

    def args(self) -> tuple:
        return (self.query, self.key_cache, self.value_cache, self.block_table, self.cu_seqlens_q,
                self.seqused_k, self.max_seqlen_q, self.max_seqlen_k)


def make_paged_batch(
    q_lens: list[int], ctx_lens: list[int], num_heads: int, num_kv_heads: int, head_size: int,
    block_size: int, dtype: torch.dtype, seed: int, pad_tokens: int = 0,
) -> PagedBatch:
    """Sequences with q_lens[s] new tokens out of ctx_lens[s] in context, their KV blocks
    scattered over a shuffled cache with spare blocks; unused block-table entries are -1
    and `pad_tokens` query rows past the last sequence belong to nobody."""
    gen = seeded(seed)
    blocks_per_seq = [-(-c // block_size) for c in ctx_lens]
    num_blocks = sum(blocks_per_seq) + 2
    physical = torch.randperm(num_blocks, generator=gen).to(torch.int32)
    block_table = torch.full((len(ctx_lens), max(blocks_per_seq + [1]) + 1), -1, dtype=torch.int32)
    used = 0
    for s, n in enumerate(blocks_per_seq):
        block_table[s, :n] = physical[used:used + n]
        used += n
    cache_shape = (num_blocks, block_size, num_kv_heads, head_size)
    num_tokens = sum(q_lens) + pad_tokens
    cu = [0]
    for q in q_lens:
        cu.append(cu[-1] + q)
    return PagedBatch(
        query=randn((num_tokens, num_heads, head_size), dtype, gen),
        key_cache=randn(cache_shape, dtype, gen),
        value_cache=randn(cache_shape, dtype, gen),
        block_table=block_table,
        cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
        seqused_k=torch.tensor(ctx_lens, dtype=torch.int32),
        max_seqlen_q=max(q_lens + [0]),
        max_seqlen_k=max(ctx_lens + [0]),
    )


@st.composite
def sequences(draw, block_size: int, max_seqs: int, max_ctx: int) -> tuple[list[int], list[int]]:
    """(q_lens, ctx_lens) of a ragged batch mixing decode (1 new token), whole prefill,
    chunked prefill (a suffix of the context) and empty decode slots (0 new tokens),
    with context lengths drawn towards block boundaries and length 1."""
    boundary = st.sampled_from([1, block_size - 1, block_size, block_size + 1, 2 * block_size, 2 * block_size + 1])
    q_lens, ctx_lens = [], []
    for _ in range(draw(st.integers(1, max_seqs))):
        ctx = draw(st.one_of(boundary, st.integers(1, max_ctx)))
        kind = draw(st.sampled_from(["decode", "prefill", "chunk", "empty"]))
        q = {"decode": 1, "prefill": ctx, "empty": 0}.get(kind) or draw(st.integers(1, ctx))
        q_lens.append(q)
        ctx_lens.append(ctx)
    return q_lens, ctx_lens
