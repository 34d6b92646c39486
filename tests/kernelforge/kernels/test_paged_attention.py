"""paged_attention (DSL kernel) against the per-sequence torch reference, on cpu and interpret."""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import (ATTN_TOL, DTYPES, FixedRowsProvider, PagedBatch, backend_param, make_paged_batch,
                          sequences)

import kernelforge as kf
from kernelforge import autotuning
from kernelforge.autotuning import capture_launches
from kernelforge.kernels import paged_attention, reference

attention_module = importlib.import_module("kernelforge.kernels.paged_attention")


def run_both(backend: str, batch: PagedBatch, causal: bool = True, window: int | None = None):
    head_size = batch.query.shape[-1]
    scale = head_size ** -0.5
    out = torch.full_like(batch.query, float("nan"))
    expected = torch.full_like(batch.query, float("nan"))
    with kf.backend(backend):
        paged_attention(out, *batch.args(), scale, causal=causal, sliding_window=window)
    reference.paged_attention(expected, *batch.args(), scale, causal=causal, sliding_window=window)
    return out, expected


def check(backend: str, batch: PagedBatch, dtype: torch.dtype, causal: bool = True, window: int | None = None):
    out, expected = run_both(backend, batch, causal, window)
    # NaN rows are rows no sequence owns: the kernel must leave them alone too.
    torch.testing.assert_close(out.float(), expected.float(), equal_nan=True, **ATTN_TOL[dtype])


@st.composite
def attention_cases(draw, head_sizes, block_sizes, max_seqs, max_ctx, max_group):
    block_size = draw(st.sampled_from(block_sizes))
    q_lens, ctx_lens = draw(sequences(block_size, max_seqs, max_ctx))
    num_kv_heads = draw(st.integers(1, 2))
    group = draw(st.integers(1, max_group))  # 1: MHA; num_kv_heads == 1 and group > 1: MQA
    return dict(
        q_lens=q_lens, ctx_lens=ctx_lens, num_heads=num_kv_heads * group, num_kv_heads=num_kv_heads,
        head_size=draw(st.sampled_from(head_sizes)), block_size=block_size,
        dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**16)),
        pad_tokens=draw(st.sampled_from([0, 0, 2])),
    ), draw(st.sampled_from([None, None, 1, 5, 40]))


@pytest.mark.slow
@given(case=attention_cases(head_sizes=[64, 80, 96, 128, 256], block_sizes=[16, 32, 64], max_seqs=5,
                            max_ctx=150, max_group=5))
def test_matches_reference_cpu(case):
    spec, window = case
    check("cpu", make_paged_batch(**spec), spec["dtype"], window=window)


@pytest.mark.slow
@settings(max_examples=8)
@given(case=attention_cases(head_sizes=[64, 128], block_sizes=[16, 32, 64], max_seqs=3, max_ctx=70, max_group=3))
@pytest.mark.parametrize("backend", [backend_param("interpret")])
def test_matches_reference_interpret(backend, case):
    spec, window = case
    check(backend, make_paged_batch(**spec), spec["dtype"], window=window)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_batch_with_empty_slots(backend, dtype):
    """Decode, empty slot, chunked prefill over cached blocks and a fresh prefill in one batch."""
    batch = make_paged_batch(q_lens=[1, 0, 5, 17], ctx_lens=[33, 12, 40, 17], num_heads=6, num_kv_heads=2,
                             head_size=64, block_size=16, dtype=dtype, seed=1, pad_tokens=3)
    check(backend, batch, dtype)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("window", [1, 7, 64])
def test_sliding_window(backend, window):
    batch = make_paged_batch(q_lens=[1, 30], ctx_lens=[100, 60], num_heads=4, num_kv_heads=1, head_size=64,
                             block_size=16, dtype=torch.float32, seed=2)
    check(backend, batch, torch.float32, window=window)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
def test_non_causal_sees_the_whole_context(backend):
    batch = make_paged_batch(q_lens=[4, 1], ctx_lens=[20, 9], num_heads=2, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=3)
    check(backend, batch, torch.float32, causal=False)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("segments", [None, 4])
