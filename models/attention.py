"""AttentionMetadata: where one step's tokens go in the paged KV cache and what they attend to.

The runtime builds one per step from its block tables; the model passes the fields
straight to `reshape_and_cache` and `paged_attention` (see ARCHITECTURE.md for their
meaning). It is passed explicitly to `forward`, never through a global.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class AttentionMetadata:
    slot_mapping: Tensor  # [T] int64: cache slot of each new token, -1 = padding (not written)
    block_table: Tensor  # [S, max_blocks] int32
    cu_seqlens_q: Tensor  # [S+1] int32: token offsets of the sequences in the flat batch
    seqused_k: Tensor  # [S] int32: cached + new tokens per sequence
    max_seqlen_q: int
    max_seqlen_k: int

    def to(self, device: torch.device | str) -> AttentionMetadata:
        """The same metadata with every tensor on `device`."""
        return AttentionMetadata(
            slot_mapping=self.slot_mapping.to(device),
            block_table=self.block_table.to(device),
            cu_seqlens_q=self.cu_seqlens_q.to(device),
            seqused_k=self.seqused_k.to(device),
            max_seqlen_q=self.max_seqlen_q,
            max_seqlen_k=self.max_seqlen_k,
        )
