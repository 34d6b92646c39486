"""Write new tokens' keys and values into the paged KV cache, vLLM's `reshape_and_cache`.

Each work item is one token (`launch` says how programs map to items): its
[num_kv_heads, head_size] key and value rows are contiguous in the input and land
contiguously at cache[slot // block_size, slot % block_size] (flat offset
slot * num_kv_heads * head_size), so the copy is a flat run of num_kv_heads * head_size
elements, walked BLOCK at a time. Negative slots mark padding tokens and are skipped.
"""

from __future__ import annotations

from torch import Tensor

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.autotuning import next_power_of_2, pow2_between
from kernelforge.kernels import validation
from kernelforge.kernels.launch import LaunchMemo, flat_view, grid_size, memo_key, persistent

# Elements per chunk: key and value chunks in flight plus their offsets take 86 KB at 4096
# by the compiler's NPU estimate (inside the 96 KB budget), 168 KB at 8192.
MAX_BLOCK = 4096


def _default(args: dict) -> kf.Config:
    return kf.Config(BLOCK=min(MAX_BLOCK, next_power_of_2(args["row_size"])))


def _configs(args: dict) -> list[kf.Config]:
    top = _default(args)["BLOCK"]
    return [kf.Config(BLOCK=b) for b in pow2_between(min(128, top), top)]


@kf.jit
def _cache_token(token, key_ptr, value_ptr, key_cache_ptr, value_cache_ptr, slot_mapping_ptr,
                 row_size, key_stride, value_stride, BLOCK: kl.constexpr):
    # int64: slot * row_size overflows int32 for caches over 2^31 elements.
    slot = kl.load(slot_mapping_ptr + token).to(kl.int64)
    if slot >= 0:
        dst = slot * row_size  # the cache is contiguous: block * block_size + offset == slot
        for start in range(0, row_size, BLOCK):
            cols = start + kl.arange(0, BLOCK)
            mask = cols < row_size
            k = kl.load(key_ptr + token * key_stride + cols, mask=mask)
            v = kl.load(value_ptr + token * value_stride + cols, mask=mask)
            kl.store(key_cache_ptr + dst + cols, k, mask=mask)
            kl.store(value_cache_ptr + dst + cols, v, mask=mask)


@kf.autotune(configs=_configs, key=["row_size", "num_tokens"], bucket={"num_tokens": "pow2"},
             default=_default, outputs=["key_cache_ptr", "value_cache_ptr"])
@kf.jit
def _reshape_and_cache_kernel(
    key_ptr, value_ptr, key_cache_ptr, value_cache_ptr, slot_mapping_ptr,
    num_tokens, row_size, key_stride, value_stride,
    PERSISTENT: kl.constexpr, BLOCK: kl.constexpr,
):
    if PERSISTENT:
        for token in range(kl.program_id(0), num_tokens, kl.num_programs(0)):
            _cache_token(token, key_ptr, value_ptr, key_cache_ptr, value_cache_ptr, slot_mapping_ptr,
                         row_size, key_stride, value_stride, BLOCK)
    else:
        _cache_token(kl.program_id(0), key_ptr, value_ptr, key_cache_ptr, value_cache_ptr, slot_mapping_ptr,
                     row_size, key_stride, value_stride, BLOCK)


_memo = LaunchMemo(_reshape_and_cache_kernel)


def reshape_and_cache(
    key: Tensor, value: Tensor, key_cache: Tensor, value_cache: Tensor, slot_mapping: Tensor
) -> None:
    """Write key[t] / value[t] ([num_kv_heads, head_size]) to cache slot slot_mapping[t].

    A slot s is key_cache[s // block_size, s % block_size]; slot < 0 is skipped.
    """
    memo = memo_key((), key, value, key_cache, value_cache, slot_mapping)
    found = _memo.find(memo, key)
    if found is None:
        validation.check_reshape_and_cache("reshape_and_cache", key, value, key_cache, value_cache, slot_mapping)
    else:
        validation.check_slots("reshape_and_cache", slot_mapping, key_cache)
    num_tokens = key.shape[0]
    if num_tokens == 0:
        return
    device = key.device
    _memo.launch(memo, device, found, (grid_size(num_tokens, device),),
                 (flat_view(key), flat_view(value), key_cache, value_cache, slot_mapping, num_tokens,
                  key.shape[1] * key.shape[2], key.stride(0), value.stride(0)),
                 {"PERSISTENT": persistent(device)})


__all__ = ["reshape_and_cache"]
