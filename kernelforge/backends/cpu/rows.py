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

What only the ints decide (which conditions trim the run or mask rows, the run's box,
the window a row index reads) is planned once per launch signature (`_plan`), as
`views.py` does. When the start is `base + coef * slot` with one row tensor `slot`,
the plan holds a window view whose row i starts at `base + coef * i`, so `slot`
indexes it as is: no start tensor is built. A slot outside that window (a fault, or a
negative slot that a positive base brings back into the tensor) makes the gather or
copy raise, and the access is redone from the computed starts, which report the fault
or get it right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from kernelforge.backends.cpu.runtime import Programs, Value, all_true, flat, gather, put, scatter
from kernelforge.backends.cpu.views import (Aff, _clip, _live, _no_overlap, _padded, conds_mask,
                                            extent, values)
from kernelforge.memo import BoundedMemo

Dyn = tuple  # (tensor or int, coef: int, dims: tuple[int | None, ...], per_program: bool)

_plans: BoundedMemo = BoundedMemo()
_LEADING_DIMS = tuple(tuple(range(n)) for n in range(8))  # dims (0, 1, ..., n - 1)


def _place(v: Value, dims: tuple, rank: int, per_program: bool) -> Value:
    """A dyn tensor laid out to broadcast against `[G, *block]` (`block` of length `rank`)."""
    if not isinstance(v, torch.Tensor):
        return v
    lead = 1 if per_program else 0
    if v.dim() == lead + len(dims) and len(dims) <= rank < len(_LEADING_DIMS) and dims == _LEADING_DIMS[len(dims)]:
        # Tensor dim i is block dim i (a row start `slot[:, None]`): one view, no permute.
        v = v.view(*v.shape, *((1,) * (rank - len(dims))))
        return v if per_program else v.unsqueeze(0)
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
    """The value of an affine-plus-dyn form as an int64 tensor that broadcasts to
    `[G or 1, *dims_shape]` (callers expand it).

    Every term is widened to int64 before it is scaled: an int32 row number times a row's
    element count may pass 2**31. A zero affine part and unit coefficients add nothing:
    the common row start (one int64 offset tensor) comes back as a view, with no op run
    on it, and then has no leading program axis when that tensor does not vary per
    program. A dyn term is scaled and added in one op (`torch.add`'s alpha).
    """
    rank = len(dims_shape)
    base, pid, blk = aff
    out = None
    constant = 0  # the part not yet added to `out`
    if any(blk) or not dyn:
        out = values(P, aff, dims_shape)
        out = out if any(pid) else out.unsqueeze(0)
    elif any(pid):
        out = _program_offsets(P, base, pid, rank)
    else:
        constant = base
    for v, coef, dims, per_program in dyn:
        term = _place(v, dims, rank, per_program)
        if not isinstance(term, torch.Tensor):
            constant += term * coef
        elif out is None:
            term = term if term.dtype == torch.int64 else term.long()
            out = term if coef == 1 else term * coef
        else:
            out = torch.add(out, term, alpha=coef)
    if out is None:  # constant dyn terms only
        return torch.full((1,) * (rank + 1), constant, dtype=torch.int64)
    return out + constant if constant else out


def _program_offsets(P: Programs, base: int, pid: tuple[int, ...], rank: int) -> torch.Tensor:
    """`base + sum(c_k * program_id(k))` as int64 `[G, 1, ...]` (rank ones), made once per
    program set (`Programs.cached`: never written)."""
    key = ("offsets", base, pid, rank)
    out = P.cached.get(key)
    if out is None:
        out = P.remember(key, _sum_of_program_terms(P, base, pid).view(-1, *((1,) * rank)))
    return out


def _sum_of_program_terms(P: Programs, base: int, pid: tuple[int, ...]) -> torch.Tensor:
    out = None
    for axis, c in enumerate(pid):
        if c:
            term = P.pid_index(axis) * c
            out = term if out is None else out.add_(term)
    if base:
        out.add_(base)
    return out


