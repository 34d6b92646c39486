"""Row gathers and row scatters: data-dependent row starts plus an affine inner run.

A row access adds data-dependent terms to the affine form of `views.py`: `dyn`
entries (tensor, coef, dims, per_program), tensor dim i lying along block dim
dims[i]. The block dims from `inner` on carry only affine terms, so each lane group
along them is one strided run ("row") starting at a per-row offset. One
`index_select` (load) or `index_copy_` / `index_put_` (store) of whole rows replaces
a gather or scatter of every element, and masks that are per row (the `if slot >= 0`
of the active programs, `k_valid[:, None]`) act on the few row starts, never on every
lane. Loads read rows through an overlapping window view of the memory (as fast as
a non-overlapping row view for `index_select`, and it needs no alignment check).
Stores whose starts are all multiples of a dense run's length write through a
non-overlapping `[n // L, L]` view, where `index_copy_` takes torch's contiguous
row-copy path. Per-lane masks that vary along both the rows and the run (a per-row
length) fall back to the element gather/scatter of `runtime`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from kernelforge.backends.cpu.runtime import Programs, Value, all_true, flat, gather, scatter
from kernelforge.backends.cpu.views import Aff, _clip, _live, _padded, conds_mask, extent, values

Dyn = tuple  # (tensor or int, coef: int, dims: tuple[int | None, ...], per_program: bool)


def _place(v: Value, dims: tuple, rank: int, per_program: bool) -> Value:
    """A dyn tensor laid out to broadcast against `[G, *block]` (`block` of length `rank`)."""
    if not isinstance(v, torch.Tensor):
        return v
    lead = 1 if per_program else 0
    keep = [i for i, d in enumerate(dims) if d is not None]
    sizes = [v.shape[lead + i] for i in keep]
    v = v.reshape((*v.shape[:lead], *sizes))
    order = sorted(range(len(keep)), key=lambda j: dims[keep[j]])
    if order != list(range(len(keep))):
        v = v.permute(*range(lead), *(lead + j for j in order))
    shape = [1] * rank
    for j in order:
        shape[dims[keep[j]]] = sizes[j]
    v = v.reshape((*v.shape[:lead], *shape))
    return v if per_program else v.unsqueeze(0)


def _evaluate(P: Programs, aff: Aff, dyn: Sequence[Dyn], dims_shape: Sequence[int]) -> torch.Tensor:
    """The value of an affine-plus-dyn form as a `[G or 1, *dims_shape]` int64 tensor.

    A zero affine part and unit coefficients add nothing: the common row start (one
    int64 offset tensor) comes back as a view, with no op run on it.
    """
    rank = len(dims_shape)
    base, pid, blk = aff
    out = None
    if base or any(pid) or any(blk) or not dyn:
        out = values(P, aff, dims_shape)
        out = out if any(pid) else out.unsqueeze(0)
    for v, coef, dims, per_program in dyn:
        term = _place(v, dims, rank, per_program)
        term = term if coef == 1 else term * coef
        out = term if out is None else out + term
    if not isinstance(out, torch.Tensor):  # a lone constant dyn term
        return torch.full((1,) * (rank + 1), out, dtype=torch.int64)
    return out if out.dtype == torch.int64 else out.long()


@dataclass
class _Rows:
    """One row access taken apart: where each row starts and which lanes are on."""

    lead: int  # G when the access differs between programs, else 1
    start: torch.Tensor  # int64 [lead, *outer, 1, ...]: each row's first element
    keep: torch.Tensor | None  # bool [lead, *outer, 1, ...] (expanded): rows that are on
    fill: torch.Tensor | None  # bool, like keep but ignoring `active`: rows whose loaded value matters
    lanes: torch.Tensor | None  # bool, varying along rows and run: per-lane mask (slow path)
    run_conds: list  # conditions on the run axes only
    box: tuple[int, ...] | None  # valid lanes when the run conditions trim the run; None: cannot
    run_blk: tuple[int, ...]  # element strides along the run axes


def _split(P: Programs, aff: Aff, shape: tuple[int, ...], inner: int, per_program: bool,
           dyn: Sequence[Dyn], conds: Sequence[tuple], masks: Sequence[Dyn],
           active: torch.Tensor | None) -> _Rows:
    """Conditions either involve only the run's axes (they trim it, as for a view), only
    per-row terms (they mask whole rows), or both (a per-lane mask)."""
    base, pid, blk = aff
    outer, run = shape[:inner], shape[inner:]
    rows_shape = tuple(outer) + (1,) * len(run)
    run_conds, row_conds, mixed = [], [], []
    for c_base, c_pid, c_blk, c_dyn in conds:
        per_row = any(c_pid) or c_dyn or any(c_blk[:inner])
        if not per_row:
            run_conds.append((c_base, c_pid, c_blk))
        elif any(c_blk[inner:]):
            mixed.append(((c_base, c_pid, c_blk), c_dyn))
        else:
            row_conds.append(((c_base, c_pid, c_blk), c_dyn))
    box = _clip(_live(P.grid, run_conds, shape), shape) if run_conds else tuple(shape)
    lead = P.G if per_program else 1
    start = _evaluate(P, (base, pid, blk[:inner] + (0,) * len(run)), dyn, rows_shape)
    fill = None
    for c_aff, c_dyn in row_conds:
        m = _evaluate(P, c_aff, c_dyn, rows_shape) < 0
        fill = m if fill is None else fill & m
    for v, _, dims, varies in masks:
        m = _place(v, dims, len(shape), varies)
        fill = m if fill is None else fill & m
    keep = fill
    if active is not None:
        a = active.view(-1, *([1] * len(shape)))
        keep = a if keep is None else keep & a
    lanes = None
    for c_aff, c_dyn in mixed:
        m = _evaluate(P, c_aff, c_dyn, shape) < 0
        lanes = m if lanes is None else lanes & m
    start = start.expand(lead, *rows_shape)
    keep, fill = (None if m is None else m.expand(lead, *rows_shape) for m in (keep, fill))
    return _Rows(lead, start, keep, fill, lanes, run_conds, box, tuple(blk[inner:]))


def _dense_length(run_blk: Sequence[int], box_run: Sequence[int]) -> int | None:
    """The run's element count when its lanes are one contiguous row-major run, else None."""
    expect = 1
    for c, k in reversed(list(zip(run_blk, box_run))):
        if k > 1 and c != expect:
            return None
        expect *= k
    return expect