@pytest.mark.parametrize("q_lens", [[1, 1, 0, 1], [3, 1, 0, 6]])
def test_non_causal_rows_share_one_key_mask(backend, segments, q_lens, monkeypatch):
    """Without causality or a window every row sees its segment's keys (one mask per key):
    padding rows of a GQA group (3 heads in 4 rows) and of a query block then see keys too
    and must still write nothing, and the unwritten slots past each context stay hidden."""
    if segments is not None:
        monkeypatch.setattr(attention_module, "num_kv_segments", lambda *args: segments)
    batch = poison_unwritten_slots(make_paged_batch(
        q_lens=q_lens, ctx_lens=[37, 1, 5, 70], num_heads=6, num_kv_heads=2, head_size=64, block_size=16,
        dtype=torch.float32, seed=23, pad_tokens=2))
    check(backend, batch, torch.float32, causal=False)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("block_size", [1, 2, 8, 32])
def test_block_sizes_split_slot_positions(backend, block_size):
    """Slot positions split into block and offset by a shift and a mask (BLOCK_SHIFT) for
    every power-of-two block size, the one-slot block included."""
    batch = poison_unwritten_slots(make_paged_batch(
        q_lens=[1, 4, 1], ctx_lens=[45, 9, 33], num_heads=4, num_kv_heads=2, head_size=64, block_size=block_size,
        dtype=torch.float32, seed=24, pad_tokens=1))
    check(backend, batch, torch.float32)
    check(backend, batch, torch.float32, window=7)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("segments", [2, 4])
def test_split_kv_matches_reference(backend, segments, monkeypatch):
    """The split-KV path, forced on small shapes: contexts shorter than the segment count
    leave some segments empty, which the merge must ignore."""
    monkeypatch.setattr(attention_module, "num_kv_segments", lambda *args: segments)
    batch = make_paged_batch(q_lens=[1, 1, 0, 1], ctx_lens=[70, 1, 5, 33], num_heads=6, num_kv_heads=3,
                             head_size=64, block_size=16, dtype=torch.float32, seed=4, pad_tokens=1)
    check(backend, batch, torch.float32)
    check(backend, batch, torch.float32, window=20)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_split_kv_chosen_for_long_decode(dtype):
    """A single long decode on the CPU backend takes the split path by the rule, and matches."""
    batch = make_paged_batch(q_lens=[1, 1], ctx_lens=[2048, 700], num_heads=9, num_kv_heads=3, head_size=64,
                             block_size=16, dtype=dtype, seed=5)
    assert attention_module.num_kv_segments(2, 3, 1, 2048, torch.device("cpu")) > 1
    check("cpu", batch, dtype)


def test_split_rule():
    cpu = torch.device("cpu")
    split = attention_module.num_kv_segments
    assert split(1, 3, 1, 2048, cpu) > 1, "one long decode is split"
    assert split(1, 3, 4, 2048, cpu) == 1, "a batch with prefill is never split"
    assert split(1, 3, 1, 128, cpu) == 1, "short contexts are not split"
    assert split(512, 8, 1, 2048, cpu) == 1, "enough work items already"
    assert split(1, 1, 1, 1 << 20, cpu) <= attention_module.MAX_SEGMENTS


@pytest.mark.parametrize("num_seqs", [1, 2, 3, 4, 7, 8, 9, 16, 17, 33])
@pytest.mark.parametrize("prefill", [False, True])
def test_every_sequence_finds_its_query_blocks(num_seqs, prefill):
    """The binary search over cu_seqlens_q takes num_seqs.bit_length() steps: enough for
    every batch size, the last sequence and power-of-two counts included."""
    q_lens = [1 + (s % 3) * 9 if prefill else 1 for s in range(num_seqs)]
    ctx_lens = [q + 3 * s + 1 for s, q in enumerate(q_lens)]
    batch = make_paged_batch(q_lens=q_lens, ctx_lens=ctx_lens, num_heads=2, num_kv_heads=1, head_size=64,
                             block_size=16, dtype=torch.float32, seed=num_seqs)
    check("cpu", batch, torch.float32)


