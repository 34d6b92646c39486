"""The model runner's flattened batch equals a naive per-token construction."""

from __future__ import annotations

import hypothesis.strategies as st
import torch
from hypothesis import given

from runtime.block_manager import BlockManager
from runtime.model_runner import ModelRunner
from runtime.sampling_params import SamplingParams
from runtime.scheduler import Scheduler
from runtime.sequence import Sequence
from toy_model import ToyModel

BS = 4


def naive_inputs(sched_out):
    ids, pos, slots, logits_idx, cu = [], [], [], [], [0]
    for seq, n in zip(sched_out.seqs, sched_out.num_new_tokens):
        for p in range(seq.num_computed_tokens, seq.num_computed_tokens + n):
            ids.append(seq.token_ids[p])
            pos.append(p)
            slots.append(seq.block_table[p // BS] * BS + p % BS)
        cu.append(cu[-1] + n)
        if seq.num_computed_tokens + n == seq.num_tokens:
            logits_idx.append(cu[-1] - 1)
    return ids, pos, slots, logits_idx, cu


@given(prompts=st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=30), min_size=1, max_size=5),
       budget=st.integers(1, 40), steps=st.integers(1, 6))
def test_prepare_matches_naive_construction(prompts, budget, steps):
    sched = Scheduler(BlockManager(64, BS), max_num_seqs=4, max_num_batched_tokens=budget)
    runner = ModelRunner(ToyModel(), 64, BS, 4, budget, 64, torch.device("cpu"))
    for p in prompts:
        sched.add(Sequence("r", p, SamplingParams(max_tokens=50)))
    for _ in range(steps):
        out = sched.schedule()
        if out.is_empty:
            return
        inp = runner.prepare(out)
        ids, pos, slots, logits_idx, cu = naive_inputs(out)
        assert inp.input_ids.tolist() == ids and inp.positions.tolist() == pos
        assert inp.attn.slot_mapping.tolist() == slots and inp.logits_indices.tolist() == logits_idx
        assert inp.attn.cu_seqlens_q.tolist() == cu
        assert inp.attn.seqused_k.tolist() == [s.num_computed_tokens + n for s, n in zip(out.seqs, out.num_new_tokens)]
        for row, seq in zip(inp.attn.block_table.tolist(), out.seqs):
            assert row[:len(seq.block_table)] == seq.block_table
        assert inp.attn.block_table.dtype == torch.int32 and inp.attn.block_table.is_contiguous()
        assert inp.attn.max_seqlen_q == max(out.num_new_tokens)
        assert inp.attn.max_seqlen_k == max(inp.attn.seqused_k.tolist())
        sched.update(out)
        for seq in inp.sampling_seqs:
            seq.append_token(1)
