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
    assert "= torch.add(" not in _source(rewrite=False, dtype="fp16")  # fp16 lanes would round the fp32 sum