def poison_unwritten_slots(batch: PagedBatch) -> PagedBatch:
    """NaN in every cache slot past its sequence's context (the tail of a last block, spare
    blocks), as stale memory may hold: a kernel reading those must not let them leak."""
    block_size = batch.key_cache.shape[1]
    written = torch.zeros(batch.key_cache.shape[:2], dtype=torch.bool)
    for s, ctx in enumerate(batch.seqused_k.tolist()):
        for pos in range(ctx):
            written[batch.block_table[s, pos // block_size], pos % block_size] = True
    for cache in (batch.key_cache, batch.value_cache):
        cache[~written] = float("nan")
    return batch


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("segments", [None, 4])
def test_unwritten_cache_slots_never_leak(backend, segments, monkeypatch):
    """Tiles run past short contexts and segment ends; the keys they read there must not
    reach the output even when the cache holds NaN (no 0 * NaN)."""
    if segments is not None:
        monkeypatch.setattr(attention_module, "num_kv_segments", lambda *args: segments)
    batch = poison_unwritten_slots(make_paged_batch(
        q_lens=[1, 1, 0, 1, 1], ctx_lens=[3, 200, 7, 17, 33], num_heads=6, num_kv_heads=2, head_size=64,
        block_size=16, dtype=torch.float32, seed=8, pad_tokens=1))
    check(backend, batch, torch.float32)
    check(backend, batch, torch.float32, window=9)


@pytest.mark.parametrize("head_size", [64, 80])
def test_unwritten_cache_slots_never_leak_into_prefill(head_size):
    batch = poison_unwritten_slots(make_paged_batch(
        q_lens=[5, 1, 19], ctx_lens=[21, 40, 19], num_heads=4, num_kv_heads=2, head_size=head_size,
        block_size=16, dtype=torch.float16, seed=9))
    check("cpu", batch, torch.float16)


def test_cpu_decode_segments_cover_the_longest_context_in_one_tile():
    """A ragged decode batch on the CPU backend: every program scans at most one tile, so a
    short context costs one tile, not the longest context's tile count."""
    ctx_lens = [30, 560, 95, 300, 41, 512, 129, 250]
    batch = make_paged_batch(q_lens=[1] * len(ctx_lens), ctx_lens=ctx_lens, num_heads=9, num_kv_heads=3,
                             head_size=64, block_size=16, dtype=torch.float32, seed=10)
    with kf.backend("cpu"), capture_launches() as captured:
        paged_attention(torch.empty_like(batch.query), *batch.args(), 0.125)
    (launch,) = captured
    config = launch.autotuned.default_config(launch)
    assert launch["NUM_SEGMENTS"] > 1
    assert launch["NUM_SEGMENTS"] * config["TILE"] >= max(ctx_lens)
    check("cpu", batch, torch.float32)


@pytest.mark.parametrize(("q_lens", "ctx_lens", "launched_q"), [
    ([1, 0, 1, 1, 7, 1, 20], [40, 9, 300, 1, 7, 17, 45], [20, 1]),  # decodes first: their own launch
    ([0, 0, 5, 1], [3, 8, 21, 30], [5]),  # only empty slots before the prefill: nothing to split off
    ([1, 1, 0], [64, 129, 2], [1]),  # a decode batch whose max_seqlen_q overstates it
    ([6, 1, 1], [6, 33, 90], [6]),  # a prefill first: one launch
])
def test_cpu_mixed_batch_launches_its_leading_decodes_apart(q_lens, ctx_lens, launched_q):
    batch = make_paged_batch(q_lens=q_lens, ctx_lens=ctx_lens, num_heads=6, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=11, pad_tokens=2)
    batch.max_seqlen_q = max(2, batch.max_seqlen_q)
    with kf.backend("cpu"), capture_launches() as captured:
        paged_attention(torch.empty_like(batch.query), *batch.args(), 0.125)
    assert [launch["max_seqlen_q"] for launch in captured] == launched_q
    if len(captured) == 2:  # each part is sized by its own longest context
        decodes = next(i for i, q in enumerate(q_lens) if q > 1)
        assert [launch["max_seqlen_k"] for launch in captured] == [max(ctx_lens[decodes:]), max(ctx_lens[:decodes])]
    check("cpu", batch, torch.float32)
    check("cpu", batch, torch.float32, window=10)


@pytest.mark.parametrize(("num_tokens", "num_seqs", "max_seqlen_k", "tile"), [
    (256, 1, 256, 256),  # one short prefill: one tile covers it
    (2145, 12, 300, 64),  # a batch of prompts: score tiles past the budget shrink to 64 keys
    (512, 1, 512, 128),  # a longer prompt: one halving brings its score tiles under the budget
])
def test_cpu_prefill_tile_follows_the_score_budget(num_tokens, num_seqs, max_seqlen_k, tile):
    args = dict(query_ptr=torch.empty(0), GROUP=3, max_seqlen_q=max(2, num_tokens // num_seqs),
                num_tokens=num_tokens, num_seqs=num_seqs, num_kv_heads=3, NUM_SEGMENTS=1,
                max_seqlen_k=max_seqlen_k, HEAD_PAD=64)
    with kf.backend("cpu"):
        config = attention_module._default(args)
    assert config["TILE"] == tile
    blocks = attention_module.num_q_blocks(num_tokens, num_seqs, config["BLOCK_M"] // 3)
    assert tile == 64 or blocks * 3 * config["BLOCK_M"] * tile <= attention_module.CPU_SCORE_ELEMENTS


@pytest.mark.parametrize(("group", "max_seqlen_q", "block_m"), [
    (1, 300, 64),  # MHA prefill: 64 tokens per program
    (3, 300, 64),  # GQA: 21 tokens of 3 heads
    (5, 300, 64),  # 12 tokens of 5 heads
    (1, 3, 4),  # short prompts: no more rows than the longest holds
    (96, 40, 128),  # a group wider than the row target: one token of every head
    (3, 1, 4),  # decode: one token
])
def test_cpu_program_rows(group, max_seqlen_q, block_m):
    args = dict(query_ptr=torch.empty(0), GROUP=group, max_seqlen_q=max_seqlen_q)
    with kf.backend("cpu"):
        config = attention_module._geometry(args, 64)
    assert config["BLOCK_M"] == block_m
    assert config["BLOCK_M"] // group >= 1


@pytest.mark.parametrize(("max_seqlen_q", "num_tokens", "num_seqs", "block_m", "tile"), [
    (300, 2145, 12, 64, 64),  # prompts: tiles as wide as the 64-row blocks, which measured fastest
    (2, 128, 64, 2, 16),  # 2-token chunks: the budget narrows tiles as at decode
    (32, 2048, 64, 32, 32),  # 32-token blocks: tiles narrow to 32 keys, no further
])
def test_cpu_prefill_tiles_narrow_to_their_block(max_seqlen_q, num_tokens, num_seqs, block_m, tile):
    """Llama-sized batches (32 KV heads of 128) pass the decode tile budget at any width;
    with prefill the budget narrows tiles only down to BLOCK_M keys (16 at least)."""
    args = dict(query_ptr=torch.empty(0), GROUP=1, max_seqlen_q=max_seqlen_q, num_tokens=num_tokens,
                num_seqs=num_seqs, num_kv_heads=32, NUM_SEGMENTS=1, max_seqlen_k=2048, HEAD_PAD=128)
    with kf.backend("cpu"):
        config = attention_module._default(args)
    assert (config["BLOCK_M"], config["TILE"]) == (block_m, tile)
    items = attention_module.num_q_blocks(num_tokens, num_seqs, block_m) * 32
    assert attention_module._cpu_tile_elements(items, args, tile) > attention_module.CPU_TILE_ELEMENTS


@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_prefill_blocks_straddling_sequence_ends(group, dtype):
    """Prompts one short of, at and one past a 64-row block (and 21-token blocks for GROUP 3),
    a chunk whose first block ends inside it, a decode and an empty slot between them."""
    q_lens = [63, 64, 65, 1, 0, 129, 22, 40]
    ctx_lens = [63, 64, 65, 70, 5, 129, 22, 100]
    batch = make_paged_batch(q_lens=q_lens, ctx_lens=ctx_lens, num_heads=2 * group, num_kv_heads=2,
                             head_size=64, block_size=16, dtype=dtype, seed=12, pad_tokens=3)
    with kf.backend("cpu"), capture_launches() as captured:
        paged_attention(torch.empty_like(batch.query), *batch.args(), 0.125)
    assert captured[0]["max_seqlen_q"] == 129
    check("cpu", batch, dtype)
    check("cpu", batch, dtype, window=30)


@pytest.mark.parametrize(("num_seqs", "num_kv_heads", "max_seqlen_k", "head_pad"),
                         [(64, 32, 2048, 128), (16, 32, 2048, 128), (64, 3, 2048, 64), (4, 3, 2048, 64)])
def test_cpu_decode_tiles_stay_within_the_budget(num_seqs, num_kv_heads, max_seqlen_k, head_pad):
    """Long decodes: segments and tile shrink so the tiles scanned at once stay bounded
    (down to 16-key tiles), and few sequences split up to MAX_SEGMENTS."""
    cpu = torch.device("cpu")
    segments = attention_module.num_kv_segments(num_seqs, num_kv_heads, 1, max_seqlen_k, cpu, head_pad)
    args = dict(query_ptr=torch.empty(0), GROUP=1, max_seqlen_q=1, num_tokens=num_seqs, num_seqs=num_seqs,
                num_kv_heads=num_kv_heads, NUM_SEGMENTS=segments, max_seqlen_k=max_seqlen_k, HEAD_PAD=head_pad)
    with kf.backend("cpu"):
        tile = attention_module._default(args)["TILE"]
    elements = attention_module._cpu_tile_elements(num_seqs * num_kv_heads, args, tile)
    assert tile == 16 or elements <= attention_module.CPU_TILE_ELEMENTS
    if num_seqs * num_kv_heads * max_seqlen_k * head_pad <= attention_module.CPU_TILE_ELEMENTS:
        assert segments == attention_module.MAX_SEGMENTS


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
def test_zero_tokens_and_all_empty_slots_are_no_ops(backend):
    batch = make_paged_batch(q_lens=[0, 0], ctx_lens=[3, 20], num_heads=2, num_kv_heads=1, head_size=64,
                             block_size=16, dtype=torch.float32, seed=6, pad_tokens=2)
    out, _ = run_both(backend, batch)
    assert out.isnan().all()


def test_reference_matches_sdpa():
    """The oracle itself, on one contiguous prefill, against torch's fused attention."""
    batch = make_paged_batch(q_lens=[37], ctx_lens=[37], num_heads=4, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=7)
    out = torch.empty_like(batch.query)
    reference.paged_attention(out, *batch.args(), 0.125)
    k = reference.gather_kv(batch.key_cache, batch.block_table[0], 37).repeat_interleave(2, dim=1)
    v = reference.gather_kv(batch.value_cache, batch.block_table[0], 37).repeat_interleave(2, dim=1)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        batch.query.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True, scale=0.125)
    torch.testing.assert_close(out, sdpa.transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_split_kv_merge_with_padded_head_and_uneven_heads(backend, monkeypatch):
    """The merge's (head, token) rows with a head size below its padding (80 of 128), a head
    count that is no power of two and padding tokens past the last sequence."""
    monkeypatch.setattr(attention_module, "num_kv_segments", lambda *args: 4)
    batch = make_paged_batch(q_lens=[1, 1, 1], ctx_lens=[90, 7, 41], num_heads=9, num_kv_heads=3,
                             head_size=80, block_size=16, dtype=torch.float32, seed=5, pad_tokens=2)
    check(backend, batch, torch.float32)


def one_token_flags(backend: str, batch: PagedBatch) -> list[bool]:
    """ONE_TOKEN_SEQS of each attention launch of `batch`, which must match the reference."""
    with kf.backend(backend), capture_launches() as captured:
        paged_attention(torch.full_like(batch.query, float("nan")), *batch.args(), 0.125)
    return [launch["ONE_TOKEN_SEQS"] for launch in captured if "ONE_TOKEN_SEQS" in launch.kwargs]


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("group", "head_size", "block_size"), [(1, 64, 16), (3, 80, 32), (5, 128, 16), (4, 96, 64)])
@pytest.mark.parametrize("window", [None, 1, 20])
def test_one_token_batches_skip_the_search(backend, dtype, group, head_size, block_size, window):
    """A decode batch of one token per sequence (length-1 and block-boundary contexts, split
    KV on the CPU for the long one) launches on the (segment, KV head, sequence) grid."""
    ctx_lens = [1, 16, 17, 300, 32, 5]
    batch = make_paged_batch(q_lens=[1] * len(ctx_lens), ctx_lens=ctx_lens, num_heads=2 * group, num_kv_heads=2,
                             head_size=head_size, block_size=block_size, dtype=dtype, seed=12)
    assert one_token_flags(backend, batch) == [True]
    check(backend, batch, dtype, window=window)


@pytest.mark.parametrize(("q_lens", "pad_tokens", "max_seqlen_q"), [
    ([1, 0, 1], 0, 1),  # an empty slot: sequence s is no longer token s
    ([0, 1, 1], 0, 1),
    ([1, 1, 1], 2, 1),  # padding tokens past the last sequence
    ([1, 1, 1], 0, 2),  # one token each, but a bound that allows more: split off as decodes
])
@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
def test_one_token_path_needs_every_sequence_to_hold_one_token(backend, q_lens, pad_tokens, max_seqlen_q):
    batch = make_paged_batch(q_lens=q_lens, ctx_lens=[40, 3, 170], num_heads=6, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=13, pad_tokens=pad_tokens)
    batch.max_seqlen_q = max_seqlen_q
    # The CPU backend launches a decode batch with max_seqlen_q 2 as decodes (bound 1).
    one_token_each = pad_tokens == 0 and 0 not in q_lens and (max_seqlen_q == 1 or backend == "cpu")
    assert one_token_flags(backend, batch) == [one_token_each]
    check(backend, batch, torch.float32)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("segments", [1, 2])
def test_one_token_batch_on_a_persistent_grid(backend, segments, monkeypatch):
    """The NPU geometry (3 programs looping over the work items) with ONE_TOKEN_SEQS: the
    programs walk sequences x KV heads x segments, not the query-block bound."""
    monkeypatch.setattr(attention_module, "persistent", lambda device: True)
    monkeypatch.setattr(attention_module, "grid_size", lambda n_work, device: min(n_work, 3))
    monkeypatch.setattr(attention_module, "num_kv_segments", lambda *args: segments)
    ctx_lens = [40, 3, 17, 1, 16, 33, 2, 9, 64, 5, 21, 48]  # past a 5-token query block's slack
    batch = make_paged_batch(q_lens=[1] * len(ctx_lens), ctx_lens=ctx_lens, num_heads=6, num_kv_heads=2,
                             head_size=64, block_size=16, dtype=torch.float32, seed=14)
    assert one_token_flags(backend, batch) == [True]
    check(backend, batch, torch.float32)


def visible_keys(q_lens: list[int], ctx_lens: list[int], block_q: int, window: int | None) -> dict[int, int]:
    """Query block number -> keys its causal rows can see, for every block that holds rows."""
    keys, first = {}, 0
    for s, (q_len, ctx) in enumerate(zip(q_lens, ctx_lens)):
        start = first if block_q == 1 else first // block_q + s
        for j in range(-(-q_len // block_q)):
            block_start = ctx - q_len + j * block_q
            low = 0 if window is None else max(0, block_start - window + 1)
            keys[start + j] = min(ctx, block_start + block_q) - low
        first += q_len
    return keys


@settings(max_examples=40)
@given(lens=sequences(16, 6, 90), block_q=st.sampled_from([1, 4, 21, 64]), window=st.sampled_from([None, 1, 7]))
def test_cpu_block_order_lists_each_block_with_rows_once_longest_first(lens, block_q, window):
    q_lens, ctx_lens = lens
    cu_seqlens_q = torch.tensor([0, *q_lens], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    order = attention_module._cpu_block_order(cu_seqlens_q, torch.tensor(ctx_lens, dtype=torch.int32), block_q,
                                              True, window)
    keys = visible_keys(q_lens, ctx_lens, block_q, window)
    assert order.dtype == torch.int32
    assert sorted(order.tolist()) == sorted(keys)
    seen = [keys[b] for b in order.tolist()]
    assert seen == sorted(seen, reverse=True)


@pytest.mark.parametrize(("q_lens", "ctx_lens", "ordered"), [
    ([37, 5, 130, 1], [37, 60, 130, 9], True),  # prefill in the batch: blocks with rows, longest first
    ([1, 1, 1], [40, 3, 170], False),  # decodes: one program per sequence already
])
def test_cpu_launches_with_prefill_list_their_blocks(q_lens, ctx_lens, ordered):
    batch = make_paged_batch(q_lens=q_lens, ctx_lens=ctx_lens, num_heads=6, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=21, pad_tokens=3)
    with kf.backend("cpu"), capture_launches() as captured:
        paged_attention(torch.empty_like(batch.query), *batch.args(), 0.125)
    launches = [launch for launch in captured if "ORDERED" in launch.kwargs]
    assert [launch["ORDERED"] for launch in launches] == [ordered]
    if ordered:
        blocks = sum(-(-q // 21) for q in q_lens)  # 64 rows: 21 tokens of 3 heads
        assert launches[0].grid(dict(BLOCK_M=64)) == (blocks * 2,)
    check("cpu", batch, torch.float32)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("window", [None, 5])
def test_ordered_blocks_match_reference(backend, window, monkeypatch):
    """The listed-blocks path (the CPU backend's, for prefill) on interpret too: ragged
    prompts, a chunk, decodes and an empty slot, blocks straddling sequence ends."""
    monkeypatch.setattr(attention_module, "_orders_blocks", lambda max_seqlen_q, device: max_seqlen_q > 1)
    batch = make_paged_batch(q_lens=[1, 23, 0, 9, 40, 2], ctx_lens=[30, 23, 5, 50, 40, 17], num_heads=4,
                             num_kv_heads=2, head_size=64, block_size=16, dtype=torch.float32, seed=22,
                             pad_tokens=2)
    check(backend, batch, torch.float32, window=window)


@pytest.mark.parametrize("group", [1, 3, 5])
@pytest.mark.parametrize("bucket", [1, 2, 4, 8, 16, 32, 64, 128])
def test_cpu_program_rows_follow_the_autotune_bucket(group, bucket):
    """A config tuned for one max_seqlen_q serves its whole power-of-two bucket: its rows
    are those every length of the bucket would get."""
    rows = {attention_module._block_m(group, q, torch.device("cpu")) for q in range(bucket // 2 + 1, bucket + 1)}
    assert len(rows) == 1


@pytest.mark.parametrize("block_m", [2, 16, 128])
def test_cpu_ordered_launch_lists_its_blocks_for_the_tuned_configs_rows(block_m):
    batch = make_paged_batch(q_lens=[37, 5, 0, 130, 1], ctx_lens=[37, 60, 4, 130, 9], num_heads=4, num_kv_heads=2,
                             head_size=64, block_size=16, dtype=torch.float32, seed=23, pad_tokens=3)
    assert attention_module._block_m(2, 130, torch.device("cpu")) != block_m
    previous = autotuning.set_config_provider(FixedRowsProvider(block_m))
    try:
        with capture_launches() as captured:
            check("cpu", batch, torch.float32, window=20)
    finally:
        autotuning.set_config_provider(previous)
    assert [launch["ORDERED"] for launch in captured if "ORDERED" in launch.kwargs] == [True]


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
def test_half_precision_scores_keep_the_unrounded_query(backend):
    """fp16 queries are not scaled and rounded back to fp16 before the scan (fp32 ones are,
    SCALE_QUERIES): that doubled the error against an fp64 reference on peaked softmaxes
    (max 2.4e-3 here, against 1.2e-3 when the scores are scaled)."""
    batch = make_paged_batch(q_lens=[37, 130, 5], ctx_lens=[37, 130, 9], num_heads=6, num_kv_heads=2,
                             head_size=64, block_size=16, dtype=torch.float16, seed=3)
    batch.query.mul_(3)
    out, _ = run_both(backend, batch)
    exact = torch.empty(batch.query.shape, dtype=torch.float64)
    reference.paged_attention(exact, *(a.double() if a.is_floating_point() else a
                                       for a in batch.args()[:3]), *batch.args()[3:], 64 ** -0.5)
    assert (out.double() - exact).abs().max().item() < 1.8e-3