def _row_view(t: torch.Tensor, n: int, length: int, starts: torch.Tensor) -> torch.Tensor | None:
    """`t`'s memory as non-overlapping rows of `length` when every start is row-aligned."""
    if length == 0 or n < length or not bool((starts % length == 0).all()):
        return None
    return t.as_strided((n // length, length), (length, 1), t.storage_offset())


def _lane_offsets(P: Programs, r: _Rows, shape: tuple[int, ...], inner: int) -> torch.Tensor:
    return r.start + values(P, (0, (0, 0, 0), (0,) * inner + r.run_blk), shape)


def load_rows(t: torch.Tensor, P: Programs, aff: Aff, shape: tuple[int, ...], inner: int,
              per_program: bool, dyn: Sequence[Dyn] = (), conds: Sequence[tuple] = (),
              masks: Sequence[Dyn] = (), other: Value = 0, active: torch.Tensor | None = None) -> torch.Tensor:
    """Masked load whose offsets are per-row starts plus an affine run over `shape[inner:]`."""
    r = _split(P, aff, shape, inner, per_program, dyn, conds, masks, active)
    outer, run = shape[:inner], tuple(shape[inner:])
    box = r.box
    if isinstance(other, torch.Tensor) and box != tuple(shape):
        box = None  # a block `other` cannot pad: gather instead
    n = extent(t)
    result = None
    if box is not None and not all(box):
        result = torch.full((r.lead, *shape), other, dtype=t.dtype)
    elif box is not None and all(c >= 0 for c in r.run_blk):
        box_run = tuple(box[inner:])
        span_run = sum(c * (k - 1) for c, k in zip(r.run_blk, box_run))
        idx = (r.start if r.keep is None else torch.where(r.keep, r.start, 0)).reshape(-1)
        result = _read_rows(t, n, idx, r.run_blk, box_run, span_run, checked=r.lanes is not None)
        if result is not None:
            result = result.view(r.lead, *outer, *box_run)
            if box_run != run:
                result = _padded(result, run, other)
            result = _mask_rows(result, r, other)
    if result is None:  # fall back to every lane's offset, gathered element by element
        keep = r.keep
        for m in (conds_mask(P, r.run_conds, shape), r.lanes):
            if m is not None:
                keep = m if keep is None else keep & m
        result = gather(flat(t), _lane_offsets(P, r, shape, inner), keep, other)
    return result if per_program else result[0]


def _read_rows(t: torch.Tensor, n: int, idx: torch.Tensor, run_blk: tuple[int, ...],
               box_run: tuple[int, ...], span_run: int, checked: bool) -> torch.Tensor | None:
    """`[len(idx), *box_run]` rows starting at `idx`, read through a window view of `t`.

    Returns None (read lane by lane instead) when `t` is shorter than a run, or, when
    `checked`, when some row leaves `t`: per-lane masks may keep its lanes past the end
    off. Otherwise every row is on or moved to offset 0, so a row leaving `t` is a fault,
    which `index_select` reports as an IndexError without a pass over the offsets here.
    """
    if n <= span_run or idx.numel() == 0:
        return None
    if checked:
        lo, hi = torch.aminmax(idx)
        if int(lo) < 0 or int(hi) >= n - span_run:
            return None
    windows = t.as_strided((n - span_run, *box_run), (1, *run_blk), t.storage_offset())
    return windows.index_select(0, idx)


def _mask_rows(result: torch.Tensor, r: _Rows, other: Value) -> torch.Tensor:
    """Sets the lanes of rows (or lanes) that are off to `other`; nothing when all are on.

    Rows off only because their program is not executing (`active`) keep what was read:
    predication discards every value such a program computes.
    """
    lane_keep = r.fill if r.lanes is None else (r.lanes if r.fill is None else r.fill & r.lanes)
    if lane_keep is None or all_true(lane_keep):
        return result
    if isinstance(other, torch.Tensor):
        return torch.where(lane_keep, result, other)
    return result.masked_fill_(~lane_keep, other)  # `result` is a fresh copy: fill in place


def store_rows(t: torch.Tensor, P: Programs, aff: Aff, shape: tuple[int, ...], inner: int,
               per_program: bool, value: Value, dyn: Sequence[Dyn] = (), conds: Sequence[tuple] = (),
               masks: Sequence[Dyn] = (), active: torch.Tensor | None = None) -> None:
    """Masked store whose offsets are per-row starts plus an affine run over `shape[inner:]`.

    Only the rows that are on are written, whole (trimmed to the run conditions' box):
    `index_copy_` into a row view when the run is dense and the starts aligned, else one
    unmasked `index_put_` of those rows' lanes. Rows writing one address race as in a
    scatter (one of them wins).
    """
    r = _split(P, aff, shape, inner, per_program, dyn, conds, masks, active)
    value = torch.as_tensor(value, dtype=t.dtype)
    if r.box is not None and not all(r.box):
        return
    if r.box is None or r.lanes is not None:
        keep = r.keep
        for m in (conds_mask(P, r.run_conds, shape), r.lanes):
            if m is not None:
                keep = m if keep is None else keep & m
        scatter(flat(t), _lane_offsets(P, r, shape, inner), value, keep)
        return
    box_run = tuple(r.box[inner:])
    vals = torch.broadcast_to(value, (r.lead, *shape))[(slice(None),) * (1 + inner) + tuple(slice(0, k) for k in box_run)]
    vals = vals.reshape(-1, *box_run)
    starts = r.start.reshape(-1)
    if r.keep is not None:
        on = r.keep.reshape(-1)
        if not all_true(on):
            chosen = on.nonzero().squeeze(1)
            starts, vals = starts.index_select(0, chosen), vals.index_select(0, chosen)
    if starts.numel() == 0:
        return
    n = extent(t)
    lo_run = sum(min(c * (k - 1), 0) for c, k in zip(r.run_blk, box_run))
    hi_run = sum(max(c * (k - 1), 0) for c, k in zip(r.run_blk, box_run))
    lo, hi = torch.aminmax(starts)
    if int(lo) + lo_run < 0 or int(hi) + hi_run >= n:  # out of bounds: the scatter reports it
        offs = starts.view(-1, *([1] * len(box_run))) + values(P, (0, (0, 0, 0), r.run_blk), box_run)
        scatter(flat(t), offs, vals)
        return
    length = _dense_length(r.run_blk, box_run)
    view = _row_view(t, n, length, starts) if length is not None else None
    if view is not None:
        view.index_copy_(0, starts // length, vals.reshape(-1, length))
        return
    offs = starts.view(-1, *([1] * len(box_run))) + values(P, (0, (0, 0, 0), r.run_blk), box_run)
    flat(t).index_put_((offs,), vals)

