"""Realistic arguments for the public LLM ops at a serving shape.

Tuning needs real launches: the config that wins depends on the grid and on data such as
how many tokens each sequence has and how long its context is. This module builds, for a
shape (see `autotune.registry.SHAPE_DEFAULTS`), one step of a serving batch through the
public ops of `kernelforge.kernels` (their signatures are the ARCHITECTURE.md contract):
the norms over the hidden states, rotary embedding of q/k, the KV-cache write and paged
attention over a cache laid out in shuffled blocks, as the block manager would leave it.
The `num_tokens` new tokens are spread evenly over `num_seqs` sequences (a decode batch
has one per sequence, a prefill chunk all in one), each with `context_len` tokens of
context counting its new ones.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from kernelforge import kernels as ops


def serving_calls(num_tokens: int, num_seqs: int, hidden_size: int, num_heads: int, num_kv_heads: int,
                  head_size: int, block_size: int, context_len: int, dtype: torch.dtype,
                  device: str | torch.device, **_: Any) -> list[tuple[Callable[..., None], tuple]]:
    """(op, positional args) for every public op at this shape, on fresh tensors."""
    if not 1 <= num_seqs <= num_tokens:
        raise ValueError(f"need 1 <= num_seqs <= num_tokens, got num_seqs={num_seqs}, num_tokens={num_tokens}")
    gen = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype=dtype, device=device)

    def ints(values: list[int] | torch.Tensor, dt: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(values, dtype=dt).to(device)

    q_lens = [num_tokens // num_seqs + (s < num_tokens % num_seqs) for s in range(num_seqs)]
    ctx_lens = [max(context_len, q) for q in q_lens]
    blocks_per_seq = [-(-c // block_size) for c in ctx_lens]
    max_blocks = max(blocks_per_seq)
    num_blocks = sum(blocks_per_seq) + 1
    shuffled = torch.randperm(num_blocks, generator=gen).tolist()
    block_table = torch.zeros(num_seqs, max_blocks, dtype=torch.int32)
    slots, positions, used = [], [], 0
    for s, (q, c, nb) in enumerate(zip(q_lens, ctx_lens, blocks_per_seq)):
        block_table[s, :nb] = torch.tensor(shuffled[used:used + nb])
        used += nb
        for p in range(c - q, c):
            positions.append(p)
            slots.append(int(block_table[s, p // block_size]) * block_size + p % block_size)

    x = randn(num_tokens, hidden_size)
    weight = randn(hidden_size)
    query = randn(num_tokens, num_heads * head_size)
    key = randn(num_tokens, num_kv_heads * head_size)
    cos_sin_cache = randn(max(ctx_lens), head_size)
    new_key = randn(num_tokens, num_kv_heads, head_size)
    new_value = randn(num_tokens, num_kv_heads, head_size)
    key_cache = randn(num_blocks, block_size, num_kv_heads, head_size)
    value_cache = randn(num_blocks, block_size, num_kv_heads, head_size)
    attn_query = randn(num_tokens, num_heads, head_size)
    cu_seqlens_q = ints([0, *torch.tensor(q_lens).cumsum(0).tolist()], torch.int32)
    return [
        (ops.rms_norm, (torch.empty_like(x), x, weight, 1e-6)),
        (ops.fused_add_rms_norm, (x.clone(), randn(num_tokens, hidden_size), weight, 1e-6)),
        (ops.rotary_embedding, (ints(positions, torch.int64), query, key, head_size, cos_sin_cache, True)),
        (ops.reshape_and_cache, (new_key, new_value, key_cache, value_cache, ints(slots, torch.int64))),
        (ops.paged_attention, (torch.empty_like(attn_query), attn_query, key_cache, value_cache,
                               block_table.to(device), cu_seqlens_q, ints(ctx_lens, torch.int32),
                               max(q_lens), max(ctx_lens), head_size ** -0.5)),
    ]
