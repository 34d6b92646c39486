"""The LLM-serving kernels: public ops with vLLM's signatures (see ARCHITECTURE.md).

Every op validates its arguments (`validation`) and then launches its kernel.
`reference` holds the plain-PyTorch oracles.
"""

from __future__ import annotations

from torch import Tensor

from kernelforge.kernels import reference, validation


def rms_norm(out: Tensor, x: Tensor, weight: Tensor, eps: float) -> None:
    """out = x / sqrt(mean(x^2) + eps) * weight over the last dim."""
    validation.check_rms_norm("rms_norm", out, x, weight, eps)
    reference.rms_norm(out, x, weight, eps)


def fused_add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> None:
    """In place: residual += x; x = rms_norm(residual) * weight."""
    validation.check_rms_norm("fused_add_rms_norm", residual, x, weight, eps)
    validation.check_same("fused_add_rms_norm", ("x", "residual"), x, residual, "dtype")
    reference.fused_add_rms_norm(x, residual, weight, eps)


def rotary_embedding(
    positions: Tensor,
    query: Tensor,
    key: Tensor | None,
    head_size: int,
    cos_sin_cache: Tensor,
    is_neox: bool,
) -> None:
    """Rotary position embedding, in place on query and key."""
    validation.check_rotary_embedding("rotary_embedding", positions, query, key, head_size, cos_sin_cache, is_neox)
    reference.rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox)


def reshape_and_cache(
    key: Tensor, value: Tensor, key_cache: Tensor, value_cache: Tensor, slot_mapping: Tensor
) -> None:
    """Write each token's key/value heads into its paged-cache slot; slot < 0 is skipped."""
    validation.check_reshape_and_cache("reshape_and_cache", key, value, key_cache, value_cache, slot_mapping)
    reference.reshape_and_cache(key, value, key_cache, value_cache, slot_mapping)


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
    """Causal attention of a mixed prefill + decode batch over the paged KV cache."""
    args = (out, query, key_cache, value_cache, block_table, cu_seqlens_q, seqused_k,
            max_seqlen_q, max_seqlen_k, softmax_scale, causal, sliding_window)
    validation.check_paged_attention("paged_attention", *args)
    reference.paged_attention(*args)


__all__ = ["rms_norm", "fused_add_rms_norm", "rotary_embedding", "reshape_and_cache", "paged_attention"]