@dataclass(frozen=True)
class _Plan:
    """What the ints of a row access decide: made once per launch signature."""

    lead: int  # G when the access differs between programs, else 1
    outer: tuple[int, ...]  # the block dims along which rows differ
    rows_shape: tuple[int, ...]  # (*outer, 1, ...): one entry per row
    run_conds: tuple  # live conditions on the run axes only
    row_conds: tuple[int, ...]  # indices of the conditions on per-row terms only
    mixed: tuple[int, ...]  # indices of the conditions varying along rows and run
    box: tuple[int, ...] | None  # valid lanes when the run conditions trim the run; None: cannot
    run_blk: tuple[int, ...]  # element strides along the run axes
    window: tuple | None  # (sizes, strides, base): row i at base + coef * i; None: compute starts
    writable: bool  # the window's rows are distinct, so `index_copy_` may write them
    empty: bool  # the run conditions leave no lane on
    index_shape: tuple[int, ...]  # (lead, *outer): a row tensor already laid out one entry per row
    index_dims: tuple[int, ...]  # the dyn dims of such a row tensor


def _static(dyn: Sequence[Dyn]) -> tuple:
    """The part of dyn entries a plan depends on (not the tensors' values)."""
    return tuple([(coef, dims, varies, isinstance(v, torch.Tensor)) for v, coef, dims, varies in dyn])


def _static_conds(conds: Sequence[tuple]) -> tuple:
    """`conds` with each condition's dyn entries replaced by their `_static` part; the
    usual conditions have none and are their own key (no rebuilt tuple per access)."""
    for c in conds:
        if c[3]:
            return tuple([c if not c[3] else (*c[:3], _static(c[3])) for c in conds])
    return tuple(conds)


def _plan(P: Programs, aff: Aff, shape: tuple[int, ...], inner: int, per_program: bool,
          dyn: Sequence[Dyn], conds: Sequence[tuple], n: int) -> _Plan:
    """The cached plan of this access (a dict lookup once the signature was seen)."""
    key = (aff, shape, inner, per_program, _static(dyn), _static_conds(conds), P.grid, P.G, n)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _make_plan(P, aff, shape, inner, per_program, dyn, conds, n)
    return plan


def _make_plan(P: Programs, aff: Aff, shape: tuple[int, ...], inner: int, per_program: bool,
               dyn: Sequence[Dyn], conds: Sequence[tuple], n: int) -> _Plan:
    """Conditions either involve only the run's axes (they trim it, as for a view), only
    per-row terms (they mask whole rows), or both (a per-lane mask)."""
    run_conds, row_conds, mixed = [], [], []
    for i, (c_base, c_pid, c_blk, c_dyn) in enumerate(conds):
        per_row = any(c_pid) or c_dyn or any(c_blk[:inner])
        if not per_row:
            run_conds.append((c_base, c_pid, c_blk))
        elif any(c_blk[inner:]):
            mixed.append(i)
        else:
            row_conds.append(i)
    box = _clip(_live(P.grid, run_conds, shape), shape) if run_conds else tuple(shape)
    run_blk = tuple(aff[2][inner:])
    window = _window(aff, inner, dyn, box, run_blk, n)
    writable = window is not None and _no_overlap(*window[:2])
    rows_shape = tuple(shape[:inner]) + (1,) * (len(shape) - inner)
    lead, outer = P.G if per_program else 1, tuple(shape[:inner])
    return _Plan(lead, outer, rows_shape, tuple(run_conds), tuple(row_conds), tuple(mixed), box, run_blk, window,
                 writable, box is not None and not all(box), (lead, *outer), tuple(range(inner)))


def _window(aff: Aff, inner: int, dyn: Sequence[Dyn], box: tuple[int, ...] | None,
            run_blk: tuple[int, ...], n: int) -> tuple | None:
    """`(sizes, strides, base)` of a view of `[rows, *run box]` whose row i starts at
    `base + coef * i`, when the row start is exactly that for one row tensor; else None."""
    base, pid, blk = aff
    if len(dyn) != 1 or not isinstance(dyn[0][0], torch.Tensor) or any(pid) or any(blk[:inner]):
        return None
    coef = dyn[0][1]
    if box is None or not all(box) or not isinstance(coef, int) or coef <= 0 or base < 0 or min(run_blk, default=0) < 0:
        return None
    box_run = tuple(box[inner:])
    count = (n - 1 - base - sum(c * (k - 1) for c, k in zip(run_blk, box_run))) // coef + 1
    if count <= 0:
        return None
    return (count, *box_run), (coef, *run_blk), base


@dataclass
class _Rows:
    """One row access's data taken apart: where each row starts and which lanes are on."""

    start: torch.Tensor  # int64 [lead, *outer, 1, ...]: each row's first element
    keep: torch.Tensor | None  # bool [lead, *outer, 1, ...] (expanded): rows that are on
    fill: torch.Tensor | None  # bool, like keep but ignoring `active`: rows whose loaded value matters
    lanes: torch.Tensor | None  # bool, varying along rows and run: per-lane mask (slow path)


