"""The CPU backend's softmax peephole (`fusion.find_softmaxes`) computes the same values
as the op-by-op chain it replaces.

Each kernel is generated twice from the same IR, with and without peepholes, and both
modules run on the same inputs: any axis, kept or dropped reduced axes, masked lanes
(padded with -inf, or rows with no valid lane at all), fp32/fp16/bf16. Chains that are
not a softmax (an intermediate read elsewhere, a broadcast along another axis, a
different source) must be left alone.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import CPUBackend
from kernelforge.backends.cpu.codegen import generate

TOLERANCE = {torch.float32: (1e-6, 1e-5), torch.float16: (1e-3, 1e-2), torch.bfloat16: (8e-3, 2e-2)}


pytestmark = pytest.mark.usefixtures("fresh_kernel_cache")


@kf.jit
def tile_softmax(out_ptr, in_ptr, R, C, AXIS: kl.constexpr, KEEP: kl.constexpr, BR: kl.constexpr,
                 BC: kl.constexpr):
    pid = kl.program_id(0)
    r = kl.arange(0, BR)
    c = kl.arange(0, BC)
    offs = pid * R * C + r[:, None] * C + c[None, :]
    mask = (r[:, None] < R) & (c[None, :] < C)
    x = kl.load(in_ptr + offs, mask=mask, other=-float("inf"))
    if KEEP:
        num = kl.exp(x - kl.max(x, axis=AXIS, keep_dims=True))
        out = num / kl.sum(num, axis=AXIS, keep_dims=True)
    elif AXIS == 0:
        num = kl.exp(x - kl.max(x, axis=0)[None, :])
        out = num / kl.sum(num, axis=0)[None, :]
    else:
        num = kl.exp(x - kl.max(x, axis=1)[:, None])
        out = num / kl.sum(num, axis=1)[:, None]
    kl.store(out_ptr + offs, out, mask=mask)


@kf.jit
def row_softmax(out_ptr, in_ptr, stride, n_cols, BLOCK: kl.constexpr):
    row = kl.program_id(0)
    cols = kl.arange(0, BLOCK)
    mask = cols < n_cols
    x = kl.load(in_ptr + row * stride + cols, mask=mask, other=-float("inf"))
    x = x - kl.max(x, axis=0)
    num = kl.exp(x)
    kl.store(out_ptr + row * stride + cols, num / kl.sum(num, axis=0), mask=mask)


def run_both(fn, args: tuple, constexprs: dict, grid: tuple[int, int, int]):
    """`args[0]` as written by the module with peepholes, by the one without, and the first's source."""
    kernel = fn.specialize(args, constexprs)
    backend = CPUBackend()
    results, sources = [], []
    for peepholes in (True, False):
        source = generate(kernel, peepholes=peepholes)
        launch = backend.load(source, f"{kernel.name}-peepholes-{peepholes}")
        call = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        launch(grid, call)
        results.append(call[0])
        sources.append(source)
    return results[0], results[1], sources[0]


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    atol, rtol = TOLERANCE[want.dtype]
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(axis=st.sampled_from([0, 1]), keep=st.booleans(), rows=st.integers(1, 8), cols=st.integers(1, 8),
       programs=st.integers(1, 3), dtype=st.sampled_from(list(TOLERANCE)), scale=st.sampled_from([0.1, 1.0, 30.0]))
