"""paged_attention's split of the key range into tiles every row sees whole (scanned without
masks) and masked ones, and the CPU backend's launch of a large prefill batch in parts."""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import ATTN_TOL, DTYPES, FixedRowsProvider, backend_param, make_paged_batch, sequences

import kernelforge as kf
import kernelforge.language as kl
from kernelforge import autotuning
from kernelforge.autotuning import capture_launches
from kernelforge.kernels import paged_attention, reference
from kernelforge.kernels.paged_attention import _whole_tiles

attention_module = importlib.import_module("kernelforge.kernels.paged_attention")


@kf.jit
def whole_tiles_kernel(out_ptr, args_ptr, BLOCK_Q: kl.constexpr, CAUSAL: kl.constexpr, USE_WINDOW: kl.constexpr,
                       TILE: kl.constexpr):
    """Program i: `_whole_tiles` of row i of args (seg_start, seg_end, first_q_pos, window)."""
    i = kl.program_id(0)
    seg_start = kl.load(args_ptr + i * 4)
    seg_end = kl.load(args_ptr + i * 4 + 1)
    first_q_pos = kl.load(args_ptr + i * 4 + 2)
    window = kl.load(args_ptr + i * 4 + 3)
    whole_start, whole_end = _whole_tiles(seg_start, seg_end, first_q_pos, window, BLOCK_Q, CAUSAL, USE_WINDOW, TILE)
    kl.store(out_ptr + i * 2, whole_start)
    kl.store(out_ptr + i * 2 + 1, whole_end)


def whole_tiles(backend: str, cases: torch.Tensor, block_q: int, causal: bool, use_window: bool,
                tile: int) -> torch.Tensor:
    out = torch.empty(cases.shape[0], 2, dtype=torch.int32)
    with kf.backend(backend):
        whole_tiles_kernel[(cases.shape[0],)](out, cases, BLOCK_Q=block_q, CAUSAL=causal, USE_WINDOW=use_window,
                                              TILE=tile)
    return out


def random_segments(n: int, seed: int) -> torch.Tensor:
    """Rows (seg_start, seg_end, first_q_pos, window): segments empty, reversed (a segment past
    the context) or up to 300 keys, query blocks before, inside and after them."""
    gen = torch.Generator().manual_seed(seed)
    seg_start = torch.randint(0, 200, (n,), generator=gen)
    seg_end = seg_start + torch.randint(-40, 300, (n,), generator=gen)
    first_q_pos = seg_start + torch.randint(-50, 350, (n,), generator=gen)
    window = torch.randint(1, 200, (n,), generator=gen)
    return torch.stack([seg_start, seg_end, first_q_pos, window], dim=1).to(torch.int32)


def visible_to_every_row(keys: torch.Tensor, case: torch.Tensor, block_q: int, causal: bool,
                         use_window: bool) -> torch.Tensor:
    """Whether each key lies in the segment and is seen by rows at positions first_q_pos ..
    first_q_pos + block_q - 1."""
    seg_start, seg_end, first_q_pos, window = case.tolist()
    ok = (keys >= seg_start) & (keys < seg_end)
    if causal:
        ok &= keys <= first_q_pos
    if use_window:
        ok &= keys >= first_q_pos + block_q - 1 - window + 1
    return ok


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize(("causal", "use_window"), [(True, False), (True, True), (False, True)])
@pytest.mark.parametrize("block_q", [1, 21])
@pytest.mark.parametrize("tile", [16, 64])
def test_whole_tiles_hold_only_keys_every_row_sees(backend, causal, use_window, block_q, tile):
    """The unmasked range is whole tiles aligned to the segment's tile grid, every key of it is
    visible to every row, the masked ranges before and after it cover the rest of the segment
    exactly, and it is as long as it can be: the tiles next to it are not wholly visible."""
    cases = random_segments(400 if backend == "cpu" else 60, seed=block_q * tile)
    got = whole_tiles(backend, cases, block_q, causal, use_window, tile)
    for case, (whole_start, whole_end) in zip(cases, got.tolist()):
        seg_start, seg_end = int(case[0]), int(case[1])
        end = max(seg_start, seg_end)
        assert seg_start <= whole_start <= whole_end <= end, (case, whole_start, whole_end)
        assert (whole_end - whole_start) % tile == 0
        # The masked prefix range(seg_start, whole_start, tile) must stop at whole_start.
        assert (whole_start - seg_start) % tile == 0 or whole_start == whole_end == end
        keys = torch.arange(whole_start, whole_end)
        assert visible_to_every_row(keys, case, block_q, causal, use_window).all(), (case, whole_start, whole_end)
        for neighbour in (whole_end, whole_start - tile):
            if seg_start <= neighbour and (neighbour - seg_start) % tile == 0:
                tile_keys = torch.arange(neighbour, neighbour + tile)
                assert not visible_to_every_row(tile_keys, case, block_q, causal, use_window).all(), (
                    case, whole_start, whole_end, neighbour)


