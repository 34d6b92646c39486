"""Rotary position embedding (RoPE), in place on query and key, vLLM's `rotary_embedding`.

Each work item is one token (`launch` says how programs map to items). Its cos/sin row
is loaded once and applied to every query head and then every key head, BLOCK_H heads at
a time as a [BLOCK_H, ROT_HALF] block of rotation pairs. Only the first rot_dim features
of a head rotate (partial rotary); the rest are neither read nor written.
"""

from __future__ import annotations

from torch import Tensor

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.autotuning import next_power_of_2
from kernelforge.kernels import validation
from kernelforge.kernels.launch import LaunchMemo, flat_view, grid_size, memo_key, on_native_cpu, persistent

# Rotation pairs per head block: by the compiler's NPU estimate 4096 pairs (x1, x2, the
# results and their offsets) need 101 KB, over the 96 KB budget; 2048 need half.
MAX_BLOCK_ELEMS = 2048


def _default(args: dict) -> kf.Config:
    """All heads of a token in one block when that fits the budget; one head per block on
    the native CPU tier, where the padded heads of a wider block cost as much as real ones
    and the [1, pairs] block reads its rows contiguously (measured at 1 thread: 64 tokens of
    9/3 heads of 64 in 71 us against 177 us with 16 heads per block, Llama-2-7B shapes
    577 against 726 us)."""
    if on_native_cpu(args["query_ptr"].device):
        return kf.Config(BLOCK_H=1)
    heads = next_power_of_2(max(args["num_q_heads"], args["num_k_heads"]))
    return kf.Config(BLOCK_H=min(heads, max(1, MAX_BLOCK_ELEMS // args["ROT_HALF_PAD"])))


def _configs(args: dict) -> list[kf.Config]:
    top = _default(args)["BLOCK_H"]
    return [kf.Config(BLOCK_H=1 << e) for e in range(top.bit_length())]


@kf.jit
def _rotate_heads(base_ptr, num_heads, first, second, cos, sin, HEAD_SIZE: kl.constexpr,
                  ROT_HALF: kl.constexpr, ROT_HALF_PAD: kl.constexpr, BLOCK_H: kl.constexpr):
    """Rotate pairs (first[i], second[i]) of every head at base_ptr (heads HEAD_SIZE apart)."""
    for h0 in range(0, num_heads, BLOCK_H):
        heads = h0 + kl.arange(0, BLOCK_H)
        # Mask the pair axis only when rot_dim / 2 is not a power of two: the Ascend
        # adapter cannot de-interleave gpt-j's stride-2 pairs under a last-axis mask.
        if ROT_HALF == ROT_HALF_PAD:
            mask = kl.broadcast_to((heads < num_heads)[:, None], (BLOCK_H, ROT_HALF_PAD))
        else:
            mask = (heads < num_heads)[:, None] & (kl.arange(0, ROT_HALF_PAD) < ROT_HALF)[None, :]
        ptr1 = base_ptr + heads[:, None] * HEAD_SIZE + first[None, :]
        ptr2 = base_ptr + heads[:, None] * HEAD_SIZE + second[None, :]
        x1 = kl.load(ptr1, mask=mask, other=0.0).to(kl.float32)
        x2 = kl.load(ptr2, mask=mask, other=0.0).to(kl.float32)
        # Both results before either store: the CPU backend may then read x1 and x2 as
        # views of the input instead of copies (no write comes before their last read).
        out1 = x1 * cos[None, :] - x2 * sin[None, :]
        out2 = x2 * cos[None, :] + x1 * sin[None, :]
        kl.store(ptr1, out1, mask=mask)
        kl.store(ptr2, out2, mask=mask)


@kf.jit
def _rotate_token(token, positions_ptr, query_ptr, key_ptr, cos_sin_ptr, num_q_heads, num_k_heads,
                  query_stride, key_stride, cos_sin_stride,
                  HEAD_SIZE: kl.constexpr, ROT_HALF: kl.constexpr, ROT_HALF_PAD: kl.constexpr,
                  IS_NEOX: kl.constexpr, HAS_KEY: kl.constexpr, BLOCK_H: kl.constexpr):
    i = kl.arange(0, ROT_HALF_PAD)
    # neox rotates feature i with i + rot_dim/2; gpt-j rotates 2i with 2i + 1.
    if IS_NEOX:
        first = i
        second = i + ROT_HALF
    else:
        first = 2 * i
        second = 2 * i + 1
    row = cos_sin_ptr + kl.load(positions_ptr + token) * cos_sin_stride
    cos = kl.load(row + i, mask=i < ROT_HALF, other=0.0).to(kl.float32)
    sin = kl.load(row + ROT_HALF + i, mask=i < ROT_HALF, other=0.0).to(kl.float32)
    _rotate_heads(query_ptr + token * query_stride, num_q_heads, first, second, cos, sin,
                  HEAD_SIZE, ROT_HALF, ROT_HALF_PAD, BLOCK_H)
    if HAS_KEY:
        _rotate_heads(key_ptr + token * key_stride, num_k_heads, first, second, cos, sin,
                      HEAD_SIZE, ROT_HALF, ROT_HALF_PAD, BLOCK_H)


@kf.autotune(configs=_configs, key=["num_q_heads", "num_k_heads", "num_tokens"],
             bucket={"num_tokens": "pow2"}, default=_default, outputs=["query_ptr", "key_ptr"])
@kf.jit
def _rotary_kernel(
    positions_ptr, query_ptr, key_ptr, cos_sin_ptr,
    num_tokens, num_q_heads, num_k_heads, query_stride, key_stride, cos_sin_stride,
    HEAD_SIZE: kl.constexpr, ROT_HALF: kl.constexpr, ROT_HALF_PAD: kl.constexpr, IS_NEOX: kl.constexpr,
    HAS_KEY: kl.constexpr, PERSISTENT: kl.constexpr, BLOCK_H: kl.constexpr,
):
    if PERSISTENT:
        for token in range(kl.program_id(0), num_tokens, kl.num_programs(0)):
            _rotate_token(token, positions_ptr, query_ptr, key_ptr, cos_sin_ptr, num_q_heads, num_k_heads,
                          query_stride, key_stride, cos_sin_stride,
                          HEAD_SIZE, ROT_HALF, ROT_HALF_PAD, IS_NEOX, HAS_KEY, BLOCK_H)
    else:
        _rotate_token(kl.program_id(0), positions_ptr, query_ptr, key_ptr, cos_sin_ptr, num_q_heads, num_k_heads,
                      query_stride, key_stride, cos_sin_stride,
                      HEAD_SIZE, ROT_HALF, ROT_HALF_PAD, IS_NEOX, HAS_KEY, BLOCK_H)


_memo = LaunchMemo(_rotary_kernel)


def _heads(t: Tensor, head_size: int) -> int:
    """Heads per token of a [T, heads * head_size] or [T, heads, head_size] tensor."""
    return t.shape[1] if t.dim() == 3 else t.shape[1] // head_size


def rotary_embedding(
    positions: Tensor,
    query: Tensor,
    key: Tensor | None,
    head_size: int,
    cos_sin_cache: Tensor,
    is_neox: bool,
) -> None:
    """Rotary position embedding, in place on query and (when given) key.

    query [T, num_heads * head_size] or [T, num_heads, head_size], key likewise with the
    KV heads; cos_sin_cache [max_position, rot_dim] holds cat(cos, sin) per position.
    """
    memo = memo_key((head_size, is_neox), positions, query, key, cos_sin_cache)
    found = _memo.find(memo, query)
    if found is None:
        validation.check_rotary_embedding("rotary_embedding", positions, query, key, head_size,
                                          cos_sin_cache, is_neox)
    else:
        validation.check_positions("rotary_embedding", positions, cos_sin_cache)
    num_tokens = query.shape[0]
    if num_tokens == 0:
        return
    rot_half = cos_sin_cache.shape[1] // 2
    device = query.device
    _memo.launch(
        memo, device, found, (grid_size(num_tokens, device),),
        (positions if positions.dim() == 1 else positions.reshape(-1), flat_view(query),
         flat_view(query if key is None else key), cos_sin_cache, num_tokens, _heads(query, head_size),
         0 if key is None else _heads(key, head_size), query.stride(0),
         query.stride(0) if key is None else key.stride(0), cos_sin_cache.stride(0)),
        {"HEAD_SIZE": head_size, "ROT_HALF": rot_half, "ROT_HALF_PAD": next_power_of_2(rot_half),
         "IS_NEOX": bool(is_neox), "HAS_KEY": key is not None, "PERSISTENT": persistent(device)},
    )


__all__ = ["rotary_embedding"]