def test_tile_softmax_matches_the_op_by_op_chain(axis, keep, rows, cols, programs, dtype, scale):
    x = (torch.randn(programs, rows, cols) * scale).to(dtype)
    out = torch.full_like(x, 7.0)
    got, want, source = run_both(tile_softmax, (out, x, rows, cols), {"AXIS": axis, "KEEP": keep, "BR": 8, "BC": 8},
                                 (programs, 1, 1))
    assert "softmax(" in source and "torch.exp" not in source
    assert_same(got, want)
    torch.testing.assert_close(got.float(), torch.softmax(x.float(), dim=axis + 1), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("n_cols", [0, 1, 5, 16])
def test_row_softmax_with_padded_and_empty_rows(dtype, n_cols):
    x = torch.randn(6, 16).to(dtype)
    x[2] = -float("inf")  # a row with no finite lane: NaN in both forms
    out = torch.zeros_like(x)
    got, want, source = run_both(row_softmax, (out, x, 16, n_cols), {"BLOCK": 16}, (6, 1, 1))
    assert "softmax(" in source
    assert_same(got, want)
    assert torch.equal(got[:, n_cols:], torch.zeros(6, 16 - n_cols, dtype=dtype))


@kf.jit
def max_also_stored(out_ptr, max_ptr, in_ptr, BLOCK: kl.constexpr):
    row = kl.program_id(0)
    cols = kl.arange(0, BLOCK)
    x = kl.load(in_ptr + row * BLOCK + cols)
    m = kl.max(x, axis=0)
    num = kl.exp(x - m)
    kl.store(max_ptr + row, m)
    kl.store(out_ptr + row * BLOCK + cols, num / kl.sum(num, axis=0))


@kf.jit
def max_along_other_axis(out_ptr, in_ptr, B: kl.constexpr):
    r = kl.arange(0, B)
    offs = r[:, None] * B + r[None, :]
    x = kl.load(in_ptr + offs)
    num = kl.exp(x - kl.max(x, axis=1)[None, :])  # broadcast along axis 0: not a softmax
    kl.store(out_ptr + offs, num / kl.sum(num, axis=1)[:, None])


@kf.jit
def shifted_other_block(out_ptr, in_ptr, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    x = kl.load(in_ptr + cols)
    m = kl.max(x, axis=0)
    x = x * 2.0
    num = kl.exp(x - m)
    kl.store(out_ptr + cols, num / kl.sum(num, axis=0))


def test_chain_whose_max_is_read_elsewhere_is_left_alone():
    x = torch.randn(3, 8)
    out, peaks = torch.empty(3, 8), torch.empty(3)
    got, _, source = run_both(max_also_stored, (out, peaks, x), {"BLOCK": 8}, (3, 1, 1))
    assert "softmax(" not in source
    torch.testing.assert_close(got, torch.softmax(x, dim=1))


def test_max_broadcast_along_another_axis_is_not_a_softmax():
    x = torch.randn(8, 8)
    got, _, source = run_both(max_along_other_axis, (torch.empty(8, 8), x), {"B": 8}, (1, 1, 1))
    assert "softmax(" not in source
    num = torch.exp(x - x.amax(1)[None, :])
    torch.testing.assert_close(got, num / num.sum(1)[:, None])


def test_max_of_another_value_is_not_a_softmax():
    x = torch.randn(8)
    got, _, source = run_both(shifted_other_block, (torch.empty(8), x), {"BLOCK": 8}, (1, 1, 1))
    assert "softmax(" not in source
    num = torch.exp(x * 2 - x.max())
    torch.testing.assert_close(got, num / num.sum())


@kf.jit
def block_softmax(out_ptr, in_ptr, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    x = kl.load(in_ptr + cols)
    num = kl.exp(x - kl.max(x, axis=0))
    kl.store(out_ptr + cols, num / kl.sum(num, axis=0))


def test_uniform_block_softmax_is_rewritten():
    """Offsets without a program id: the block has no grid axis, the softmax runs on dim 0."""
    x = torch.randn(8)
    got, want, source = run_both(block_softmax, (torch.empty(8), x), {"BLOCK": 8}, (1, 1, 1))
    assert "_softmax(x, 0, False" in source
    assert_same(got, want)
    torch.testing.assert_close(got, torch.softmax(x, dim=0))


@pytest.mark.parametrize("n_cols", [16, 11])
def test_softmax_in_place_over_its_own_input(n_cols):
    """Output and input are one tensor: the rewrite must still read every lane before writing."""
    x = torch.randn(5, 16)
    want = x.clone()
    want[:, :n_cols] = torch.softmax(x[:, :n_cols], dim=1)
    row_softmax[(5,)](x, x, 16, n_cols, BLOCK=16)
    torch.testing.assert_close(x, want)


@kf.jit
def scaled_softmax_sum(out_ptr, in_ptr, limit, scale, BLOCK: kl.constexpr):
    """A computed source, the softmax read by another op, the chain under a divergent `if`."""
    row = kl.program_id(0)
    cols = kl.arange(0, BLOCK)
    x = kl.load(in_ptr + row * BLOCK + cols) * scale
    total = kl.sum(x, axis=0)
    if row < limit:
        num = kl.exp(x - kl.max(x, axis=0))
        p = num / kl.sum(num, axis=0)
        total = kl.sum(p * cols.to(kl.float32), axis=0)
    kl.store(out_ptr + row, total)


def test_softmax_of_a_computed_block_under_a_divergent_if():
    x = torch.randn(6, 16)
    got, want, source = run_both(scaled_softmax_sum, (torch.empty(6), x, 4, 0.5), {"BLOCK": 16}, (6, 1, 1))
    assert "softmax(" in source
    assert_same(got, want)
    p = torch.softmax(x * 0.5, dim=1)
    expected = torch.where(torch.arange(6) < 4, (p * torch.arange(16)).sum(1), (x * 0.5).sum(1))
    torch.testing.assert_close(got, expected)



def test_a_strided_store_target_gets_each_row_in_place():
    """Rows of 16 out of 20 columns: the target view is not contiguous."""
    x = torch.randn(3, 20)
    out = torch.full((3, 20), -3.0)
    row_softmax[(3,)](out, x, 20, 20, BLOCK=16)
    torch.testing.assert_close(out[:, :16], torch.softmax(x[:, :16], dim=1))
    assert torch.equal(out[:, 16:], torch.full((3, 4), -3.0))