class SmallTilesProvider:
    """Forces `tile` keys per tile (the rows the launch would choose), so that short prompts
    already hold whole tiles, diagonal tiles and tiles cut by the window."""

    stable = True

    def __init__(self, tile: int) -> None:
        self.tile = tile

    def get_config(self, autotuned, key, named_args):
        if autotuned is not attention_module._paged_attention_kernel:
            return None
        block_m = attention_module._block_m(named_args["GROUP"], named_args["max_seqlen_q"],
                                            named_args["query_ptr"].device)
        return kf.Config(BLOCK_M=block_m, TILE=self.tile)


def check_with_tiles(backend: str, batch, dtype: torch.dtype, tile: int, window: int | None) -> None:
    scale = batch.query.shape[-1] ** -0.5
    out = torch.full_like(batch.query, float("nan"))
    expected = torch.full_like(batch.query, float("nan"))
    previous = autotuning.set_config_provider(SmallTilesProvider(tile))
    try:
        with kf.backend(backend):
            paged_attention(out, *batch.args(), scale, sliding_window=window)
    finally:
        autotuning.set_config_provider(previous)
    reference.paged_attention(expected, *batch.args(), scale, sliding_window=window)
    torch.testing.assert_close(out.float(), expected.float(), equal_nan=True, **ATTN_TOL[dtype])


@st.composite
def split_cases(draw, max_seqs: int, max_ctx: int):
    block_size = draw(st.sampled_from([2, 16, 32]))
    q_lens, ctx_lens = draw(sequences(block_size, max_seqs, max_ctx))
    num_kv_heads = draw(st.integers(1, 2))
    group = draw(st.sampled_from([1, 3]))
    spec = dict(q_lens=q_lens, ctx_lens=ctx_lens, num_heads=num_kv_heads * group, num_kv_heads=num_kv_heads,
                head_size=draw(st.sampled_from([64, 80])), block_size=block_size,
                dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**16)),
                pad_tokens=draw(st.sampled_from([0, 2])))
    return spec, draw(st.sampled_from([16, 32])), draw(st.sampled_from([None, 1, 7, 16, 33]))


@settings(max_examples=25, deadline=None)
@given(case=split_cases(max_seqs=5, max_ctx=120))
def test_split_scan_matches_reference_cpu(case):
    spec, tile, window = case
    check_with_tiles("cpu", make_paged_batch(**spec), spec["dtype"], tile, window)


@settings(max_examples=6, deadline=None)
@given(case=split_cases(max_seqs=3, max_ctx=50))
@pytest.mark.parametrize("backend", [backend_param("interpret")])
def test_split_scan_matches_reference_interpret(backend, case):
    spec, tile, window = case
    check_with_tiles(backend, make_paged_batch(**spec), spec["dtype"], tile, window)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
@pytest.mark.parametrize("window", [None, 1, 16, 17])
@pytest.mark.parametrize("dtype", DTYPES)
def test_prompts_ending_on_tile_boundaries(backend, window, dtype):
    """Prompts and chunks one key short of, at and one past 16-key tile boundaries, with GQA."""
    batch = make_paged_batch(q_lens=[1, 15, 16, 17, 20, 33], ctx_lens=[1, 15, 16, 17, 47, 33], num_heads=6,
                             num_kv_heads=2, head_size=64, block_size=16, dtype=dtype, seed=5, pad_tokens=1)
    check_with_tiles(backend, batch, dtype, 16, window)


