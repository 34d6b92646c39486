"""Trimmed lanes (backends/cpu/trim.py): blocks under a `cols < n` mask are computed on
the valid lanes only, exactly when no padded lane can be observed."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import runtime as rt
from kernelforge.backends.cpu import views
from kernelforge.backends.cpu.codegen import generate

ROW_TYPES = dict(out_ptr="*fp32", x_ptr="*fp32", n="i32", scale="fp32")


@kf.jit
def scaled_rows(out_ptr, x_ptr, n, scale, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    mask = cols < n
    x = kl.load(x_ptr + kl.program_id(0) * n + cols, mask=mask, other=0.0)
    kl.store(out_ptr + kl.program_id(0) * n + cols, x * scale + 1.0, mask=mask)


@kf.jit
def row_reduce(out_ptr, x_ptr, n, OTHER: kl.constexpr, USE_MAX: kl.constexpr, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    x = kl.load(x_ptr + kl.program_id(0) * n + cols, mask=cols < n, other=OTHER)
    if USE_MAX:
        kl.store(out_ptr + kl.program_id(0), kl.max(x * 2.0, axis=0))
    else:
        kl.store(out_ptr + kl.program_id(0), kl.sum(x * 2.0, axis=0))


@kf.jit
def shifted_store(out_ptr, x_ptr, n, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    x = kl.load(x_ptr + kl.program_id(0) * n + cols, mask=cols < n, other=0.0)
    kl.store(out_ptr + kl.program_id(0) * n + cols, x + 1.0, mask=cols < n - 1)


@kf.jit
def carried_sum(out_ptr, x_ptr, n, BLOCK: kl.constexpr):
    acc = kl.zeros([BLOCK], dtype=kl.float32)
    for start in range(0, n, BLOCK):
        cols = start + kl.arange(0, BLOCK)
        acc = acc + kl.load(x_ptr + kl.program_id(0) * n + cols, mask=cols < n, other=0.0)
    kl.store(out_ptr + kl.program_id(0), kl.sum(acc, axis=0))


@kf.jit
def scaled_heads(x_ptr, w_ptr, heads, HEAD: kl.constexpr, BLOCK_H: kl.constexpr):
    h = kl.arange(0, BLOCK_H)
    d = kl.arange(0, HEAD)
    mask = kl.broadcast_to((h < heads)[:, None], (BLOCK_H, HEAD))
    ptr = x_ptr + kl.program_id(0) * heads * HEAD + h[:, None] * HEAD + d[None, :]
    w = kl.load(w_ptr + d)
    x = kl.load(ptr, mask=mask, other=0.0)
    kl.store(ptr, x * w[None, :], mask=mask)


def _source(kernel, **kwargs) -> str:
    return kernel.source("cpu", **kwargs)


@settings(deadline=None, max_examples=25)
@given(rows=st.integers(0, 5), n=st.integers(1, 70), extra=st.sampled_from([0, 1, 2]))
def test_trimmed_rows_match_the_reference(rows, n, extra):
    block = 1 << ((n - 1).bit_length() + extra)
    x = torch.randn(rows, n)
    out = torch.full((rows, n), -7.0)
    scaled_rows[(rows,)](out, x, n, 0.5, BLOCK=block)
    torch.testing.assert_close(out, x * 0.5 + 1.0)


def test_elementwise_chain_to_a_store_with_the_same_mask_is_trimmed():
    src = _source(scaled_rows, BLOCK=64, **ROW_TYPES)
    accesses = [line for line in src.splitlines() if "views.load(" in line or "views.store" in line]
    assert len(accesses) == 3 and all("trim=True" in line for line in accesses)  # load, target, store


@pytest.mark.parametrize("other, use_max, trimmed", [
    (0.0, False, True),        # padded lanes add 0.0 to the sum
    (1.0, False, False),       # they would add 2.0 each: computed on every lane
    (-math.inf, True, False),  # a max is not trimmed: torch's amax of an empty box raises
    (0.0, True, False),        # 0.0 may win a max of negatives
])
def test_reductions_trim_only_a_sum_whose_padded_lanes_add_zero(other, use_max, trimmed):
    src = row_reduce.source("cpu", out_ptr="*fp32", x_ptr="*fp32", n="i32", OTHER=other, USE_MAX=use_max,
                            BLOCK=16)
    assert ("trim=True" in src) == trimmed
    x = -torch.rand(3, 10) - 1.0
    out = torch.zeros(3)
    row_reduce[(3,)](out, x, 10, OTHER=other, USE_MAX=use_max, BLOCK=16)
    padded = torch.cat([x, torch.full((3, 6), other)], dim=1) * 2.0
    torch.testing.assert_close(out, padded.amax(1) if use_max else padded.sum(1))


def test_a_store_under_another_mask_keeps_every_lane():
    assert "trim=True" not in _source(shifted_store, out_ptr="*fp32", x_ptr="*fp32", n="i32", BLOCK=16)
    x = torch.randn(2, 10)
    out = torch.zeros(2, 10)
    shifted_store[(2,)](out, x, 10, BLOCK=16)
    torch.testing.assert_close(out[:, :9], x[:, :9] + 1.0)
    assert torch.equal(out[:, 9], torch.zeros(2))


def test_a_loop_carried_block_is_not_trimmed():
    assert "trim=True" not in _source(carried_sum, out_ptr="*fp32", x_ptr="*fp32", n="i32", BLOCK=16)
    x = torch.randn(3, 40)
    out = torch.zeros(3)
    carried_sum[(3,)](out, x, 40, BLOCK=16)
    torch.testing.assert_close(out, x.sum(1))


@pytest.mark.parametrize("heads", [1, 3, 9, 16])
def test_a_broadcast_operand_keeps_size_one_on_the_trimmed_axis(heads):
    # the multiply broadcasts w itself, so only the source without peepholes expands it
    kernel = scaled_heads.specialize(("*fp32", "*fp32", "i32"), {"HEAD": 8, "BLOCK_H": 16})
    assert "expand(-1, 8)" in generate(kernel, peepholes=False)
    src = _source(scaled_heads, x_ptr="*fp32", w_ptr="*fp32", heads="i32", HEAD=8, BLOCK_H=16)
    assert ".expand(" not in src and src.count("trim=True") >= 2
    x = torch.randn(3, heads, 8)
    w = torch.randn(8)
    expected = x * w
    scaled_heads[(3,)](x, w, heads, HEAD=8, BLOCK_H=16)
    torch.testing.assert_close(x, expected)


# ------------------------------------------------------------------ runtime


def test_trimmed_load_returns_the_valid_box_on_every_path():
    t = torch.arange(40.0)
    conds = ((-5, (0, 0, 0), (1,)),)  # cols < 5
    P = rt.Programs((4, 1, 1))
    as_view = views.load(t, P, (0, (10, 0, 0), (1,)), (8,), conds=conds, other=0.0, trim=True)
    assert torch.equal(as_view, t.view(4, 10)[:, :5])
    gathered = views.load(t, P, (30, (-10, 0, 0), (1,)), (8,), conds=conds, other=0.0, trim=True)
    assert torch.equal(gathered, t.view(4, 10).flip(0)[:, :5])  # a negative stride gathers
    active = torch.tensor([True, False, True, False])[:, None]
    masked = views.load(t, P, (0, (10, 0, 0), (1,)), (8,), conds=conds, other=-1.0, active=active, trim=True)
    assert torch.equal(masked[1], torch.full((5,), -1.0)) and torch.equal(masked[2], t[20:25])
    compacted = rt.Programs((4, 1, 1), torch.tensor([1, 3]))
    assert torch.equal(views.load(t, compacted, (0, (10, 0, 0), (1,)), (8,), conds=conds, trim=True),
                       t.view(4, 10)[[1, 3], :5])
    empty = ((0, (0, 0, 0), (1,)),)  # cols < 0
    assert views.load(t, P, (0, (10, 0, 0), (1,)), (8,), conds=empty, trim=True).shape == (4, 0)


def test_trimmed_store_writes_the_valid_box_on_every_path():
    conds = ((-5, (0, 0, 0), (1,)),)
    value = torch.arange(20.0).view(4, 5) + 100
    P = rt.Programs((4, 1, 1))
    for aff, rows in (((0, (10, 0, 0), (1,)), [0, 1, 2, 3]), ((30, (-10, 0, 0), (1,)), [3, 2, 1, 0])):
        t = torch.zeros(40)
        views.store(t, P, aff, (8,), value, conds=conds, trim=True)
        expected = torch.zeros(4, 10)
        expected[rows, :5] = value
        assert torch.equal(t.view(4, 10), expected)
    t = torch.zeros(40)
    views.store(t, rt.Programs((4, 1, 1), torch.tensor([0, 2])), (0, (10, 0, 0), (1,)), (8,), value[:2],
                conds=conds, trim=True)
    assert torch.equal(t.view(4, 10)[[0, 2], :5], value[:2]) and t.view(4, 10)[[1, 3]].abs().sum() == 0
    t = torch.zeros(40)
    views.store(t, P, (0, (10, 0, 0), (1,)), (8,), value, conds=conds,
                active=torch.tensor([True, False, False, True])[:, None], trim=True)
    assert torch.equal(t.view(4, 10)[[0, 3], :5], value[[0, 3]]) and t.view(4, 10)[[1, 2]].abs().sum() == 0
    target = views.store_target(t, P, (0, (10, 0, 0), (1,)), (8,), conds=conds, trim=True)
    assert target.shape == (4, 5) and target.data_ptr() == t.data_ptr()


@kf.jit
def store_then_reload(out_ptr, x_ptr, n, BLOCK: kl.constexpr):
    y = kl.zeros([BLOCK], dtype=kl.float32)
    for start in range(0, n, BLOCK):
        cols = start + kl.arange(0, BLOCK)
        kl.store(out_ptr + cols, y, mask=cols < n)
        y = kl.load(x_ptr + cols, mask=cols < n, other=0.0)


def test_a_loop_carried_value_stored_before_its_reload_is_not_trimmed():
    src = _source(store_then_reload, out_ptr="*fp32", x_ptr="*fp32", n="i32", BLOCK=16)
    assert "trim=True" not in src
    x = torch.randn(40)
    out = torch.full((40,), 5.0)
    store_then_reload[(1,)](out, x, 40, BLOCK=16)
    torch.testing.assert_close(out, torch.cat([torch.zeros(16), x[:24]]))


@kf.jit
def shifted_sum(out_ptr, x_ptr, n, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    x = kl.load(x_ptr + kl.program_id(0) * n + cols, mask=cols < n, other=0.0)
    kl.store(out_ptr + kl.program_id(0), kl.sum(x + 1.0, axis=0))


def test_a_sum_of_lanes_a_constant_moved_off_zero_is_not_trimmed():
    assert "trim=True" not in _source(shifted_sum, out_ptr="*fp32", x_ptr="*fp32", n="i32", BLOCK=16)
    x = torch.randn(2, 10)
    out = torch.zeros(2)
    shifted_sum[(2,)](out, x, 10, BLOCK=16)
    torch.testing.assert_close(out, (x + 1.0).sum(1) + 6.0)


@kf.jit
def swap_halves(x_ptr, n, STORE_FIRST: kl.constexpr, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    mask = cols < n
    row = x_ptr + kl.program_id(0) * 2 * n
    a = kl.load(row + cols, mask=mask, other=0.0)
    b = kl.load(row + n + cols, mask=mask, other=0.0)
    if STORE_FIRST:  # `a` is read after the first store wrote its memory: it must be a copy
        kl.store(row + cols, b * 2.0 - 1.0, mask=mask)
        kl.store(row + n + cols, a * 2.0 - 1.0, mask=mask)
    else:  # (a read inside the fused store's own op would run at the store: not here)
        new_a = b * 2.0 - 1.0
        new_b = a * 2.0 - 1.0
        kl.store(row + cols, new_a, mask=mask)
        kl.store(row + n + cols, new_b, mask=mask)


@pytest.mark.parametrize("store_first", [True, False])
def test_a_trimmed_load_is_copied_only_when_a_write_precedes_its_last_read(store_first):
    src = swap_halves.source("cpu", x_ptr="*fp32", n="i32", STORE_FIRST=store_first, BLOCK=16)
    loads = [line for line in src.splitlines() if "views.load(" in line]
    assert len(loads) == 2 and all("trim=True" in line for line in loads)
    assert ["copy=True" in line for line in loads] == ([True, False] if store_first else [False, False])
    x = torch.randn(3, 2, 10)
    expected = x.flip(1) * 2.0 - 1.0
    swap_halves[(3,)](x, 10, STORE_FIRST=store_first, BLOCK=16)
    torch.testing.assert_close(x, expected)


@kf.jit
def zero_times_inverse(out_ptr, x_ptr, n, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    x = kl.load(x_ptr + kl.program_id(0) * n + cols, mask=cols < n, other=0.0)
    kl.store(out_ptr + kl.program_id(0), kl.sum((1.0 / x) * 0.0 + x, axis=0))


def test_a_constant_zero_does_not_zero_padded_lanes():
    """Padded lanes are 1 / 0 * 0 = NaN, which the sum must see: not trimmed."""
    assert "trim=True" not in zero_times_inverse.source("cpu", out_ptr="*fp32", x_ptr="*fp32", n="i32", BLOCK=16)
    out = torch.zeros(3)
    zero_times_inverse[(3,)](out, torch.rand(3, 10) + 1.0, 10, BLOCK=16)
    assert torch.isnan(out).all()
