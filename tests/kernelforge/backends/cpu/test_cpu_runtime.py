"""Run-time helpers of the CPU backend's generated code (`kernelforge.backends.cpu.runtime`)."""

from __future__ import annotations

import pytest
import torch

from kernelforge.backends.cpu import runtime as rt


@pytest.mark.parametrize("mask", [
    torch.ones(0, dtype=torch.bool),
    torch.ones(5, dtype=torch.bool),
    torch.tensor([True, False, True]),
    torch.ones(3, 1, dtype=torch.bool).expand(3, 4),
    torch.tensor([[True, True], [False, True]]).t(),
    torch.rand(7, 9, 33) > 0.01,
])
def test_all_true_agrees_with_all(mask):
    assert rt.all_true(mask) == bool(mask.all())


def test_keep_where_leaves_an_all_true_tensor_untouched_and_fills_the_rest():
    x = torch.arange(6.0).view(2, 3)
    assert rt.keep_where(x, torch.ones(2, 1, dtype=torch.bool).expand(2, 3), -1.0) is x
    cond = torch.tensor([[True], [False]]).expand(2, 3)
    torch.testing.assert_close(rt.keep_where(x.clone(), cond, float("-inf")),
                               torch.tensor([[0.0, 1.0, 2.0], [float("-inf")] * 3]))