def test_launch_parts_bound_each_launchs_accumulators():
    assert attention_module._cpu_launch_parts(0, 32, 64, 128) == 1
    budget = attention_module.CPU_LAUNCH_ACC_ELEMENTS
    assert attention_module._cpu_launch_parts(budget // (32 * 64 * 128), 32, 64, 128) == 1
    assert attention_module._cpu_launch_parts(budget // (32 * 64 * 128) + 1, 32, 64, 128) == 2
    parts = attention_module._cpu_launch_parts(40, 32, 64, 128)  # 40 blocks of a Llama-2-7B prefill
    assert (parts - 1) * budget < 40 * 32 * 64 * 128 <= parts * budget


@pytest.mark.parametrize("block_m", [None, 16, 128])
def test_large_prefill_launches_in_parts_that_cover_its_blocks(block_m, monkeypatch):
    """With room for 3 blocks per launch, the listed blocks go out in runs, longest first, each
    launched once; a config with other rows (block_m) splits its own list into as many runs
    (with wider rows, fewer blocks: the last runs may be empty launches)."""
    monkeypatch.setattr(attention_module, "CPU_LAUNCH_ACC_ELEMENTS", 3 * 2 * 64 * 64)
    batch = make_paged_batch(q_lens=[37, 5, 0, 130, 1, 60], ctx_lens=[37, 60, 4, 130, 9, 80], num_heads=6,
                             num_kv_heads=2, head_size=64, block_size=16, dtype=torch.float32, seed=7, pad_tokens=2)
    provider = None if block_m is None else FixedRowsProvider(block_m)
    previous = autotuning.set_config_provider(provider) if provider else None
    try:
        with kf.backend("cpu"), capture_launches() as captured:
            out = torch.full_like(batch.query, float("nan"))
            paged_attention(out, *batch.args(), 0.125)
    finally:
        if provider:
            autotuning.set_config_provider(previous)
    launches = [launch for launch in captured if launch.kwargs.get("ORDERED")]
    listed = attention_module._cpu_block_order(batch.cu_seqlens_q, batch.seqused_k, 21, True, None)
    assert len(launches) == -(-listed.numel() // 3)
    rows = 64 if block_m is None else block_m
    launched = []
    for launch in launches:
        programs = launch.grid(dict(BLOCK_M=rows))[0]
        launched.append(launch["q_block_order_ptr"][:programs // 2].clone())
    every = attention_module._cpu_block_order(batch.cu_seqlens_q, batch.seqused_k, rows // 3, True, None)
    assert torch.equal(torch.cat(launched), every)
    expected = torch.full_like(batch.query, float("nan"))
    reference.paged_attention(expected, *batch.args(), 0.125)
    torch.testing.assert_close(out, expected, equal_nan=True, **ATTN_TOL[torch.float32])


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
def test_listed_launch_without_query_tokens_runs_no_program(backend, monkeypatch):
    """Sequences that all bring no query token list no block: a listed launch has no program
    (one would read an unwritten entry of the list; the CPU backend launches none at all,
    its host sees only empty decode slots), and the padding rows stay untouched."""
    monkeypatch.setattr(attention_module, "_orders_blocks", lambda max_seqlen_q, device: max_seqlen_q > 1)
    batch = make_paged_batch(q_lens=[0, 0], ctx_lens=[20, 7], num_heads=4, num_kv_heads=2, head_size=64,
                             block_size=16, dtype=torch.float32, seed=9, pad_tokens=3)
    batch.max_seqlen_q = 4
    out = torch.full_like(batch.query, float("nan"))
    with kf.backend(backend), capture_launches() as captured:
        paged_attention(out, *batch.args(), 0.125)
    assert all(launch.grid(dict(BLOCK_M=8)) == (0,) for launch in captured)
    assert out.isnan().all()


def test_block_list_runs_cover_the_list_of_any_rows(monkeypatch):
    """Parts are counted for the default rows; a config with wider rows lists fewer blocks and
    its last runs come out empty (launches of no program), narrower rows longer runs."""
    monkeypatch.setattr(attention_module, "CPU_LAUNCH_ACC_ELEMENTS", 2 * 16 * 64)  # one 16-row block of 2 heads
    cu_seqlens_q = torch.tensor([0, 40, 70], dtype=torch.int32)
    seqused_k = torch.tensor([40, 30], dtype=torch.int32)
    blocks = attention_module._CpuBlockList(cu_seqlens_q, seqused_k, True, None, 1, 16, 2, 64)
    assert blocks.parts == 3 + 2  # 16-token blocks
    for block_q in (8, 16, 64):
        order = torch.full((70,), -1, dtype=torch.int32)
        runs = []
        for part in range(blocks.parts):
            n = blocks.fill(part, block_q, order)
            runs.append(order[:n].clone())
        assert torch.equal(torch.cat(runs), blocks.listed(block_q))
        assert (min(len(r) for r in runs) == 0) == (block_q == 64)
