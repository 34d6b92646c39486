"""Turn one scheduled step into a model call and sample from its logits.

The batch is flat, as the model expects: the new tokens of all scheduled sequences back
to back, with their positions and an `AttentionMetadata` that says where their keys and
values go in the paged cache (`slot_mapping`) and what each sequence attends to
(`block_table`, `cu_seqlens_q`, `seqused_k`). Only sequences whose chunk reaches the end
of their known tokens get a logits row (`logits_indices`) and sample a token.

The inputs are built with a handful of vectorised numpy ops per step (no Python loop per
token) into host buffers allocated once, pinned when the model sits on an accelerator so
the copies are asynchronous.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import torch

from models.attention import AttentionMetadata
from runtime.sampler import Sampler, SamplerOutput, SamplingMetadata
from runtime.scheduler import SchedulerOutput
from runtime.sequence import Sequence


@dataclass
class ModelInput:
    input_ids: torch.Tensor         # [T] int64
    positions: torch.Tensor         # [T] int64
    attn: AttentionMetadata
    logits_indices: torch.Tensor    # [R] int64: the last new token of each sampling sequence
    sampling_seqs: list[Sequence]   # the R sequences that sample this step, in row order


class _HostBuffers:
    """Step inputs on the host, sized for the largest step and reused every step."""

    def __init__(self, max_tokens: int, max_seqs: int, max_blocks_per_seq: int, pin: bool):
        def buf(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray]:
            t = torch.zeros(n, dtype=dtype, pin_memory=pin)
            return t, t.numpy()

        self.input_ids, self.input_ids_np = buf(max_tokens, torch.int64)
        self.positions, self.positions_np = buf(max_tokens, torch.int64)
        self.slot_mapping, self.slot_mapping_np = buf(max_tokens, torch.int64)
        self.block_table, self.block_table_np = buf(max_seqs * max_blocks_per_seq, torch.int32)
        self.cu_seqlens_q, self.cu_seqlens_q_np = buf(max_seqs + 1, torch.int32)
        self.seqused_k, self.seqused_k_np = buf(max_seqs, torch.int32)
        self.logits_indices, self.logits_indices_np = buf(max_seqs, torch.int64)
        self.arange = np.arange(max_tokens, dtype=np.int64)


class ModelRunner:
    """Owns the model's KV cache and runs one step of the scheduler's plan."""

    def __init__(self, model: Any, num_blocks: int, block_size: int, max_num_seqs: int,
                 max_num_batched_tokens: int, max_model_len: int, device: torch.device):
        self.model = model
        self.block_size = block_size
        self.device = device
        self.vocab_size = model.config.vocab_size
        self.kv_caches = model.allocate_kv_cache(num_blocks, block_size)
        self.max_blocks_per_seq = -(-max_model_len // block_size)
        self._host = _HostBuffers(max_num_batched_tokens, max_num_seqs, self.max_blocks_per_seq,
                                  pin=device.type == "cuda")
        self.sampler = Sampler()

    def prepare(self, sched: SchedulerOutput) -> ModelInput:
        h, bs = self._host, self.block_size
        seqs = sched.seqs
        num_seqs = len(seqs)
        num_new = np.asarray(sched.num_new_tokens, dtype=np.int64)
        starts = np.fromiter((s.num_computed_tokens for s in seqs), dtype=np.int64, count=num_seqs)
        num_tokens = int(num_new.sum())
        ends = starts + num_new

        cu = h.cu_seqlens_q_np[:num_seqs + 1]
        cu[0] = 0
        np.cumsum(num_new, out=cu[1:])
        h.seqused_k_np[:num_seqs] = ends

        h.input_ids_np[:num_tokens] = np.fromiter(
            chain.from_iterable(s.token_ids[a:b] for s, a, b in zip(seqs, starts.tolist(), ends.tolist())),
            dtype=np.int64, count=num_tokens)
        seq_of_token = np.repeat(np.arange(num_seqs), num_new)
        positions = h.positions_np[:num_tokens]
        np.add(h.arange[:num_tokens], np.repeat(starts - cu[:-1], num_new), out=positions)

        width = max(len(s.block_table) for s in seqs)
        table = h.block_table_np[:num_seqs * width].reshape(num_seqs, width)
        table.fill(0)
        for row, seq in zip(table, seqs):
            row[:len(seq.block_table)] = seq.block_table
        h.slot_mapping_np[:num_tokens] = table[seq_of_token, positions // bs] * bs + positions % bs

        samples = np.flatnonzero(ends == np.fromiter((s.num_tokens for s in seqs), dtype=np.int64, count=num_seqs))
        h.logits_indices_np[:len(samples)] = cu[samples + 1] - 1

        attn = AttentionMetadata(
            slot_mapping=self._to_device(h.slot_mapping[:num_tokens]),
            block_table=self._to_device(h.block_table[:num_seqs * width].view(num_seqs, width)),
            cu_seqlens_q=self._to_device(h.cu_seqlens_q[:num_seqs + 1]),
            seqused_k=self._to_device(h.seqused_k[:num_seqs]),
            max_seqlen_q=int(num_new.max()),
            max_seqlen_k=int(ends.max()),
        )
        return ModelInput(
            input_ids=self._to_device(h.input_ids[:num_tokens]),
            positions=self._to_device(h.positions[:num_tokens]),
            attn=attn,
            logits_indices=self._to_device(h.logits_indices[:len(samples)]),
            sampling_seqs=[seqs[i] for i in samples.tolist()],
        )

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.device.type == "cpu" else t.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> tuple[list[Sequence], SamplerOutput | None]:
        """Run the model on the scheduled tokens; sample for the sequences that are due."""
        inp = self.prepare(sched)
        logits = self.model.forward(inp.input_ids, inp.positions, inp.attn, self.kv_caches, inp.logits_indices)
        if not inp.sampling_seqs:
            return [], None
        meta = SamplingMetadata.build([s.params for s in inp.sampling_seqs],
                                      [s.generator for s in inp.sampling_seqs], self.vocab_size, logits.device)
        return inp.sampling_seqs, self.sampler(logits, meta)
