"""Plain-PyTorch versions of the LLM kernels: the oracles every DSL kernel is tested against.

Each function has the public op's signature and semantics (see ARCHITECTURE.md, "LLM
kernels") and is written to be obviously correct rather than fast: math in float32,
one Python loop per sequence for attention. They do no argument validation; the public
ops in `kernelforge.kernels` validate before calling anything.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rms_norm(out: Tensor, x: Tensor, weight: Tensor, eps: float) -> None:
    """out = x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32."""
    xf = x.float()
    out.copy_(xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps) * weight.float())


def fused_add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> None:
    """In place: residual += x (rounded to its dtype); x = rms_norm(residual) * weight."""
    residual.copy_(x.float() + residual.float())
    rms_norm(x, residual, weight, eps)


def rotary_embedding(
    positions: Tensor,
    query: Tensor,
    key: Tensor | None,
    head_size: int,
    cos_sin_cache: Tensor,
    is_neox: bool,
) -> None:
    """Rotate the first rot_dim features of every query/key head in place.

    query is [T, num_heads * head_size] or [T, num_heads, head_size] (key likewise);
    cos_sin_cache[p] = cat(cos, sin), each rot_dim / 2 wide. Features past rot_dim pass
    through unchanged. is_neox pairs feature i with i + rot_dim/2, otherwise 2i with 2i+1.
    """
    rot_dim = cos_sin_cache.shape[-1]
    cos, sin = cos_sin_cache[positions.long()].float().chunk(2, dim=-1)  # [T, rot_dim/2]
    cos, sin = cos[:, None, :], sin[:, None, :]
    for t in (query, key):
        if t is None:
            continue
        heads = t.view(t.shape[0], -1, head_size)
        rot = heads[..., :rot_dim].float()
        if is_neox:
            x1, x2 = rot.chunk(2, dim=-1)
            rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        else:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        heads[..., :rot_dim] = rotated.to(t.dtype)


def reshape_and_cache(
    key: Tensor, value: Tensor, key_cache: Tensor, value_cache: Tensor, slot_mapping: Tensor
) -> None:
    """Write token t's key/value heads to cache slot slot_mapping[t]; negative slots are skipped.

    A slot s lives at key_cache[s // block_size, s % block_size].
    """
    block_size = key_cache.shape[1]
    for t, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        key_cache[slot // block_size, slot % block_size] = key[t]
        value_cache[slot // block_size, slot % block_size] = value[t]


def gather_kv(cache: Tensor, block_table_row: Tensor, context_len: int) -> Tensor:
    """The first context_len positions of one sequence, [context_len, num_kv_heads, head_size]."""
    block_size = cache.shape[1]
    n_blocks = (context_len + block_size - 1) // block_size
    blocks = cache[block_table_row[:n_blocks].long()]  # [n_blocks, block_size, kv_heads, d]
    return blocks.flatten(0, 1)[:context_len]


def paged_attention(
    out: Tensor,
    query: Tensor,
    key_cache: Tensor,
    value_cache: Tensor,
    block_table: Tensor,
    cu_seqlens_q: Tensor,
    seqused_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    causal: bool = True,
    sliding_window: int | None = None,
) -> None:
    """Attention of a mixed prefill + decode batch over the paged KV cache, per sequence in fp32.

    Query token j of sequence s (q_len_s tokens) sits at position p = seqused_k[s] - q_len_s + j
    and sees key positions k with k <= p when causal, and k >= p - sliding_window + 1 when a
    window is given. max_seqlen_q / max_seqlen_k are launch hints and are not needed here.
    """
    num_heads, num_kv_heads = query.shape[1], key_cache.shape[2]
    group = num_heads // num_kv_heads
    cu = cu_seqlens_q.tolist()
    for s, context_len in enumerate(seqused_k.tolist()):
        q_start, q_len = cu[s], cu[s + 1] - cu[s]
        if q_len == 0:
            continue
        q = query[q_start : q_start + q_len].float()  # [q_len, H, D]
        k = gather_kv(key_cache, block_table[s], context_len).float().repeat_interleave(group, dim=1)
        v = gather_kv(value_cache, block_table[s], context_len).float().repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) * softmax_scale
        q_pos = torch.arange(context_len - q_len, context_len)[:, None]
        k_pos = torch.arange(context_len)[None, :]
        visible = torch.ones(q_len, context_len, dtype=torch.bool)
        if causal:
            visible &= k_pos <= q_pos
        if sliding_window is not None:
            visible &= k_pos > q_pos - sliding_window
        scores = scores.masked_fill(~visible.to(scores.device), float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row that sees nothing yields 0
        out[q_start : q_start + q_len] = torch.einsum("hqk,khd->qhd", probs, v).to(out.dtype)