def _row_masks(P: Programs, plan: _Plan, shape: tuple[int, ...], conds: Sequence[tuple],
               masks: Sequence[Dyn], active: torch.Tensor | None) -> tuple:
    """`(keep, fill)` of `_Rows`, expanded to `[lead, *rows_shape]`."""
    fill = None
    for i in plan.row_conds:
        c_base, c_pid, c_blk, c_dyn = conds[i]
        m = _evaluate(P, (c_base, c_pid, c_blk), c_dyn, plan.rows_shape) < 0
        fill = _both(fill, m)
    for v, _, dims, varies in masks:
        m = _place(v, dims, len(shape), varies)
        fill = _both(fill, m)
    keep = fill
    if active is not None:
        a = active.view(-1, *([1] * len(shape)))
        keep = _both(keep, a)
    return _expanded(keep, plan), _expanded(fill, plan)


def _expanded(mask: torch.Tensor | None, plan: _Plan) -> torch.Tensor | None:
    if mask is None or mask.shape == (plan.lead, *plan.rows_shape):
        return mask
    return mask.expand(plan.lead, *plan.rows_shape)


def _split(P: Programs, plan: _Plan, aff: Aff, shape: tuple[int, ...], inner: int, dyn: Sequence[Dyn],
           conds: Sequence[tuple], masks: Sequence[Dyn], active: torch.Tensor | None) -> _Rows:
    base, pid, blk = aff
    start = _evaluate(P, (base, pid, blk[:inner] + (0,) * (len(shape) - inner)), dyn, plan.rows_shape)
    keep, fill = _row_masks(P, plan, shape, conds, masks, active)
    lanes = None
    for i in plan.mixed:
        c_base, c_pid, c_blk, c_dyn = conds[i]
        m = _evaluate(P, (c_base, c_pid, c_blk), c_dyn, shape) < 0
        lanes = _both(lanes, m)
    return _Rows(_expanded(start, plan), keep, fill, lanes)


