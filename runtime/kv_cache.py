"""How many KV-cache blocks to allocate.

`kv_cache_memory` is a byte count, or "auto":

- on a GPU or an Ascend NPU, 90% of the memory still free once the model is loaded (vLLM's default
  utilisation, which leaves room for activations);
- on a CPU, 10% of the available RAM, at most 2 GiB: the machine is shared with
  everything else and a CPU step is compute-bound long before the cache is full;

and in both cases no more than `max_num_seqs` sequences of `max_model_len` tokens can use.
The cache must hold at least one full-length sequence, or the scheduler could never finish
a long request; anything smaller is a ValueError that says what to change.
"""

from __future__ import annotations

import psutil
import torch

GPU_SHARE = 0.9
CPU_SHARE = 0.1
CPU_CAP_BYTES = 2 << 30


def auto_kv_cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_SHARE)
    if device.type == "npu":
        free, _ = torch.npu.mem_get_info(device)
        return int(free * GPU_SHARE)
    return int(min(psutil.virtual_memory().available * CPU_SHARE, CPU_CAP_BYTES))


def num_kv_blocks(kv_cache_memory: int | str, bytes_per_block: int, block_size: int,
                  max_num_seqs: int, max_model_len: int, device: torch.device) -> int:
    blocks_per_seq = -(-max_model_len // block_size)
    if kv_cache_memory == "auto":
        budget = auto_kv_cache_bytes(device)
        num_blocks = min(budget // bytes_per_block, max_num_seqs * blocks_per_seq)
    elif isinstance(kv_cache_memory, int) and not isinstance(kv_cache_memory, bool) and kv_cache_memory > 0:
        budget = kv_cache_memory
        num_blocks = budget // bytes_per_block
    else:
        raise ValueError(f'kv_cache_memory must be a positive byte count or "auto", got {kv_cache_memory!r}')
    if num_blocks < blocks_per_seq:
        raise ValueError(
            f"the KV cache ({budget} bytes = {num_blocks} blocks of {block_size} tokens, "
            f"{bytes_per_block} bytes each) cannot hold one sequence of max_model_len={max_model_len} "
            f"tokens ({blocks_per_seq} blocks): raise kv_cache_memory or lower max_model_len")
    return int(num_blocks)
