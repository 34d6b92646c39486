"""A program-id stride that is 0 at run time (rows of an expanded tensor, `pid * n` with
n = 0): every program reads the same lanes, and its values keep their program axis."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def row_reduce(out_ptr, x_ptr, stride, n, USE_MAX: kl.constexpr, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    x = kl.load(x_ptr + kl.program_id(0) * stride + cols, mask=cols < n, other=0.0)
    if USE_MAX:
        kl.store(out_ptr + kl.program_id(0), kl.max(x, axis=0))
    else:
        kl.store(out_ptr + kl.program_id(0), kl.sum(x * 2.0, axis=0))


@pytest.mark.parametrize("use_max", [False, True])
@pytest.mark.parametrize("n", [10, 16])
def test_every_program_reads_the_one_row(use_max, n):
    x = torch.randn(16)
    out = torch.zeros(3)
    row_reduce[(3,)](out, x, 0, n, USE_MAX=use_max, BLOCK=16)
    padded = torch.cat([x[:n], torch.zeros(16 - n)])
    expected = padded.max() if use_max else (padded * 2).sum()
    torch.testing.assert_close(out, expected.expand(3))
