"""A stored value read again after its store (`fusion._later_reads`): computed straight
into the store's view when nothing but tensor math runs before those reads, so the view
holds it; the fused residual add of rms_norm is the case it is for."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def add_then_square(acc_ptr, x_ptr, out_ptr, n, REWRITE: kl.constexpr, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    mask = cols < n
    row = kl.program_id(0) * n
    s = (kl.load(acc_ptr + row + cols, mask=mask, other=0.0).to(kl.float32)
         + kl.load(x_ptr + row + cols, mask=mask, other=0.0).to(kl.float32))
    kl.store(acc_ptr + row + cols, s, mask=mask)
    if REWRITE:  # a later write to the same lanes: `s` must not be read back from them
        kl.store(acc_ptr + row + cols, s * 0.0 - 1.0, mask=mask)
    kl.store(out_ptr + kl.program_id(0), kl.sum(s * s, axis=0))


def _source(rewrite: bool, dtype: str = "fp32") -> str:
    return add_then_square.source("cpu", acc_ptr=f"*{dtype}", x_ptr=f"*{dtype}", out_ptr="*fp32", n="i32",
                                  REWRITE=rewrite, BLOCK=8)


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("n", [8, 5])
@pytest.mark.parametrize("rewrite", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_value_read_after_its_store_keeps_its_value(rows, n, rewrite, dtype):
    acc = torch.randn(rows, n).to(dtype)
    x = torch.randn(rows, n).to(dtype)
    s = acc.float() + x.float()
    out = torch.empty(rows)
    add_then_square[(rows,)](acc, x, out, n, REWRITE=rewrite, BLOCK=8)
    torch.testing.assert_close(acc.float(), torch.full_like(s, -1.0) if rewrite else s.to(dtype).float())
    torch.testing.assert_close(out, (s * s).sum(1), rtol=1e-5, atol=1e-5)


def test_the_sum_is_computed_into_the_stored_view_and_its_operands_stay_views():
    src = _source(rewrite=False)
    assert "= torch.add(" in src and ", out=target)" in src
    assert "copy=True" not in src  # the accumulator's load is read at its own store: no copy
    assert "= torch.add(" not in _source(rewrite=True)  # a later write to the lanes: no read-back
    fp16 = _source(rewrite=False, dtype="fp16")  # fp16 lanes would round the fp32 sum: it is copied
    assert "out=target)" not in fp16 and "target.copy_(s)" in fp16


@kf.jit
def keep_a_view_then_rewrite(x_ptr, y_ptr, out_ptr, red_ptr, VIEW: kl.constexpr, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    s = kl.load(x_ptr + offs) + kl.load(y_ptr + offs)
    kl.store(out_ptr + offs, s)
    if VIEW == 0:
        kept = s[None, :]
    elif VIEW == 1:
        kept = kl.reshape(s, (1, BLOCK))
    elif VIEW == 2:
        kept = kl.broadcast_to(s[None, :], (2, BLOCK))
    else:
        kept = s.to(kl.float32)[None, :]
    kl.store(out_ptr + offs, kl.load(x_ptr + offs) * 0.0 - 1.0)  # rewrites the lanes `kept` may view
    kl.store(red_ptr + kl.program_id(0), kl.sum(kl.sum(kept, axis=1), axis=0))


@pytest.mark.parametrize("view", [0, 1, 2, 3])
@pytest.mark.parametrize("programs", [1, 3])
def test_a_view_of_a_stored_value_outlives_a_rewrite_of_its_lanes(view, programs):
    x, y = torch.randn(programs, 8), torch.randn(programs, 8)
    out, red = torch.zeros(programs, 8), torch.zeros(programs)
    keep_a_view_then_rewrite[(programs,)](x, y, out, red, VIEW=view, BLOCK=8)
    rows_kept = 2 if view == 2 else 1
    torch.testing.assert_close(red, (x + y).sum(1) * rows_kept, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, torch.full_like(out, -1.0))
