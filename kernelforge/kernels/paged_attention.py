"""Attention over the paged KV cache for a mixed prefill + decode batch (vLLM's unified attention).

Work decomposition. The query tokens of each sequence are cut into blocks of BLOCK_Q
tokens; a work item is (query block, KV head[, KV segment]). Its BLOCK_M rows are the
BLOCK_Q tokens times the GROUP query heads that share the KV head (GQA/MQA), so K and V
are loaded once per group. Query blocks are numbered across the batch as
`cu_seqlens_q[s] // BLOCK_Q + s + j` (the +s leaves room for every sequence's partial
last block; one-token blocks need none), which lets the launcher bound their count by
`T // BLOCK_Q + S` without reading lengths on the host; a program finds its sequence by
binary search over `cu_seqlens_q` and skips indices past its sequence's last block.
Sequences with no query tokens (empty decode slots) own no block and are never touched.
When the host can read `cu_seqlens_q` for free (tensors in host memory) and every sequence
holds exactly one query token, the launch says so (ONE_TOKEN_SEQS): program s is then
sequence s, with no search, on a (segment, KV head, sequence) grid. On the CPU backend a
batch with prefill in it lists its query blocks in a work order (ORDERED): only blocks
that hold rows, those that see the most keys first (`_cpu_block_order`).

The context is scanned in tiles of TILE key positions, each position's physical block
looked up in the block table, with an fp32 online softmax (running max m, running sum
l, unnormalised accumulator) in base 2: the scale folds in log2(e) and exp2 replaces
exp, which is several times faster on the CPU backend for the -inf of masked scores.
fp32 queries are scaled once, before the scan (SCALE_QUERIES), which saves a pass over
every score tile; half-precision ones would round the scaled query, so their scores are
scaled instead.
Causal masking, the sliding window and the tile's tail are one `where` on the scores,
from each row's first and last visible key (with neither causality nor a window, from
the segment's end alone, one mask per key); rows that have seen no visible key yet
keep m = -inf and contribute nothing. With causality or a window, the tiles every row of
the block sees whole are scanned first without any of that (`_whole_tiles`), and only
the tiles around them masked, as FlashAttention does. The accumulator's rescale is the
`acc` operand of the P @ V dot (one baddbmm on the CPU backend, the MMA accumulator on GPUs).
On the CPU backend a batch with prefill in it is launched in parts of at most
CPU_LAUNCH_ACC_ELEMENTS accumulator elements (`_cpu_launch_parts`).

Split-KV decode. A decode batch with few sequences gives too few work items to fill
the machine; on the CPU backend, which runs every program's tiles in lockstep, a ragged
batch would scan its longest context for every sequence. Then each (sequence, KV head)
is split into NUM_SEGMENTS contiguous ranges of tiles that run as separate work items
and write their (m, l, acc) partials; `_merge_segments_kernel` rescales and sums them.
See `num_kv_segments` for the rule. On the CPU backend the decodes that open a mixed
batch are launched apart from its prefill chunks (`_leading_decodes`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import torch
from torch import Tensor

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.autotuning import next_power_of_2
from kernelforge.backends import npu_rules
from kernelforge.kernels import validation
from kernelforge.jit import BoundLaunch
from kernelforge.kernels.launch import LaunchMemo, flat_view, grid_size, memo_key, on_cpu_backend, persistent

MAX_SEGMENTS = 16
# Elements of one K (or V) tile across the programs of a CPU launch that can scan at once:
# 4M keeps the int64 offsets of a tile at 32 MB.
CPU_TILE_ELEMENTS = 1 << 22
LOG2E = 1.4426950408889634  # exp(x) == exp2(x * LOG2E)
# Elements of one score tile across all programs of a CPU launch above which tiles shrink
# (down to 64 keys; see `_default`).
CPU_SCORE_ELEMENTS = 1 << 20
# Query rows (tokens x the heads of a group) of one CPU program when prefill is in the batch:
# 64 measured fastest for GROUP 1 and 3 (see `_geometry`).
CPU_PREFILL_ROWS = 64
# Keys per KV segment the CPU backend aims at in a decode batch (see `_cpu_kv_segments`).
CPU_SEGMENT_KEYS = 128
# Accumulator elements ([programs, BLOCK_M, HEAD_PAD] fp32, 3 MB) of one CPU launch with
# prefill in it; a batch with more is launched in parts (see `_cpu_launch_parts`).
CPU_LAUNCH_ACC_ELEMENTS = 3 << 18


def _geometry(args: dict, tile: int) -> kf.Config:
    """BLOCK_M and TILE for one tile size. Triton's `dot` wants at least 16 rows; the CPU
    backend pays for every padded row, so there a program holds just the query heads of
    one group times one token at decode. With prefill in the batch it holds about
    CPU_PREFILL_ROWS rows (as many tokens as fit, at least one): every query block gathers
    its whole causal K/V prefix, so more tokens per block mean fewer gathers, while the
    scores its diagonal tile wastes grow with the block."""
    return kf.Config(BLOCK_M=_block_m(args["GROUP"], args["max_seqlen_q"], args["query_ptr"].device), TILE=tile)


def _block_m(group: int, max_seqlen_q: int, device: torch.device) -> int:
    """BLOCK_M of every config on `device` (see `_geometry`): tiles vary, rows do not, and
    they follow max_seqlen_q's power-of-two bucket, as the autotuner's key does, so a config
    tuned for one length of a bucket suits them all."""
    if on_cpu_backend(device):
        return next_power_of_2(max(group, min(CPU_PREFILL_ROWS, group * next_power_of_2(max_seqlen_q))))
    return max(16, next_power_of_2(group))


def _fits(args: Mapping[str, Any], config: kf.Config) -> bool:
    """Whether a config keeps one program inside the NPU's on-chip buffer, by the compiler's
    own estimate (the CPU backend has no such limit)."""
    if on_cpu_backend(args["query_ptr"].device):
        return True
    constexprs = {n: args[n] for n in _paged_attention_kernel.fn.constexpr_names if n in args}
    return _ub_peak(args["query_ptr"].dtype, tuple(sorted({**constexprs, **config}.items()))) <= npu_rules.ub_limit()


@functools.lru_cache(maxsize=None)
def _ub_peak(dtype: torch.dtype, constexprs: tuple) -> int:
    """Peak live bytes of the attention kernel specialised for `dtype` and `constexprs`."""
    fn = _paged_attention_kernel.fn
    types = {n: "i32" for n in fn.runtime_names}
    types.update(dict.fromkeys(("block_table_ptr", "cu_seqlens_q_ptr", "seqused_k_ptr", "q_block_order_ptr"),
                               "*i32"))
    types.update(dict.fromkeys(("m_part_ptr", "l_part_ptr", "acc_part_ptr"), "*fp32"), scale="fp32")
    types.update(dict.fromkeys(("out_ptr", "query_ptr", "key_cache_ptr", "value_cache_ptr"),
                               "*" + {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]))
    return npu_rules.estimate_ub(fn.specialize(types, dict(constexprs))).peak_bytes


def _configs(args: dict) -> list[kf.Config]:
    tiles = (16, 32, 64, 128, 256, 512) if on_cpu_backend(args["query_ptr"].device) else (16, 32, 64, 128)
    fitting = [c for c in (_geometry(args, t) for t in tiles) if _fits(args, c)]
    return fitting or [_geometry(args, 16)]  # nothing fits: the compiler says why at launch


def _default(args: dict) -> kf.Config:
    """The largest tile that fits: up to 64 keys on NPU/GPU (within the UB budget; fp32 with
    head size 256 fits none, the NPU then rejects the smallest with the compiler's error). On the
    CPU backend every tile is one round of batched torch ops over all programs, so a tile
    covers a segment's whole context (up to 256 keys) unless the tiles of the programs that
    can be scanning at once would pass CPU_TILE_ELEMENTS, which bounds a tile's temporaries
    at decode. With prefill in the batch the fp32 [BLOCK_M, HEAD_PAD] accumulators of all
    programs are live anyway, and a K or V tile of BLOCK_M keys is no larger, so the budget
    narrows tiles no further than that (nor below 16 keys, nor 64 keys from above); the
    [BLOCK_M, TILE] score tiles of all programs are then the big temporaries: past
    CPU_SCORE_ELEMENTS, tiles of 64 keys measured faster than wider ones, and narrower ones
    only add steps (each rescales every accumulator)."""
    if not on_cpu_backend(args["query_ptr"].device):
        return [c for c in _configs(args) if c["TILE"] <= 64][-1]
    block_m = _geometry(args, 16)["BLOCK_M"]
    items = num_q_blocks(args["num_tokens"], args["num_seqs"], block_m // args["GROUP"]) * args["num_kv_heads"]
    seg_len = math.ceil(args["max_seqlen_k"] / args["NUM_SEGMENTS"])
    tile = max(16, min(256, next_power_of_2(seg_len)))  # 16 keys at least: the smallest tunable tile
    narrowest = 16 if args["max_seqlen_q"] == 1 else min(tile, 64, max(16, block_m))
    while tile > narrowest and _cpu_tile_elements(items, args, tile) > CPU_TILE_ELEMENTS:
        tile //= 2
    while tile > 64 and items * block_m * tile > CPU_SCORE_ELEMENTS:
        tile //= 2
    return _geometry(args, tile)


def _cpu_tile_elements(items: int, args: Mapping[str, Any], tile: int) -> int:
    """Elements of one K tile across the programs that can be scanning at once: segments past
    the longest context hold no keys (the CPU backend compacts those programs away)."""
    busy_segments = min(args["NUM_SEGMENTS"], math.ceil(args["max_seqlen_k"] / tile))
    return items * busy_segments * tile * args["HEAD_PAD"]


@kf.jit
def _first_q_block(q_start, seq, BLOCK_Q: kl.constexpr):
    """Number of the first query block of sequence `seq` (query tokens from q_start on).

    Blocks of one token need no slack; wider blocks leave one spare number per sequence
    for its partial last block, so the count stays below num_tokens // BLOCK_Q + num_seqs.
    """
    if BLOCK_Q == 1:
        first = q_start
    else:
        first = q_start // BLOCK_Q + seq
    return first


@kf.jit
def _with_feature_mask(row_mask, d_mask, HEAD_SIZE: kl.constexpr, HEAD_PAD: kl.constexpr):
    """[rows, HEAD_PAD] mask from a row mask, masking padded features only when there are
    any (head sizes 80, 96): an all-true feature mask would still cost a pass over the tile."""
    if HEAD_SIZE == HEAD_PAD:
        mask = kl.broadcast_to(row_mask[:, None], (row_mask.shape[0], HEAD_PAD))
    else:
        mask = row_mask[:, None] & d_mask[None, :]
    return mask


@kf.jit
def _num_q_blocks(num_tokens, num_seqs, BLOCK_Q: kl.constexpr):
    """Upper bound of the query block numbers (`_first_q_block`); `num_q_blocks` on the host."""
    if BLOCK_Q == 1:
        n = num_tokens
    else:
        n = num_tokens // BLOCK_Q + num_seqs
    return n


def num_q_blocks(num_tokens: int, num_seqs: int, block_q: int) -> int:
    """Host twin of `_num_q_blocks`: how many query-block numbers a launch must cover."""
    return num_tokens if block_q == 1 else num_tokens // block_q + num_seqs


@kf.jit
def _row_layout(offs_m, GROUP: kl.constexpr, ONE_TOKEN_SEQS: kl.constexpr):
    """(token within the query block, head within the group) of each of a program's rows,
    token-major. When every sequence is one token, the row is the head itself (rows past
    GROUP are padding, masked by the caller), which keeps query and output addresses
    affine in the row: the CPU backend then reads and writes them as strided views
    instead of gathers and scatters."""
    if ONE_TOKEN_SEQS:
        row_token = kl.zeros([offs_m.shape[0]], dtype=kl.int32)
        row_head = offs_m
    else:
        row_token = offs_m // GROUP
        row_head = offs_m % GROUP
    return row_token, row_head


@kf.jit
def _owning_sequence(q_block, cu_seqlens_q_ptr, num_seqs, search_steps, BLOCK_Q: kl.constexpr):
    """The sequence owning query block q_block: the last s whose first block is <= q_block.
    Each step halves [lo, hi) (size n -> n // 2), so num_seqs.bit_length() steps empty it."""
    lo = 0
    hi = num_seqs
    for _ in range(search_steps):
        mid = (lo + hi) // 2
        go_right = _first_q_block(kl.load(cu_seqlens_q_ptr + mid), mid, BLOCK_Q) <= q_block
        searching = lo < hi
        lo = kl.where(searching & go_right, mid + 1, lo)
        hi = kl.where(searching & (go_right == 0), mid, hi)
    return lo - 1


@kf.jit
def _work_item(work, num_kv_heads, NUM_SEGMENTS: kl.constexpr):
    """(query block, KV head, KV segment) of work item `work`, segment fastest."""
    return work // NUM_SEGMENTS // num_kv_heads, work // NUM_SEGMENTS % num_kv_heads, work % NUM_SEGMENTS


@kf.jit
def _whole_tiles(seg_start, seg_end, first_q_pos, window, BLOCK_Q: kl.constexpr, CAUSAL: kl.constexpr,
                 USE_WINDOW: kl.constexpr, TILE: kl.constexpr):
    """[whole_start, whole_end): the segment's tiles (from seg_start on, TILE keys each) that
    every row of the query block sees whole, within [seg_start, seg_end). The block's first
    token (at first_q_pos) sees the fewest keys when causal; its last (BLOCK_Q - 1 tokens
    on, or fewer: a bound is enough) the fewest from the window's start."""
    span = kl.maximum(seg_end - seg_start, 0)  # an empty segment may end before it starts
    visible = span
    if CAUSAL:
        visible = kl.minimum(span, first_q_pos + 1 - seg_start)
    whole_end = seg_start + kl.maximum(visible, 0) // TILE * TILE
    whole_start = seg_start
    if USE_WINDOW:
        hidden = kl.maximum(first_q_pos + BLOCK_Q - window - seg_start, 0)  # keys before the last row's window
        whole_start = seg_start + kl.minimum((hidden + TILE - 1) // TILE * TILE, span)
        whole_end = kl.maximum(whole_end, whole_start)
    return whole_start, whole_end


@kf.jit
def _scan_tiles(acc, l_i, m_i, q, start, end, seg_last, seg_end, first_key, last_key, qk_scale,
                key_cache_ptr, value_cache_ptr, block_table_row, kv_row, kv_head, offs_t, offs_d, d_mask,
                HEAD_SIZE: kl.constexpr, HEAD_PAD: kl.constexpr, BLOCK_SIZE: kl.constexpr,
                BLOCK_SHIFT: kl.constexpr, CAUSAL: kl.constexpr, USE_WINDOW: kl.constexpr,
                SCALE_QUERIES: kl.constexpr, TILE: kl.constexpr, MASKED: kl.constexpr):
    """The online softmax over the key tiles [start, end) of a work item: (acc, l_i, m_i) after
    them. MASKED: tiles some row does not see whole (see `_attend`); else every key of every
    tile is visible to every row, and neither the scores nor the positions need masking."""
    for tile_start in range(start, end, TILE):
        k_pos = tile_start + offs_t
        slot_pos = k_pos
        if MASKED:
            # Positions past the segment read its last key again instead of being masked: that
            # slot was written, so its K and V are finite (stale cache memory may hold NaN, and
            # 0 * NaN would leak into the accumulator), and their scores are masked below.
            # The loads then need no mask, which saves the CPU backend a pass over V.
            slot_pos = kl.minimum(k_pos, seg_last)
        # Block sizes are powers of two and slot_pos >= 0, so a shift and a mask split it into
        # block and offset (integer division and remainder cost the CPU backend 8x as much).
        # A slot number fits int32; its element offset may not.
        block = kl.load(block_table_row + (slot_pos >> BLOCK_SHIFT))
        slot = block * BLOCK_SIZE + (slot_pos & (BLOCK_SIZE - 1))
        slot_off = slot.to(kl.int64) * kv_row + kv_head * HEAD_SIZE
        # K and V share one [TILE, HEAD_PAD] offset block.
        kv_offsets = slot_off[:, None] + offs_d[None, :]
        if HEAD_SIZE == HEAD_PAD:
            k = kl.load(key_cache_ptr + kv_offsets)
            v = kl.load(value_cache_ptr + kv_offsets)
        else:
            kv_mask = kl.broadcast_to(d_mask[None, :], (TILE, HEAD_PAD))
            k = kl.load(key_cache_ptr + kv_offsets, mask=kv_mask, other=0.0)
            v = kl.load(value_cache_ptr + kv_offsets, mask=kv_mask, other=0.0)
        scores = kl.dot(q, kl.trans(k))
        if not SCALE_QUERIES:
            scores = scores * qk_scale
        if MASKED:
            if CAUSAL or USE_WINDOW:
                visible = k_pos[None, :] <= last_key[:, None]
                if USE_WINDOW:
                    visible = visible & (k_pos[None, :] >= first_key[:, None])
            else:
                visible = (k_pos < seg_end)[None, :]
            scores = kl.where(visible, scores, float("-inf"))
        m_new = kl.maximum(m_i, kl.max(scores, axis=1))
        if MASKED and (CAUSAL or USE_WINDOW):  # a row may see no key yet: keep exp2's argument finite
            m_safe = kl.where(m_new == float("-inf"), 0.0, m_new)
        else:  # every row sees the tile's first key (tile_start < seg_end), so m_new is finite
            m_safe = m_new
        p = kl.exp2(scores - m_safe[:, None])
        alpha = kl.exp2(m_i - m_safe)
        l_i = l_i * alpha + kl.sum(p, axis=1)
        acc = kl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@kf.jit
def _attend(
    q_block, kv_head, segment,
    out_ptr, query_ptr, key_cache_ptr, value_cache_ptr, block_table_ptr, cu_seqlens_q_ptr, seqused_k_ptr,
    m_part_ptr, l_part_ptr, acc_part_ptr,
    scale, num_seqs, num_kv_heads, search_steps, window,
    query_stride_t, query_stride_h, out_stride_t, out_stride_h, block_table_stride,
    HEAD_SIZE: kl.constexpr, HEAD_PAD: kl.constexpr, BLOCK_SIZE: kl.constexpr, BLOCK_SHIFT: kl.constexpr,
    GROUP: kl.constexpr, CAUSAL: kl.constexpr, USE_WINDOW: kl.constexpr, NUM_SEGMENTS: kl.constexpr,
    ONE_TOKEN_SEQS: kl.constexpr, SCALE_QUERIES: kl.constexpr, BLOCK_M: kl.constexpr, TILE: kl.constexpr,
):
    """One work item: (query block, KV head, KV segment). BLOCK_SIZE == 1 << BLOCK_SHIFT."""
    BLOCK_Q: kl.constexpr = BLOCK_M // GROUP
    offs_m = kl.arange(0, BLOCK_M)
    offs_d = kl.arange(0, HEAD_PAD)
    offs_t = kl.arange(0, TILE)
    d_mask = offs_d < HEAD_SIZE
    row_token, row_head = _row_layout(offs_m, GROUP, ONE_TOKEN_SEQS)
    kv_row = num_kv_heads * HEAD_SIZE  # elements per cache slot
    if ONE_TOKEN_SEQS:
        # Program q_block holds sequence q_block, which is query token q_block: nothing to search for.
        seq = q_block
        q_start = q_block
        q_len = 1
        q_block_start = 0
    else:
        seq = _owning_sequence(q_block, cu_seqlens_q_ptr, num_seqs, search_steps, BLOCK_Q)
        q_start = kl.load(cu_seqlens_q_ptr + seq)
        q_len = kl.load(cu_seqlens_q_ptr + seq + 1) - q_start
        q_block_start = (q_block - _first_q_block(q_start, seq, BLOCK_Q)) * BLOCK_Q
        # A block number past its sequence's last block (slack numbers, padding tokens) has
        # no valid row and an empty key range below, so it stores nothing. (Masks rather than
        # an `if`, which the CPU backend would run under a per-program mask.)
        has_rows = q_block_start < q_len
    context_len = kl.load(seqused_k_ptr + seq)
    token = q_block_start + row_token
    if ONE_TOKEN_SEQS:
        row_valid = offs_m < GROUP
    else:
        row_valid = (row_token < BLOCK_Q) & (token < q_len)
    head = kv_head * GROUP + row_head
    q_mask = _with_feature_mask(row_valid, d_mask, HEAD_SIZE, HEAD_PAD)
    q = kl.load(query_ptr + (q_start + token)[:, None] * query_stride_t + head[:, None] * query_stride_h
                + offs_d[None, :], mask=q_mask, other=0.0)
    q_pos = context_len - q_len + token  # absolute position of each row's query token
    # Keys this query block can see: up to its last token's position when causal,
    # from its first token's window start when a sliding window is set.
    kv_end = context_len
    if CAUSAL:
        kv_end = kl.minimum(context_len, context_len - q_len + q_block_start + BLOCK_Q)
    kv_start = 0
    if USE_WINDOW:
        kv_start = kl.maximum(0, context_len - q_len + q_block_start - window + 1) // TILE * TILE
    if NUM_SEGMENTS == 1:  # the whole range (a dozen fewer ops per CPU launch)
        seg_start = kv_start
        seg_end = kv_end
    else:
        num_tiles = (kv_end - kv_start + (TILE - 1)) // TILE
        segment_keys = (num_tiles + (NUM_SEGMENTS - 1)) // NUM_SEGMENTS * TILE  # whole tiles
        seg_start = kv_start + segment * segment_keys
        seg_end = kl.minimum(kv_end, seg_start + segment_keys)
    if not ONE_TOKEN_SEQS:
        seg_end = kl.where(has_rows, seg_end, seg_start)

    # Causal or windowed, each row sees the key positions first_key .. last_key: past its
    # segment, past its own position when causal, and every key of a padding row (last_key
    # -1) are hidden. One comparison per tile lane then masks the scores. Otherwise every row
    # sees the segment's keys, and a comparison per key masks them (padding rows then see
    # keys too, but are never stored).
    seg_last = seg_end - 1  # the segment's last key
    last_key = seg_last
    first_key = seg_start
    if CAUSAL or USE_WINDOW:
        if CAUSAL:
            last_key = kl.minimum(q_pos, last_key)
        last_key = kl.where(row_valid, last_key, -1)
    if USE_WINDOW:
        first_key = q_pos - window + 1
    qk_scale = scale * LOG2E  # scores in log2 units: exp2 is the cheaper exponential
    if SCALE_QUERIES:  # once in the fp32 queries rather than once per score tile
        q = q * qk_scale

    block_table_row = block_table_ptr + seq * block_table_stride
    m_i = kl.full([BLOCK_M], float("-inf"), dtype=kl.float32)
    l_i = kl.zeros([BLOCK_M], dtype=kl.float32)
    acc = kl.zeros([BLOCK_M, HEAD_PAD], dtype=kl.float32)
    # Tiles whose keys every row sees are scanned without masks (FlashAttention's split):
    # causal prefill sees about half its tiles whole. The tiles before them (cut by the
    # window) and after them (the diagonal, the segment's last partial tile) are masked.
    # Without causality or a window only a segment's last tile may be cut, and one loop
    # costs the CPU backend less than two.
    masked_start = seg_start
    if CAUSAL or USE_WINDOW:
        whole_start, whole_end = _whole_tiles(seg_start, seg_end, context_len - q_len + q_block_start, window,
                                              BLOCK_Q, CAUSAL, USE_WINDOW, TILE)
        acc, l_i, m_i = _scan_tiles(acc, l_i, m_i, q, whole_start, whole_end, seg_last, seg_end, first_key,
                                    last_key, qk_scale, key_cache_ptr, value_cache_ptr, block_table_row, kv_row,
                                    kv_head, offs_t, offs_d, d_mask, HEAD_SIZE, HEAD_PAD, BLOCK_SIZE, BLOCK_SHIFT,
                                    CAUSAL, USE_WINDOW, SCALE_QUERIES, TILE, False)
        if USE_WINDOW:
            acc, l_i, m_i = _scan_tiles(acc, l_i, m_i, q, seg_start, whole_start, seg_last, seg_end, first_key,
                                        last_key, qk_scale, key_cache_ptr, value_cache_ptr, block_table_row, kv_row,
                                        kv_head, offs_t, offs_d, d_mask, HEAD_SIZE, HEAD_PAD, BLOCK_SIZE,
                                        BLOCK_SHIFT, CAUSAL, USE_WINDOW, SCALE_QUERIES, TILE, True)
        masked_start = whole_end
    acc, l_i, m_i = _scan_tiles(acc, l_i, m_i, q, masked_start, seg_end, seg_last, seg_end, first_key, last_key,
                                qk_scale, key_cache_ptr, value_cache_ptr, block_table_row, kv_row, kv_head, offs_t,
                                offs_d, d_mask, HEAD_SIZE, HEAD_PAD, BLOCK_SIZE, BLOCK_SHIFT, CAUSAL, USE_WINDOW,
                                SCALE_QUERIES, TILE, True)

    if NUM_SEGMENTS == 1:
        out = acc / kl.where(l_i == 0.0, 1.0, l_i)[:, None]
        kl.store(out_ptr + (q_start + token)[:, None] * out_stride_t + head[:, None] * out_stride_h
                 + offs_d[None, :], out, mask=q_mask)
    else:
        part = ((q_start + token) * (num_kv_heads * GROUP) + head) * NUM_SEGMENTS + segment
        kl.store(m_part_ptr + part, m_i, mask=row_valid)
        kl.store(l_part_ptr + part, l_i, mask=row_valid)
        kl.store(acc_part_ptr + part[:, None] * HEAD_PAD + offs_d[None, :], acc, mask=row_valid[:, None])


@kf.autotune(configs=_configs, key=["num_tokens", "num_seqs", "max_seqlen_q", "max_seqlen_k", "num_kv_heads",
                                    "GROUP", "HEAD_PAD", "BLOCK_SIZE", "NUM_SEGMENTS"],
             bucket={"num_tokens": "pow2", "num_seqs": "pow2", "max_seqlen_q": "pow2", "max_seqlen_k": "pow2"},
             default=_default, outputs=["out_ptr", "m_part_ptr", "l_part_ptr", "acc_part_ptr"])
@kf.jit
def _paged_attention_kernel(
    out_ptr, query_ptr, key_cache_ptr, value_cache_ptr, block_table_ptr, cu_seqlens_q_ptr, seqused_k_ptr,
    m_part_ptr, l_part_ptr, acc_part_ptr, q_block_order_ptr,
    scale, num_tokens, num_seqs, num_kv_heads, search_steps, window, max_seqlen_q, max_seqlen_k,
    query_stride_t, query_stride_h, out_stride_t, out_stride_h, block_table_stride,
    HEAD_SIZE: kl.constexpr, HEAD_PAD: kl.constexpr, BLOCK_SIZE: kl.constexpr, BLOCK_SHIFT: kl.constexpr,
    GROUP: kl.constexpr, CAUSAL: kl.constexpr, USE_WINDOW: kl.constexpr, NUM_SEGMENTS: kl.constexpr,
    ONE_TOKEN_SEQS: kl.constexpr, SCALE_QUERIES: kl.constexpr, ORDERED: kl.constexpr, PERSISTENT: kl.constexpr,
    BLOCK_M: kl.constexpr, TILE: kl.constexpr,
):
    """max_seqlen_q / max_seqlen_k only key the autotuner; the grid covers
    _num_q_blocks(...) * num_kv_heads * NUM_SEGMENTS work items: one program each, a grid of
    (segments, KV heads, sequences) when ONE_TOKEN_SEQS (the program ids are then the work
    item, so the CPU backend reads queries and writes outputs as strided views), else a
    1-D grid of items; segment fastest either way. ORDERED (1-D grid only): the query block
    of an item is entry `rank` of q_block_order, the launch's list of blocks."""
    if PERSISTENT:
        if ONE_TOKEN_SEQS:
            n_work = num_seqs * num_kv_heads * NUM_SEGMENTS
        else:
            n_work = _num_q_blocks(num_tokens, num_seqs, BLOCK_M // GROUP) * num_kv_heads * NUM_SEGMENTS
        for work in range(kl.program_id(0), n_work, kl.num_programs(0)):
            q_block, kv_head, segment = _work_item(work, num_kv_heads, NUM_SEGMENTS)
            _attend(q_block, kv_head, segment, out_ptr, query_ptr, key_cache_ptr, value_cache_ptr, block_table_ptr,
                    cu_seqlens_q_ptr, seqused_k_ptr, m_part_ptr, l_part_ptr, acc_part_ptr, scale, num_seqs,
                    num_kv_heads, search_steps, window, query_stride_t, query_stride_h, out_stride_t, out_stride_h,
                    block_table_stride, HEAD_SIZE, HEAD_PAD, BLOCK_SIZE, BLOCK_SHIFT, GROUP, CAUSAL, USE_WINDOW,
                    NUM_SEGMENTS, ONE_TOKEN_SEQS, SCALE_QUERIES, BLOCK_M, TILE)
    else:
        if ONE_TOKEN_SEQS:
            q_block, kv_head, segment = kl.program_id(2), kl.program_id(1), kl.program_id(0)
        else:
            q_block, kv_head, segment = _work_item(kl.program_id(0), num_kv_heads, NUM_SEGMENTS)
            if ORDERED:
                q_block = kl.load(q_block_order_ptr + q_block)
        _attend(q_block, kv_head, segment, out_ptr, query_ptr, key_cache_ptr, value_cache_ptr, block_table_ptr,
                cu_seqlens_q_ptr, seqused_k_ptr, m_part_ptr, l_part_ptr, acc_part_ptr, scale, num_seqs,
                num_kv_heads, search_steps, window, query_stride_t, query_stride_h, out_stride_t, out_stride_h,
                block_table_stride, HEAD_SIZE, HEAD_PAD, BLOCK_SIZE, BLOCK_SHIFT, GROUP, CAUSAL, USE_WINDOW,
                NUM_SEGMENTS, ONE_TOKEN_SEQS, SCALE_QUERIES, BLOCK_M, TILE)


_memo = LaunchMemo(_paged_attention_kernel)


@kf.jit
def _merge_row(token, head, out_ptr, m_part_ptr, l_part_ptr, acc_part_ptr, cu_seqlens_q_ptr, num_seqs, num_heads,
               out_stride_t, out_stride_h, HEAD_SIZE: kl.constexpr, HEAD_PAD: kl.constexpr,
               NUM_SEGMENTS: kl.constexpr, ONE_TOKEN_SEQS: kl.constexpr):
    """Merges row (t, h) unless its token is padding past the last sequence (it holds no
    partials); with ONE_TOKEN_SEQS every token is a sequence's, and the test is skipped."""
    if ONE_TOKEN_SEQS:
        _merge_partials(token, head, out_ptr, m_part_ptr, l_part_ptr, acc_part_ptr, num_heads, out_stride_t,
                        out_stride_h, HEAD_SIZE, HEAD_PAD, NUM_SEGMENTS)
    else:
        if token < kl.load(cu_seqlens_q_ptr + num_seqs):
            _merge_partials(token, head, out_ptr, m_part_ptr, l_part_ptr, acc_part_ptr, num_heads, out_stride_t,
                            out_stride_h, HEAD_SIZE, HEAD_PAD, NUM_SEGMENTS)


@kf.jit
def _merge_partials(token, head, out_ptr, m_part_ptr, l_part_ptr, acc_part_ptr, num_heads, out_stride_t,
                    out_stride_h, HEAD_SIZE: kl.constexpr, HEAD_PAD: kl.constexpr, NUM_SEGMENTS: kl.constexpr):
    """out[t, h] = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s over the segments s of row (t, h)."""
    segs = kl.arange(0, NUM_SEGMENTS)
    offs_d = kl.arange(0, HEAD_PAD)
    row = token * num_heads + head
    m = kl.load(m_part_ptr + row * NUM_SEGMENTS + segs)
    l = kl.load(l_part_ptr + row * NUM_SEGMENTS + segs)
    acc = kl.load(acc_part_ptr + (row * NUM_SEGMENTS + segs)[:, None] * HEAD_PAD + offs_d[None, :])
    m_max = kl.max(m, axis=0)
    weight = kl.exp2(m - kl.where(m_max == float("-inf"), 0.0, m_max))  # m in log2 units
    total = kl.sum(weight * l, axis=0)
    out = kl.sum(weight[:, None] * acc, axis=0) / kl.where(total == 0.0, 1.0, total)
    kl.store(out_ptr + token * out_stride_t + head * out_stride_h + offs_d, out, mask=offs_d < HEAD_SIZE)


@kf.jit
def _merge_segments_kernel(
    out_ptr, m_part_ptr, l_part_ptr, acc_part_ptr, cu_seqlens_q_ptr,
    num_rows, num_seqs, num_heads, out_stride_t, out_stride_h,
    HEAD_SIZE: kl.constexpr, HEAD_PAD: kl.constexpr, NUM_SEGMENTS: kl.constexpr, ONE_TOKEN_SEQS: kl.constexpr,
    PERSISTENT: kl.constexpr,
):
    """PERSISTENT: programs loop over the num_rows (token, head) rows. Else the grid is
    (heads, tokens), one row each, for the CPU backend: its addresses are then affine in the
    program ids, in memory order, which that backend turns into strided views instead of
    gathers and scatters (the 2-D grid would cap tokens at 65535 on a GPU)."""
    if PERSISTENT:
        for row in range(kl.program_id(0), num_rows, kl.num_programs(0)):
            _merge_row(row // num_heads, row % num_heads, out_ptr, m_part_ptr, l_part_ptr, acc_part_ptr,
                       cu_seqlens_q_ptr, num_seqs, num_heads, out_stride_t, out_stride_h,
                       HEAD_SIZE, HEAD_PAD, NUM_SEGMENTS, ONE_TOKEN_SEQS)
    else:
        _merge_row(kl.program_id(1), kl.program_id(0), out_ptr, m_part_ptr, l_part_ptr, acc_part_ptr,
                   cu_seqlens_q_ptr, num_seqs, num_heads, out_stride_t, out_stride_h, HEAD_SIZE, HEAD_PAD,
                   NUM_SEGMENTS, ONE_TOKEN_SEQS)


def num_kv_segments(num_seqs: int, num_kv_heads: int, max_seqlen_q: int, max_seqlen_k: int,
                    device: torch.device, head_pad: int = 128) -> int:
    """How many KV segments each (sequence, KV head) of a batch is split into (1: no split).

    Split only pure decode batches (max_seqlen_q == 1: a prefill block already has
    BLOCK_Q rows of work per tile). On an NPU or GPU, split while the (sequence, KV head)
    items number fewer than the machine wants in flight (its vector cores or SMs): segments
    double until there are enough items, a segment would be shorter than 256 keys, or
    MAX_SEGMENTS is reached. The CPU backend follows `_cpu_kv_segments`.
    """
    if max_seqlen_q != 1:
        return 1
    items = num_seqs * num_kv_heads
    if on_cpu_backend(device):
        return _cpu_kv_segments(items, max_seqlen_k, head_pad)
    segments = 1
    while (segments < MAX_SEGMENTS and items * segments < kf.num_cores("vector", device)
           and max_seqlen_k >= 2 * segments * 256):
        segments *= 2
    return segments


def _cpu_kv_segments(items: int, max_seqlen_k: int, head_pad: int) -> int:
    """Segments of about CPU_SEGMENT_KEYS keys, while the batch's keys fit CPU_TILE_ELEMENTS.

    The CPU backend runs all programs' tiles as one batch per step, up to the longest
    program's trip count. With segments that short every program scans one tile, so a
    ragged batch costs the keys it has (rounded up to a tile per sequence) rather than its
    longest context times its size: segments past a short context are empty programs,
    which the backend compacts away. Batches whose keys pass the budget keep fewer,
    longer segments that take several steps.
    """
    segments = 1
    while (segments < MAX_SEGMENTS and segments * CPU_SEGMENT_KEYS < max_seqlen_k
           and items * min(2 * segments * CPU_SEGMENT_KEYS, max_seqlen_k) * head_pad <= CPU_TILE_ELEMENTS):
        segments *= 2
    return segments


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
    """Attention of a mixed prefill + decode batch over the paged KV cache (see the module doc).

    Query token j of sequence s sits at position seqused_k[s] - q_len_s + j and, when
    causal, sees keys at positions <= its own (and > its own - sliding_window).
    """
    tensors = (out, query, key_cache, value_cache, block_table, cu_seqlens_q, seqused_k)
    # Only a decode batch's launch can be memoised: a prefill launch lists its blocks.
    memo = memo_key((max_seqlen_q, max_seqlen_k, softmax_scale, causal, sliding_window), *tensors) \
        if max_seqlen_q == 1 else None
    found = _memo.find(memo, query)
    if found is None:
        validation.check_paged_attention("paged_attention", *tensors, max_seqlen_q, max_seqlen_k, softmax_scale,
                                         causal, sliding_window)
    else:
        validation.check_paged_contents("paged_attention", query.shape[0], key_cache, block_table, cu_seqlens_q,
                                        seqused_k, max_seqlen_q, max_seqlen_k)
    num_tokens, num_seqs = query.shape[0], seqused_k.shape[0]
    if num_tokens == 0 or num_seqs == 0 or max_seqlen_q == 0:
        return
    args = (key_cache, value_cache, float(softmax_scale), bool(causal), sliding_window)
    decodes = _leading_decodes(cu_seqlens_q, max_seqlen_q, query.device)
    if decodes == 0:
        _launch(out, query, block_table, cu_seqlens_q, seqused_k, max_seqlen_q, max_seqlen_k, *args, memo, found)
        return
    tokens = int(cu_seqlens_q[decodes])
    if decodes < num_seqs:
        _launch(out[tokens:], query[tokens:], block_table[decodes:], cu_seqlens_q[decodes:] - tokens,
                seqused_k[decodes:], max_seqlen_q, int(seqused_k[decodes:].max()), *args)
    if tokens:
        _launch(out[:tokens], query[:tokens], block_table[:decodes], cu_seqlens_q[:decodes + 1],
                seqused_k[:decodes], 1, int(seqused_k[:decodes].max()), *args)


def _leading_decodes(cu_seqlens_q: Tensor, max_seqlen_q: int, device: torch.device) -> int:
    """On the CPU backend, how many sequences open a batch with prefill in it by decoding
    (at most one query token each; the scheduler puts decodes first), 0 elsewhere.

    A launch sizes every program for the batch's longest query, so decodes sharing one with
    a prefill chunk would each pad a 16-token query block and scan their whole context in
    wide tiles. Launched on their own they get one-token blocks and KV segments. Reading
    the lengths costs nothing on the CPU, unlike a device sync.
    """
    if max_seqlen_q <= 1 or not on_cpu_backend(device):
        return 0
    longer = ((cu_seqlens_q[1:] - cu_seqlens_q[:-1]) > 1).nonzero()
    return int(longer[0]) if longer.numel() else cu_seqlens_q.shape[0] - 1


def _one_token_each(cu_seqlens_q: Tensor, max_seqlen_q: int, num_tokens: int) -> bool:
    """Whether every sequence of a batch in host memory has exactly one query token, which is
    then query token s of sequence s (no empty slot, no padding token): programs skip the
    search for their sequence. Reading cu_seqlens_q's last entry costs nothing there; on a
    device it would be a sync, so there the kernel searches."""
    if max_seqlen_q != 1 or cu_seqlens_q.device.type != "cpu":
        return False
    num_seqs = cu_seqlens_q.shape[0] - 1
    return num_tokens == num_seqs and int(cu_seqlens_q[-1]) == num_seqs


def _orders_blocks(max_seqlen_q: int, device: torch.device) -> bool:
    """Whether a launch lists its query blocks (ORDERED): a batch with prefill in it on the
    CPU backend, where reading its lengths costs nothing (see `_cpu_block_order`)."""
    return max_seqlen_q > 1 and on_cpu_backend(device) and not persistent(device)


def _cpu_block_order(cu_seqlens_q: Tensor, seqused_k: Tensor, block_q: int, causal: bool,
                     sliding_window: int | None) -> Tensor:
    """The query block numbers (`_first_q_block`) of a batch in host memory that hold rows,
    those that see the most keys first (int32).

    The CPU backend runs a divergent loop's programs in lock step and narrows the set as
    programs finish; with the longest scans first, the programs still running are always
    the first ones, so narrowing slices instead of copying each one's queries and
    accumulators (`tails.Tail`), and the slack numbers past each sequence's last block
    are not launched at all.
    """
    starts = cu_seqlens_q[:-1].long()
    q_lens = cu_seqlens_q[1:].long() - starts
    blocks = (q_lens + block_q - 1) // block_q
    seq = torch.repeat_interleave(torch.arange(q_lens.numel()), blocks)
    first = starts if block_q == 1 else starts // block_q + torch.arange(q_lens.numel())
    index = torch.arange(seq.numel()) - torch.repeat_interleave(blocks.cumsum(0) - blocks, blocks)
    block_start = seqused_k.long()[seq] - q_lens[seq] + index * block_q  # first token's position
    kv_end = seqused_k.long()[seq]
    if causal:
        kv_end = torch.minimum(kv_end, block_start + block_q)
    kv_start = 0 if sliding_window is None else (block_start - sliding_window + 1).clamp(min=0)
    keys = kv_end - kv_start
    return (first[seq] + index)[keys.argsort(descending=True, stable=True)].to(torch.int32)


def _cpu_launch_parts(num_blocks: int, num_kv_heads: int, block_m: int, head_pad: int) -> int:
    """How many launches share a CPU batch with prefill in it, each taking a run of its
    listed blocks (`_cpu_block_order`), so that no launch holds more than
    CPU_LAUNCH_ACC_ELEMENTS accumulator elements.

    Every program of a CPU launch runs in lock step, so the accumulators, queries, score
    tiles and K/V tiles of all its programs are live at once, and every tile step makes
    passes over temporaries their size. Past glibc's largest mmap threshold (32 MB) each of
    those is a fresh mapping that page-faults in: a Llama-2-7B prefill of 1800 tokens (42 MB
    of accumulators) spent 3x as long per accumulator update as in 8 MB parts. Smaller parts
    keep the step's working set in cache, down to where each launch's fixed cost shows
    (1 thread, 12 prompts of 8-300 tokens: Llama-2-7B 236 ms in 8 MB parts, 216 in 4 MB,
    192-203 in 2-3 MB; SmolLM2-135M slower in 2 MB, three launches, than in two).
    Parts follow the list, longest scans first, so each one's programs also finish together.
    """
    return max(1, -(-num_blocks * num_kv_heads * block_m * head_pad // CPU_LAUNCH_ACC_ELEMENTS))


class _CpuBlockList:
    """The listed blocks (`_cpu_block_order`) of one batch in host memory, split into
    `parts` runs of the list, one per launch (`_cpu_launch_parts`, for the rows the launch
    will most likely use). A list is made once per block size."""

    def __init__(self, cu_seqlens_q: Tensor, seqused_k: Tensor, causal: bool, sliding_window: int | None,
                 group: int, block_m: int, num_kv_heads: int, head_pad: int) -> None:
        self._batch = (cu_seqlens_q, seqused_k)
        self._mask = (causal, sliding_window)
        self._lists: dict[int, Tensor] = {}
        self.parts = _cpu_launch_parts(self.listed(block_m // group).numel(), num_kv_heads, block_m, head_pad)

    def listed(self, block_q: int) -> Tensor:
        """Every listed block of `block_q` tokens."""
        if block_q not in self._lists:
            self._lists[block_q] = _cpu_block_order(*self._batch, block_q, *self._mask)
        return self._lists[block_q]

    def fill(self, part: int, block_q: int, order: Tensor) -> int:
        """Writes run `part` of the list of blocks of `block_q` tokens (the launched config's
        rows, which a config tuned under an older rows rule may set) to the front of `order`
        (room for one block per token) and returns its length."""
        listed = self.listed(block_q)
        size = -(-listed.numel() // self.parts)
        run = listed[part * size:(part + 1) * size]
        order[:run.numel()] = run
        return run.numel()


def _launch(out: Tensor, query: Tensor, block_table: Tensor, cu_seqlens_q: Tensor, seqused_k: Tensor,
            max_seqlen_q: int, max_seqlen_k: int, key_cache: Tensor, value_cache: Tensor, softmax_scale: float,
            causal: bool, sliding_window: int | None, memo: tuple | None = None,
            found: BoundLaunch | None = None) -> None:
    """The attention kernel (and the merge of its KV segments) over one batch of sequences.
    `memo` and `found`: the call's `LaunchMemo` key and what it found (see `paged_attention`);
    only a launch of one token per sequence, whose grid is a tuple, is memoised."""
    num_tokens, num_heads, head_size = query.shape
    num_kv_heads = key_cache.shape[2]
    num_seqs = seqused_k.shape[0]
    head_pad = next_power_of_2(head_size)
    segments = num_kv_segments(num_seqs, num_kv_heads, max_seqlen_q, max_seqlen_k, query.device, head_pad)
    rows = num_tokens * num_heads
    if segments > 1:
        m_part = torch.empty(rows * segments, dtype=torch.float32, device=query.device)
        l_part = torch.empty_like(m_part)
        acc_part = torch.empty(rows * segments * head_pad, dtype=torch.float32, device=query.device)
    else:
        m_part = l_part = acc_part = flat_view(out)

    group = num_heads // num_kv_heads
    one_token_seqs = _one_token_each(cu_seqlens_q, max_seqlen_q, num_tokens)
    # A lone query token sits at its context's last position, so causality hides nothing from
    # it: decode launches skip the causal clamps.
    causal = causal and max_seqlen_q > 1
    block_list = None
    if _orders_blocks(max_seqlen_q, query.device):
        block_list = _CpuBlockList(cu_seqlens_q, seqused_k, causal, sliding_window, group,
                                   _block_m(group, max_seqlen_q, query.device), num_kv_heads, head_pad)

    def grid(meta: dict, part: int = 0, order: Tensor | None = None) -> tuple[int, ...]:
        block_q = meta["BLOCK_M"] // group
        if order is None:
            return (grid_size(num_q_blocks(num_tokens, num_seqs, block_q) * num_kv_heads * segments, query.device),)
        return (block_list.fill(part, block_q, order) * num_kv_heads * segments,)

    def arguments(order: Tensor | None) -> tuple:
        return (flat_view(out), flat_view(query), key_cache, value_cache, block_table, cu_seqlens_q, seqused_k,
                m_part, l_part, acc_part, cu_seqlens_q if order is None else order,
                softmax_scale, num_tokens, num_seqs, num_kv_heads, num_seqs.bit_length(),
                sliding_window or 0, max_seqlen_q, max_seqlen_k,
                query.stride(0), query.stride(1), out.stride(0), out.stride(1), block_table.stride(0))

    constexprs = dict(HEAD_SIZE=head_size, HEAD_PAD=head_pad, BLOCK_SIZE=key_cache.shape[1],
                      BLOCK_SHIFT=key_cache.shape[1].bit_length() - 1, GROUP=group,
                      CAUSAL=causal, USE_WINDOW=sliding_window is not None, NUM_SEGMENTS=segments,
                      ONE_TOKEN_SEQS=one_token_seqs, SCALE_QUERIES=query.dtype == torch.float32,
                      PERSISTENT=persistent(query.device))
    if one_token_seqs and not persistent(query.device):
        # The memo key fixes all of this launch but `one_token_seqs`, which the contents decide.
        _memo.launch(memo, query.device, found, (segments, num_kv_heads, num_seqs), arguments(None),
                     {**constexprs, "ORDERED": False})
    else:
        for part in range(1 if block_list is None else block_list.parts):
            order = None if block_list is None else torch.empty(num_tokens, dtype=torch.int32)
            _paged_attention_kernel[functools.partial(grid, part=part, order=order)](
                *arguments(order), **constexprs, ORDERED=order is not None)
    if segments > 1:
        per_row = on_cpu_backend(query.device)
        merge_grid = (num_heads, num_tokens) if per_row else (grid_size(rows, query.device),)
        _merge_segments_kernel[merge_grid](
            flat_view(out), m_part, l_part, acc_part, cu_seqlens_q, rows, num_seqs, num_heads,
            out.stride(0), out.stride(1),
            HEAD_SIZE=head_size, HEAD_PAD=head_pad, NUM_SEGMENTS=segments, ONE_TOKEN_SEQS=one_token_seqs,
            PERSISTENT=not per_row,
        )


__all__ = ["paged_attention", "num_kv_segments"]
