"""Helpers the generated CPU modules call at run time.

Generated code stays short and readable by delegating the fiddly parts here: the
program set (grid, program ids, compaction), C-semantics integer division, masked
gathers and scatters, strided fast-path views, atomics and trip counts. Every
helper works on whole-grid tensors: a leading axis indexes the program instances
that are currently executing (all of them, or a compacted subset).
"""

from __future__ import annotations

import math
import threading
from typing import Any, Hashable, Sequence

import torch

from kernelforge.memo import BoundedMemo

Number = int | float | bool
Value = Any  # torch.Tensor or Python number


# Grid -> the derived tensors of its whole program set (`Programs.cached`), shared by
# every launch over that grid: a decode step relaunches one grid per kernel.
_GRID_LIMIT = 256
_grid_tensors: BoundedMemo = BoundedMemo(_GRID_LIMIT)


class Programs:
    """The program instances being executed: the launch grid and, inside a compacted
    divergent loop, the subset `idx` (flat program indices) still running.

    The program ids of a whole grid depend on nothing else, so they are made once per
    grid and shared by later launches (as every tensor in `cached`): nothing may write
    them, which holds because generated code only overwrites fresh temporaries."""

    def __init__(self, grid: Sequence[int], idx: torch.Tensor | None = None) -> None:
        self.grid = (int(grid[0]), int(grid[1]), int(grid[2]))
        self.total = self.grid[0] * self.grid[1] * self.grid[2]
        self.idx = idx
        self.G = self.total if idx is None else int(idx.numel())
        self.cached: dict = {} if idx is not None else _whole_grid_tensors(self.grid)

    def pid(self, axis: int) -> torch.Tensor:
        """`program_id(axis)` of every executing program, as int32 `[G]`."""
        p = self.cached.get(axis)
        if p is None:
            flat = torch.arange(self.total, dtype=torch.int32) if self.idx is None else self.idx.to(torch.int32)
            g0, g1, _ = self.grid
            if axis == 0:
                p = flat % g0 if (g1 * self.grid[2]) > 1 else flat
            elif axis == 1:
                p = (flat // g0) % g1
            else:
                p = flat // (g0 * g1)
            p = self.remember(axis, p)
        return p

    def pid_index(self, axis: int) -> torch.Tensor:
        """`pid(axis)` as int64, for `index_select`."""
        p = self.cached.get(axis + 3)
        return p if p is not None else self.remember(axis + 3, self.pid(axis).long())

    def remember(self, key: Hashable, derived: torch.Tensor) -> torch.Tensor:
        """Keeps `derived`, a tensor that depends only on this program set, in `cached`, and
        returns it (another thread may evict it at any time: read it back from here)."""
        self.cached[key] = derived
        return derived

    def subset(self, keep: torch.Tensor) -> "Programs":
        """The programs selected by `keep` (bool or index tensor over the current set)."""
        rows = keep.nonzero().squeeze(1) if keep.dtype == torch.bool else keep
        idx = rows if self.idx is None else self.idx[rows]
        return Programs(self.grid, idx)


def _whole_grid_tensors(grid: tuple[int, int, int]) -> BoundedMemo:
    tensors = _grid_tensors.get(grid)
    if tensors is None:
        tensors = _grid_tensors[grid] = BoundedMemo(_GRID_LIMIT)
    return tensors


_scratch = threading.local()


def scratch(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A buffer for a once-per-launch temporary, reused by the next launch on this thread
    (`fusion.find_scratch` proves the previous value dead by then)."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    buf = buffers.get(key)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = buffers[key] = torch.empty(shape, dtype=dtype)
    return buf


def flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of the memory a pointer argument addresses, starting at its first element.

    Triton pointers address raw memory, so for non-contiguous tensors the view spans
    the rest of the storage rather than just `numel` elements.
    """
    if t.is_contiguous():
        return t.view(-1)
    extent = t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()
    return t.as_strided((extent,), (1,), t.storage_offset())


def idiv(a: Value, b: Value) -> Value:
    """Integer division truncating toward zero (C and Triton), for tensors or ints."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.div(torch.as_tensor(a), b, rounding_mode="trunc")
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def imod(a: Value, b: Value) -> Value:
    """Remainder with the sign of the dividend (C and Triton `%`), ints or floats."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.fmod(torch.as_tensor(a), b)
    return math.fmod(a, b) if isinstance(a, float) or isinstance(b, float) else a - idiv(a, b) * b


def minimum(a: Value, b: Value) -> Value:
    if not isinstance(a, torch.Tensor):
        return min(a, b) if not isinstance(b, torch.Tensor) else torch.clamp(b, max=a)
    return torch.clamp(a, max=b) if not isinstance(b, torch.Tensor) else torch.minimum(a, b)


def maximum(a: Value, b: Value) -> Value:
    if not isinstance(a, torch.Tensor):
        return max(a, b) if not isinstance(b, torch.Tensor) else torch.clamp(b, min=a)
    return torch.clamp(a, min=b) if not isinstance(b, torch.Tensor) else torch.maximum(a, b)


def truediv(a: Number, b: Number) -> float:
    """Python-number float division with IEEE results for a zero divisor."""
    if b == 0:
        return math.copysign(math.inf, a) * math.copysign(1.0, b) if a != 0 else math.nan
    return a / b


def expand_grid(x: Value, G: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Gives a uniform value the leading grid axis (a view when `x` is a tensor)."""
    if isinstance(x, torch.Tensor):
        return x.expand(G, *shape)
    return torch.full((G, *shape), x, dtype=dtype)


def trip_counts(start: Value, stop: Value, step: Value) -> torch.Tensor:
    """Per-program iteration counts of `range(start, stop, step)` (int64, >= 0).

    A constant step (the usual tile width) needs one floor division, not both directions.
    """
    if isinstance(step, int) and step != 0:
        start, stop = (torch.as_tensor(v, dtype=torch.int64) for v in (start, stop))
        span = stop - start if step > 0 else start - stop
        return torch.div(span + (abs(step) - 1), abs(step), rounding_mode="floor").clamp_(min=0)
    start, stop, step = (torch.as_tensor(v, dtype=torch.int64) for v in (start, stop, step))
    up = torch.div(stop - start + step - 1, step, rounding_mode="floor")
    down = torch.div(start - stop - step - 1, -step, rounding_mode="floor")
    return torch.where(step > 0, up, down).clamp_(min=0)


def _lanes(offs: Value, mask: Value | None, active: torch.Tensor | None):
    """Broadcasts offsets and the effective mask (mask & active programs) to one shape.

    `active` arrives already shaped `[G, 1, ...]` by the generated code, so it
    broadcasts against whole-grid and uniform offsets alike.
    """
    offs = torch.as_tensor(offs)
    if active is not None:
        mask = active if mask is None else (torch.as_tensor(mask) & active)
    if mask is None:
        return offs, None
    return torch.broadcast_tensors(offs, torch.as_tensor(mask))


def _take(flat_t: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """`flat_t[offs]`; `index_select` is several times faster than advanced indexing on CPU."""
    return flat_t.index_select(0, offs.reshape(-1)).view(offs.shape)


def take(flat_t: torch.Tensor, offs: Value, copy: bool = False) -> torch.Tensor:
    """Unmasked load `flat_t[offs]` that faults (IndexError) on any offset outside `flat_t`.

    Advanced indexing would wrap a negative offset around to the end, and it costs
    several times `index_select`, which checks both ends. A Python-int offset (uniform
    across programs) gives a 0-d view (with `copy`, a private copy).
    """
    if isinstance(offs, torch.Tensor):
        return _take(flat_t, offs)
    if not 0 <= offs < flat_t.numel():
        raise IndexError(f"offset {offs} is outside a tensor of {flat_t.numel()} elements")
    return flat_t[offs].clone() if copy else flat_t[offs]


def unbroadcast(t: torch.Tensor) -> torch.Tensor:
    """`t` without the data of its broadcast (stride-0) dims: those shrink to size 1."""
    sizes = [1 if st == 0 else n for n, st in zip(t.shape, t.stride())]
    return t.as_strided(sizes, t.stride(), t.storage_offset())


def all_true(mask: torch.Tensor) -> bool:
    """`bool(mask.all())` for a bool tensor. Past `_SMALL_MASK` lanes it is the minimum of
    its bytes: torch's `all` reduces bools lane by lane, ~30x slower than a vectorised
    uint8 `min` on a million lanes; on a few hundred lanes or fewer `all` is ~0.5 us
    faster (no dtype view), and a decode step's per-program masks are that small."""
    n = mask.numel()
    if n <= _SMALL_MASK:
        return bool(mask.all())
    return bool(mask.view(torch.uint8).min())


_SMALL_MASK = 256


def keep_where(x: torch.Tensor, cond: Value, other: Value) -> torch.Tensor:
    """`where(cond, x, other)` for a dead private temporary `x`, computed in place.

    The condition is tested on its un-broadcast data: when it holds everywhere (every
    key of a decode tile is valid) `x` is returned untouched; else the other lanes are
    filled with `masked_fill_`, which broadcasts the small condition itself.
    """
    if not isinstance(cond, torch.Tensor):
        return x if cond else x.fill_(other)
    small = unbroadcast(cond)
    if all_true(small):
        return x
    return x.masked_fill_(~small, other)


def gather(flat_t: torch.Tensor, offs: Value, mask: Value | None = None, other: Value = 0,
           active: torch.Tensor | None = None) -> torch.Tensor:
    """Masked load: masked-off lanes read `other` and never touch memory."""
    offs, mask = _lanes(offs, mask, active)
    if mask is None:
        return _take(flat_t, offs)
    if flat_t.numel() == 0:
        return torch.full(offs.shape, other, dtype=flat_t.dtype) if not isinstance(other, torch.Tensor) \
            else other.to(flat_t.dtype).expand(offs.shape).clone()
    vals = _take(flat_t, torch.where(mask, offs, 0))
    return torch.where(mask, vals, other)


def scatter(flat_t: torch.Tensor, offs: Value, value: Value, mask: Value | None = None,
            active: torch.Tensor | None = None) -> None:
    """Masked store. Lanes writing one address race (last one wins, unspecified order)."""
    offs, mask = _lanes(offs, mask, active)
    value = torch.as_tensor(value, dtype=flat_t.dtype)
    if mask is None:
        put(flat_t, offs, value.expand(offs.shape))
        return
    value = value.expand(mask.shape)
    put(flat_t, offs[mask], value[mask])


def put(flat_t: torch.Tensor, offs: torch.Tensor, values: torch.Tensor) -> None:
    """`flat_t[offs] = values` (same shape), with an IndexError for any offset outside
    `flat_t`: advanced indexing would wrap a negative one around to the end and corrupt
    memory the kernel never addressed, where `index_copy_` checks both ends."""
    index = offs.reshape(-1)
    flat_t.index_copy_(0, index if index.dtype == torch.int64 else index.long(), values.reshape(-1))


def atomic_add(flat_t: torch.Tensor, offs: Value, value: Value, mask: Value | None = None,
               active: torch.Tensor | None = None) -> torch.Tensor:
    """Atomic add with collisions resolved in program order; returns each lane's old value.

    Lanes hitting one address see the sum of the earlier lanes' additions, as a
    sequential execution would, so counter patterns (`slot = atomic_add(cnt, 1)`) work.
    """
    offs, mask = _lanes(offs, mask, active)
    value = torch.as_tensor(value, dtype=flat_t.dtype)
    shape = offs.shape
    value = value.expand(shape)
    if mask is None:
        mask = torch.ones(shape, dtype=torch.bool)
    old = torch.zeros(shape, dtype=flat_t.dtype)
    o = offs[mask].reshape(-1).long()
    v = value[mask].reshape(-1)
    if o.numel():
        order = torch.argsort(o, stable=True)
        so, sv = o[order], v[order]
        csum = torch.cumsum(sv, 0, dtype=sv.dtype) - sv
        first = torch.ones_like(so, dtype=torch.bool)
        first[1:] = so[1:] != so[:-1]
        seg_start = torch.cummax(torch.where(first, torch.arange(so.numel()), 0), 0).values
        before = csum - csum[seg_start]
        prior = torch.empty_like(sv)
        prior[order] = (flat_t[so] + before).to(flat_t.dtype)
        old[mask] = prior
        flat_t.index_add_(0, o, v)
    return old


def dot(a: torch.Tensor, b: torch.Tensor, acc: torch.Tensor | None, out_dtype: torch.dtype,
        inplace: bool = False) -> torch.Tensor:
    """`dot` with fp32 accumulation for 16-bit floats and int32 for int8, like Triton.

    `inplace`: `acc` is a private accumulator (see `fusion.find_accumulators`) that may
    be updated in place, saving a copy of it per call.
    """
    if a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    elif a.dtype == torch.int8:
        a, b = a.to(torch.int32), b.to(torch.int32)
    if acc is not None and a.dim() == 3 and b.dim() == 3 and acc.dim() == 3 and acc.dtype == a.dtype:
        if inplace and acc.shape == (a.shape[0], a.shape[1], b.shape[2]):
            return acc.baddbmm_(a, b)
        return torch.baddbmm(acc, a, b)
    out = torch.matmul(a, b)
    if acc is not None:
        out = out + acc
    return out if out.dtype == out_dtype else out.to(out_dtype)
