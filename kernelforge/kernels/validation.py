"""Argument checks for the public LLM ops, run before any kernel launches.

A kernel that is handed a wrong shape reads or writes out of bounds silently, so every
public op checks its arguments here and raises an error that names the argument.
Each op's `check_<op>` runs every check. Shape, dtype and device checks read metadata
only, so an op whose call metadata was seen before (`launch.LaunchMemo`) runs only the
checks that read tensor *contents* (`check_positions`, `check_slots`,
`check_paged_contents`: block table entries, slot numbers, sequence lengths, positions).
Those would force a host sync on an accelerator, so they read only CPU tensors, or any
tensor when `KF_SANITIZE=1`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from kernelforge.backends import environ_get

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def _fail(op: str, message: str, exc: type[Exception] = ValueError) -> None:
    raise exc(f"{op}: {message}")


def check_tensor(
    op: str,
    name: str,
    t: object,
    ndim: int | Iterable[int] | None = None,
    dtypes: tuple[torch.dtype, ...] | None = None,
    device: torch.device | None = None,
    last_dim_contiguous: bool = False,
) -> None:
    """Check one tensor argument's type, rank, dtype, device and innermost stride."""
    if not isinstance(t, Tensor):
        _fail(op, f"{name} must be a torch.Tensor, got {type(t).__name__}", TypeError)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            _fail(op, f"{name} must have {' or '.join(map(str, allowed))} dims, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        _fail(op, f"{name} has dtype {t.dtype}; expected one of {names}", TypeError)
    if device is not None and t.device != device:
        _fail(op, f"{name} is on {t.device} but the other arguments are on {device}")
    if last_dim_contiguous and t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
        _fail(op, f"{name} must be contiguous in its last dim (stride {t.stride(-1)})")


def check_same(op: str, names: tuple[str, str], a: Tensor, b: Tensor, what: str = "shape") -> None:
    """Two tensors must agree in shape (what="shape") or dtype (what="dtype")."""
    va, vb = (a.shape, b.shape) if what == "shape" else (a.dtype, b.dtype)
    if va != vb:
        shown = (tuple(va), tuple(vb)) if what == "shape" else (va, vb)
        _fail(op, f"{names[0]} and {names[1]} must have the same {what}, got {shown[0]} and {shown[1]}",
              ValueError if what == "shape" else TypeError)


def reads_contents(*tensors: Tensor) -> bool:
    """Whether content checks are cheap (CPU) or explicitly asked for (KF_SANITIZE=1).

    The device test comes first: it is the cheaper one, and it decides every CPU call.
    """
    return all(t.is_cpu for t in tensors) or environ_get("KF_SANITIZE") == "1"


def check_rms_norm(op: str, out: Tensor, x: Tensor, weight: Tensor, eps: float, out_name: str = "out") -> None:
    """`out_name` is what the caller calls `out` (fused_add_rms_norm's residual)."""
    check_tensor(op, "x", x, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    check_tensor(op, out_name, out, dtypes=FLOAT_DTYPES, device=x.device, last_dim_contiguous=True)
    check_tensor(op, "weight", weight, ndim=1, dtypes=FLOAT_DTYPES, device=x.device, last_dim_contiguous=True)
    if x.dim() == 0:
        _fail(op, "x must have at least one dim")
    check_same(op, (out_name, "x"), out, x)
    if weight.shape[0] != x.shape[-1]:
        _fail(op, f"weight has {weight.shape[0]} elements but the hidden size (x.shape[-1]) is {x.shape[-1]}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        _fail(op, f"eps must be a non-negative float, got {eps!r}")


def check_rotary_embedding(
    op: str,
    positions: Tensor,
    query: Tensor,
    key: Tensor | None,
    head_size: int,
    cos_sin_cache: Tensor,
    is_neox: bool,
) -> None:
    check_tensor(op, "query", query, ndim=(2, 3), dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    dev = query.device
    check_tensor(op, "positions", positions, dtypes=INDEX_DTYPES, device=dev)
    check_tensor(op, "cos_sin_cache", cos_sin_cache, ndim=2, dtypes=FLOAT_DTYPES, device=dev, last_dim_contiguous=True)
    if not isinstance(head_size, int) or head_size <= 0:
        _fail(op, f"head_size must be a positive int, got {head_size!r}")
    num_tokens = query.shape[0]
    if positions.numel() != num_tokens:
        _fail(op, f"positions has {positions.numel()} elements but query has {num_tokens} tokens")
    for name, t in (("query", query), ("key", key)):
        if t is None:
            continue
        if name == "key":
            check_tensor(op, "key", key, ndim=(2, 3), dtypes=FLOAT_DTYPES, device=dev, last_dim_contiguous=True)
            if key.shape[0] != num_tokens:
                _fail(op, f"key has {key.shape[0]} tokens but query has {num_tokens}")
        if t.dim() == 3 and t.shape[2] != head_size:
            _fail(op, f"{name} has head size {t.shape[2]} but head_size is {head_size}")
        if t.dim() == 2 and t.shape[1] % head_size != 0:
            _fail(op, f"{name}'s last dim {t.shape[1]} is not a multiple of head_size {head_size}")
        if t.dim() == 3 and t.shape[1] > 1 and t.stride(1) != head_size:
            _fail(op, f"{name}'s heads must be contiguous (head stride {t.stride(1)}, head_size {head_size})")
    rot_dim = cos_sin_cache.shape[1]
    if rot_dim % 2 or rot_dim == 0 or rot_dim > head_size:
        _fail(op, f"cos_sin_cache's last dim (rot_dim) must be even and in 2..head_size={head_size}, got {rot_dim}")
    check_positions(op, positions, cos_sin_cache)


def check_positions(op: str, positions: Tensor, cos_sin_cache: Tensor) -> None:
    """Contents: every position has a row in cos_sin_cache (run on every call)."""
    if reads_contents(positions) and positions.numel():
        lo, hi = (int(v) for v in torch.aminmax(positions))  # one pass
        if lo < 0 or hi >= cos_sin_cache.shape[0]:
            _fail(op, f"positions must lie in [0, {cos_sin_cache.shape[0]}) (cos_sin_cache rows), got {lo}..{hi}")


def check_kv_cache(op: str, key_cache: Tensor, value_cache: Tensor, dev: torch.device) -> None:
    check_tensor(op, "key_cache", key_cache, ndim=4, dtypes=FLOAT_DTYPES, device=dev)
    check_tensor(op, "value_cache", value_cache, ndim=4, dtypes=FLOAT_DTYPES, device=dev)
    check_same(op, ("key_cache", "value_cache"), key_cache, value_cache)
    check_same(op, ("key_cache", "value_cache"), key_cache, value_cache, "dtype")
    for name, c in (("key_cache", key_cache), ("value_cache", value_cache)):
        if not c.is_contiguous():
            _fail(op, f"{name} must be contiguous [num_blocks, block_size, num_kv_heads, head_size]")


def check_reshape_and_cache(
    op: str, key: Tensor, value: Tensor, key_cache: Tensor, value_cache: Tensor, slot_mapping: Tensor
) -> None:
    check_tensor(op, "key", key, ndim=3, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    dev = key.device
    check_tensor(op, "value", value, ndim=3, dtypes=FLOAT_DTYPES, device=dev, last_dim_contiguous=True)
    check_same(op, ("key", "value"), key, value)
    check_kv_cache(op, key_cache, value_cache, dev)
    check_tensor(op, "slot_mapping", slot_mapping, ndim=1, dtypes=INDEX_DTYPES, device=dev)
    if key.dtype != key_cache.dtype:
        _fail(op, f"key has dtype {key.dtype} but key_cache has {key_cache.dtype}", TypeError)
    if value.dtype != key_cache.dtype:
        _fail(op, f"value has dtype {value.dtype} but value_cache has {key_cache.dtype}", TypeError)
    if tuple(key.shape[1:]) != tuple(key_cache.shape[2:]):
        _fail(op, f"key heads {tuple(key.shape[1:])} do not match the cache's "
                  f"[num_kv_heads, head_size] {tuple(key_cache.shape[2:])}")
    for name, t in (("key", key), ("value", value)):
        if t.shape[1] > 1 and t.stride(1) != t.shape[2]:
            _fail(op, f"{name}'s heads must be contiguous (head stride {t.stride(1)}, head size {t.shape[2]})")
    if slot_mapping.shape[0] != key.shape[0]:
        _fail(op, f"slot_mapping has {slot_mapping.shape[0]} entries but key has {key.shape[0]} tokens")
    check_slots(op, slot_mapping, key_cache)


def check_slots(op: str, slot_mapping: Tensor, key_cache: Tensor) -> None:
    """Contents: every slot lies in the cache (run on every call)."""
    num_slots = key_cache.shape[0] * key_cache.shape[1]
    if reads_contents(slot_mapping) and slot_mapping.numel():
        last_slot = int(slot_mapping.max())  # negative slots mark padding tokens: skipped
        if last_slot >= num_slots:
            _fail(op, f"slot_mapping holds slot {last_slot} but the cache has {num_slots} slots")


def check_paged_attention(
    op: str,
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
    causal: bool,
    sliding_window: int | None,
) -> None:
    check_tensor(op, "query", query, ndim=3, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    dev = query.device
    check_tensor(op, "out", out, ndim=3, dtypes=FLOAT_DTYPES, device=dev, last_dim_contiguous=True)
    check_same(op, ("out", "query"), out, query)
    check_same(op, ("out", "query"), out, query, "dtype")
    check_kv_cache(op, key_cache, value_cache, dev)
    if key_cache.dtype != query.dtype:
        _fail(op, f"query has dtype {query.dtype} but key_cache has {key_cache.dtype}", TypeError)
    check_tensor(op, "block_table", block_table, ndim=2, dtypes=(torch.int32,), device=dev)
    check_tensor(op, "cu_seqlens_q", cu_seqlens_q, ndim=1, dtypes=(torch.int32,), device=dev)
    check_tensor(op, "seqused_k", seqused_k, ndim=1, dtypes=(torch.int32,), device=dev)
    num_tokens, num_heads, head_size = query.shape
    num_blocks, block_size, num_kv_heads, cache_head_size = key_cache.shape
    if cache_head_size != head_size:
        _fail(op, f"query head size {head_size} differs from the cache's {cache_head_size}")
    if num_heads % num_kv_heads:
        _fail(op, f"num_heads {num_heads} is not a multiple of the cache's num_kv_heads {num_kv_heads}")
    if block_size & (block_size - 1):
        _fail(op, f"block size (key_cache.shape[1]) must be a power of two, got {block_size}")
    num_seqs = seqused_k.shape[0]
    if cu_seqlens_q.shape[0] != num_seqs + 1:
        _fail(op, f"cu_seqlens_q has {cu_seqlens_q.shape[0]} entries; expected num_seqs + 1 = {num_seqs + 1}")
    if block_table.shape[0] != num_seqs:
        _fail(op, f"block_table has {block_table.shape[0]} rows but seqused_k has {num_seqs} sequences")
    if block_table.stride(1) != 1:
        _fail(op, "block_table must be contiguous in its last dim")
    if not softmax_scale > 0:
        _fail(op, f"softmax_scale must be positive, got {softmax_scale!r}")
    if sliding_window is not None and (not isinstance(sliding_window, int) or sliding_window <= 0):
        _fail(op, f"sliding_window must be a positive int or None, got {sliding_window!r}")
    check_paged_contents(op, num_tokens, key_cache, block_table, cu_seqlens_q, seqused_k, max_seqlen_q,
                         max_seqlen_k)


def check_paged_contents(op: str, num_tokens: int, key_cache: Tensor, block_table: Tensor, cu_seqlens_q: Tensor,
                         seqused_k: Tensor, max_seqlen_q: int, max_seqlen_k: int) -> None:
    """Contents: the sequence lengths and the block-table entries a batch's contexts use
    (run on every call)."""
    if reads_contents(block_table, cu_seqlens_q, seqused_k):
        _check_paged_contents(op, num_tokens, key_cache.shape[1], key_cache.shape[0], block_table, cu_seqlens_q,
                              seqused_k, max_seqlen_q, max_seqlen_k)


def _check_paged_contents(op: str, num_tokens: int, block_size: int, num_blocks: int, block_table: Tensor,
                          cu_seqlens_q: Tensor, seqused_k: Tensor, max_seqlen_q: int, max_seqlen_k: int) -> None:
    """`check_paged_contents` on CPU (or host-copied) tensors.

    This runs on every call of a decode step, so it reads the tensors as numpy arrays (a
    CPU tensor's numpy view costs no copy; numpy's small-array ops cost a fraction of
    torch's dispatch) and bounds the block table's used entries with one `max` over them
    read as unsigned (a negative entry reads as >= 2**31, past any int32 block number).
    """
    num_seqs = seqused_k.shape[0]
    starts = _host(cu_seqlens_q).astype(np.int64)  # int64: differences of int32 entries can wrap
    q_lens = starts[1:] - starts[:-1]
    if starts[0] != 0 or starts[-1] > num_tokens or (num_seqs and q_lens.min() < 0):
        _fail(op, f"cu_seqlens_q must start at 0, never decrease and end at <= {num_tokens} (query tokens)")
    if num_seqs == 0:
        return
    context_lens = _host(seqused_k)
    if (context_lens < q_lens).any():
        _fail(op, "seqused_k[s] (cached + new tokens) must be >= the query length of sequence s")
    longest_query = int(q_lens.max())
    if longest_query > max_seqlen_q:
        _fail(op, f"max_seqlen_q={max_seqlen_q} is smaller than the longest query ({longest_query})")
    longest = int(context_lens.max())
    if longest > max_seqlen_k:
        _fail(op, f"max_seqlen_k={max_seqlen_k} is smaller than the longest context ({longest})")
    if longest > block_table.shape[1] * block_size:
        _fail(op, f"a context of {longest} tokens needs more than block_table's "
                  f"{block_table.shape[1]} blocks of {block_size}")
    columns = -(-longest // block_size)  # blocks of the longest context: no later column is used
    if not columns:
        return
    used = np.arange(0, columns * block_size, block_size) < context_lens[:, None]
    entries = _host(block_table)[:, :columns][used]
    if _unsigned_max(entries) >= min(num_blocks, 2**31):
        _fail(op, f"block_table holds block {int(entries.min())}..{int(entries.max())} "
                  f"but the cache has blocks 0..{num_blocks - 1}")


def _host(t: Tensor) -> np.ndarray:
    """A CPU tensor's numpy view; an accelerator's tensor is copied to the host (KF_SANITIZE=1)."""
    return t.cpu().numpy()


def _unsigned_max(a: np.ndarray) -> int:
    """The largest entry of an integer array read as unsigned: a negative entry counts as
    at least 2**(bits - 1), past any valid index, so one pass bounds both ends."""
    return int(a.view(np.dtype(f"u{a.itemsize}")).max())