def _row_index(plan: _Plan, dyn: Sequence[Dyn]) -> torch.Tensor:
    """The lone row tensor of a windowed access as a flat int64 index, one entry per row."""
    v, _, dims, varies = dyn[0]
    if not (varies and v.shape == plan.index_shape and dims == plan.index_dims):
        v = _place(v, dims, len(plan.rows_shape), varies).expand(plan.lead, *plan.rows_shape)
    if v.dim() != 1:
        v = v.reshape(-1)
    return v if v.dtype == torch.int64 else v.long()


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
    if length == 0 or n < length or not all_true(starts % length == 0):
        return None
    return t.as_strided((n // length, length), (length, 1), t.storage_offset())


def _both(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """The conjunction of two optional masks (None: every lane on)."""
    if a is None:
        return b
    return a if b is None else a & b


def _lane_keep(P: Programs, plan: _Plan, r: _Rows, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Every lane's mask, for the lane-by-lane gather or scatter: rows, run and mixed conditions."""
    return _both(_both(r.keep, conds_mask(P, plan.run_conds, shape)), r.lanes)


def _lane_offsets(P: Programs, plan: _Plan, r: _Rows, shape: tuple[int, ...], inner: int) -> torch.Tensor:
    return r.start + values(P, (0, (0, 0, 0), (0,) * inner + plan.run_blk), shape)


def load_rows(t: torch.Tensor, P: Programs, aff: Aff, shape: tuple[int, ...], inner: int,
              per_program: bool, dyn: Sequence[Dyn] = (), conds: Sequence[tuple] = (),
              masks: Sequence[Dyn] = (), other: Value = 0, active: torch.Tensor | None = None) -> torch.Tensor:
    """Masked load whose offsets are per-row starts plus an affine run over `shape[inner:]`."""
    plan = _plan(P, aff, shape, inner, per_program, dyn, conds, extent(t))
    result = None
    if plan.window is not None and not plan.mixed and (plan.box == shape or not isinstance(other, torch.Tensor)):
        result = _load_windowed(t, P, plan, shape, dyn, conds, masks, other, active)
    if result is None:
        result = _load_split(t, P, plan, aff, shape, inner, dyn, conds, masks, other, active)
    return result if per_program else result[0]


def _load_windowed(t: torch.Tensor, P: Programs, plan: _Plan, shape: tuple[int, ...], dyn: Sequence[Dyn],
                   conds: Sequence[tuple], masks: Sequence[Dyn], other: Value,
                   active: torch.Tensor | None) -> torch.Tensor | None:
    """Rows read by indexing the plan's window with the row tensor; None when some row
    lies outside the window (the caller redoes the load from the computed starts)."""
    keep, fill = _row_masks(P, plan, shape, conds, masks, active)
    index = _row_index(plan, dyn)
    if keep is not None:
        index = torch.where(keep.reshape(-1), index, 0)
    sizes, strides, base = plan.window
    try:
        result = t.as_strided(sizes, strides, t.storage_offset() + base).index_select(0, index)
    except IndexError:
        return None
    return _finish(result.view(plan.lead, *plan.outer, *sizes[1:]), plan, shape, fill, None, other)


def _load_split(t: torch.Tensor, P: Programs, plan: _Plan, aff: Aff, shape: tuple[int, ...], inner: int,
                dyn: Sequence[Dyn], conds: Sequence[tuple], masks: Sequence[Dyn], other: Value,
                active: torch.Tensor | None) -> torch.Tensor:
    """The load from computed row starts: a row gather, or a gather of every lane."""
    r = _split(P, plan, aff, shape, inner, dyn, conds, masks, active)
    box = plan.box
    if isinstance(other, torch.Tensor) and box != tuple(shape):
        box = None  # a block `other` cannot pad: gather instead
    if box is not None and not all(box):
        return torch.full((plan.lead, *shape), other, dtype=t.dtype)
    if box is not None and all(c >= 0 for c in plan.run_blk):
        box_run = tuple(box[inner:])
        span_run = sum(c * (k - 1) for c, k in zip(plan.run_blk, box_run))
        idx = (r.start if r.keep is None else torch.where(r.keep, r.start, 0)).reshape(-1)
        result = _read_rows(t, extent(t), idx, plan.run_blk, box_run, span_run, checked=r.lanes is not None)
        if result is not None:
            return _finish(result.view(plan.lead, *plan.outer, *box_run), plan, shape, r.fill, r.lanes, other)
    return gather(flat(t), _lane_offsets(P, plan, r, shape, inner), _lane_keep(P, plan, r, shape), other)


def _finish(result: torch.Tensor, plan: _Plan, shape: tuple[int, ...], fill: torch.Tensor | None,
            lanes: torch.Tensor | None, other: Value) -> torch.Tensor:
    """Read rows padded from the run box to the block and masked."""
    if result.shape[1 + len(plan.outer):] != shape[len(plan.outer):]:
        result = _padded(result, tuple(shape[len(plan.outer):]), other)
    return _mask_rows(result, fill, lanes, other)


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


def _mask_rows(result: torch.Tensor, fill: torch.Tensor | None, lanes: torch.Tensor | None,
               other: Value) -> torch.Tensor:
    """Sets the lanes of rows (or lanes) that are off to `other`; nothing when all are on.

    Rows off only because their program is not executing (`active`) keep what was read:
    predication discards every value such a program computes.
    """
    lane_keep = _both(fill, lanes)
    if lane_keep is None or all_true(lane_keep):
        return result
    if isinstance(other, torch.Tensor):
        return torch.where(lane_keep, result, other)
    if lanes is None and result.is_contiguous():
        return _fill_rows(result, fill, other)
    return result.masked_fill_(~lane_keep, other)  # `result` is a fresh copy: fill in place


def _fill_rows(result: torch.Tensor, row_keep: torch.Tensor, other: Value) -> torch.Tensor:
    """`result` (contiguous, `[*rows, *run]`) with the rows that are off set to `other`.

    One fill per row that is off: `masked_fill_` with a mask broadcast over the run tests
    every lane at about a nanosecond each, several times the cost of these row fills.
    """
    off = (~row_keep).reshape(-1).nonzero().squeeze(1)
    result.view(row_keep.numel(), -1).index_fill_(0, off, other)
    return result


def store_rows(t: torch.Tensor, P: Programs, aff: Aff, shape: tuple[int, ...], inner: int,
               per_program: bool, value: Value, dyn: Sequence[Dyn] = (), conds: Sequence[tuple] = (),
               masks: Sequence[Dyn] = (), active: torch.Tensor | None = None, trim: bool = False) -> None:
    """Masked store whose offsets are per-row starts plus an affine run over `shape[inner:]`.

    Only the rows that are on are written, whole (trimmed to the run conditions' box):
    `index_copy_` into the plan's window or into a row view when the run is dense and
    the starts aligned, else one unmasked `index_put_` of those rows' lanes. Rows writing
    one address race as in a scatter (one of them wins). A store that faults may have
    written some of its rows. With `trim` (see `trim.py`; every condition bounds a run
    axis) `value` holds only the box's lanes.
    """
    plan = _plan(P, aff, shape, inner, per_program, dyn, conds, extent(t))
    if not isinstance(value, torch.Tensor) or value.dtype != t.dtype:
        value = torch.as_tensor(value, dtype=t.dtype)
    if plan.empty:
        return
    if trim and (plan.box is None or plan.row_conds or plan.mixed or masks):
        raise ValueError("a trimmed row store needs conditions that bound run axes only")
    if plan.writable and not plan.mixed:
        keep, _ = _row_masks(P, plan, shape, conds, masks, active)
        if _store_windowed(t, plan, shape, inner, value, _row_index(plan, dyn), keep, trim):
            return
    _store_split(t, P, plan, aff, shape, inner, value, dyn, conds, masks, active, trim)


def _store_windowed(t: torch.Tensor, plan: _Plan, shape: tuple[int, ...], inner: int, value: torch.Tensor,
                    index: torch.Tensor, keep: torch.Tensor | None, trim: bool) -> bool:
    """Copies the rows that are on into the plan's window at the row tensor's entries;
    False when some entry lies outside the window (rows already copied are rewritten
    by the caller's store from the computed starts)."""
    vals, index = _rows_on(plan, shape, inner, value, index, keep, trim)
    if index.numel() == 0:
        return True
    sizes, strides, base = plan.window
    try:
        t.as_strided(sizes, strides, t.storage_offset() + base).index_copy_(0, index, vals)
    except IndexError:
        return False
    return True


def _rows_on(plan: _Plan, shape: tuple[int, ...], inner: int, value: torch.Tensor, starts: torch.Tensor,
             keep: torch.Tensor | None, trim: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`(values [rows, *run box], starts [rows])` of the rows that are on (a `trim` value
    holds the box's lanes already)."""
    box_run = plan.box[inner:]
    full = (plan.lead, *shape[:inner], *box_run) if trim else (plan.lead, *shape)
    if value.shape != full:
        value = torch.broadcast_to(value, full)
    vals = value
    if box_run != shape[inner:] and not trim:
        vals = vals[(slice(None),) * (1 + inner) + tuple(slice(0, k) for k in box_run)]
    if inner:  # [lead, *outer, *run box]: one row per (program, outer index)
        vals = vals.reshape(-1, *box_run)
    if keep is not None:
        on = keep.reshape(-1)
        if not all_true(on):
            chosen = on.nonzero().squeeze(1)
            starts, vals = starts.index_select(0, chosen), vals.index_select(0, chosen)
    return vals, starts


def _store_split(t: torch.Tensor, P: Programs, plan: _Plan, aff: Aff, shape: tuple[int, ...], inner: int,
                 value: torch.Tensor, dyn: Sequence[Dyn], conds: Sequence[tuple], masks: Sequence[Dyn],
                 active: torch.Tensor | None, trim: bool) -> None:
    """The store from computed row starts: a row copy, or a scatter of every lane (never
    for a `trim` store, whose conditions only cut the run)."""
    r = _split(P, plan, aff, shape, inner, dyn, conds, masks, active)
    if plan.box is None or r.lanes is not None:
        scatter(flat(t), _lane_offsets(P, plan, r, shape, inner), value, _lane_keep(P, plan, r, shape))
        return
    box_run = tuple(plan.box[inner:])
    vals, starts = _rows_on(plan, shape, inner, value, r.start.reshape(-1), r.keep, trim)
    if starts.numel() == 0:
        return
    # Every lane of these rows is on, so a row leaving `t` is a fault: both writes below
    # raise IndexError for it (a negative row start included).
    length = _dense_length(plan.run_blk, box_run)
    view = _row_view(t, extent(t), length, starts) if length is not None else None
    if view is not None:
        view.index_copy_(0, starts // length, vals.reshape(-1, length))
        return
    offs = starts.view(-1, *([1] * len(box_run))) + values(P, (0, (0, 0, 0), plan.run_blk), box_run)
    put(flat(t), offs, vals)
