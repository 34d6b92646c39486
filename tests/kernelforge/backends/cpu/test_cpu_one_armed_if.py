"""A divergent `if` without `else` (the cache write's `if slot >= 0`) runs its arm
unmasked when every program takes it, masked otherwise, and skips it when none does."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def copy_valid_rows(out_ptr, x_ptr, idx_ptr, n, BLOCK: kl.constexpr):
    row = kl.load(idx_ptr + kl.program_id(0))
    if row >= 0:
        cols = kl.arange(0, BLOCK)
        v = kl.load(x_ptr + kl.program_id(0) * n + cols, mask=cols < n)
        kl.store(out_ptr + row * n + cols, v, mask=cols < n)


def test_the_arm_is_emitted_unmasked_and_masked():
    src = copy_valid_rows.source("cpu", out_ptr="*fp32", x_ptr="*fp32", idx_ptr="*i32", n="i32", BLOCK=16)
    assert "if rt.all_true(take_then):" in src and "elif take_then.any():" in src
    assert "take_else" not in src


@pytest.mark.parametrize("idx", [[2, 0, 1], [2, -1, 0], [-1, -1, -1]])
def test_rows_with_a_negative_index_are_skipped(idx):
    x = torch.randn(3, 10)
    out = torch.full((3, 10), 7.0)
    copy_valid_rows[(3,)](out, x, torch.tensor(idx, dtype=torch.int32), 10, BLOCK=16)
    expected = torch.full((3, 10), 7.0)
    for program, row in enumerate(idx):
        if row >= 0:
            expected[row] = x[program]
    assert torch.equal(out, expected)


@kf.jit
def nested_if(out_ptr, x_ptr, idx_ptr, BLOCK: kl.constexpr):
    row = kl.load(idx_ptr + kl.program_id(0))
    cols = kl.arange(0, BLOCK)
    if row >= 0:
        v = kl.load(x_ptr + row * BLOCK + cols)
        if row < 2:
            v = v + 100.0
            kl.store(out_ptr + row * BLOCK + cols, v)
        kl.store(out_ptr + 4 * BLOCK + row * BLOCK + cols, v)


@pytest.mark.parametrize("idx", [[1, 3, 0], [-1, 3, 0]])
def test_an_if_nested_in_the_arm_sees_only_its_own_copy_of_the_arm(idx):
    """The unmasked and the masked copy of the arm each define the arm's names."""
    x = torch.randn(4, 8)
    out = torch.full((8, 8), -1.0)
    nested_if[(3,)](out, x, torch.tensor(idx, dtype=torch.int32), BLOCK=8)
    expected = torch.full((8, 8), -1.0)
    for row in (r for r in idx if r >= 0):
        v = x[row] + (100.0 if row < 2 else 0.0)
        if row < 2:
            expected[row] = v
        expected[4 + row] = v
    assert torch.equal(out, expected)
