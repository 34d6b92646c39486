"""Two pointer arguments that are one tensor (`aliasing.py`): a value loaded before a
store through the other argument keeps its value; distinct tensors copy nothing."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def add_then_use_old(x_ptr, y_ptr, out_ptr, n, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    mask = cols < n
    offs = kl.program_id(0) * n + cols
    x = kl.load(x_ptr + offs, mask=mask, other=0.0)
    s = x + kl.load(y_ptr + offs, mask=mask, other=0.0)
    kl.store(out_ptr + offs, s, mask=mask)
    kl.store(y_ptr + offs, s * x, mask=mask)  # x as loaded, before `out` (maybe x) was written


@kf.jit
def scalar_then_overwrite(x_ptr, out_ptr, BLOCK: kl.constexpr):
    first = kl.load(x_ptr)  # a uniform scalar load: a 0-d view
    kl.store(out_ptr + kl.arange(0, BLOCK), kl.zeros([BLOCK], dtype=kl.float32) + 5.0)
    kl.store(out_ptr + BLOCK + kl.program_id(0), first)


@kf.jit
def carried_view(x_ptr, out_ptr, K, BLOCK: kl.constexpr):
    cols = kl.arange(0, BLOCK)
    prev = kl.zeros([BLOCK], dtype=kl.float32)
    for k in range(K):
        kl.store(out_ptr + (K + k) * BLOCK + cols, prev + 0.0)
        prev = kl.load(x_ptr + k * BLOCK + cols)  # read in the next iteration, after the store below
        kl.store(out_ptr + k * BLOCK + cols, kl.zeros([BLOCK], dtype=kl.float32) - 1.0)


@pytest.mark.parametrize("programs", [1, 3])
@pytest.mark.parametrize("n", [8, 5])
@pytest.mark.parametrize("backend", ["cpu", "interpret"])
def test_a_loaded_value_survives_a_store_through_an_aliasing_argument(programs, n, backend):
    x, y = torch.randn(programs * n), torch.randn(programs * n)
    expected_out, expected_y = x + y, (x + y) * x
    with kf.backend(backend):
        add_then_use_old[(programs,)](x, y, x, n, BLOCK=8)  # out is x
    torch.testing.assert_close(x, expected_out)
    torch.testing.assert_close(y, expected_y)


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
def test_a_uniform_scalar_load_survives_a_store_through_an_aliasing_argument(backend):
    buf = torch.arange(10, dtype=torch.float32)
    with kf.backend(backend):
        scalar_then_overwrite[(1,)](buf, buf, BLOCK=8)
    torch.testing.assert_close(buf, torch.tensor([5.0] * 8 + [0.0, 9.0]))


@pytest.mark.parametrize("backend", ["cpu", "interpret"])
def test_a_carried_load_survives_a_store_through_an_aliasing_argument(backend):
    x = torch.randn(2 * 3 * 8)
    expected = torch.cat([torch.full((24,), -1.0), torch.zeros(8), x[:16]])
    with kf.backend(backend):
        carried_view[(1,)](x, x, 3, BLOCK=8)
    torch.testing.assert_close(x, expected)


def test_distinct_arguments_compare_storages_once_and_copy_nothing():
    src = add_then_use_old.source("cpu", x_ptr="*fp32", y_ptr="*fp32", out_ptr="*fp32", n="i32", BLOCK=8)
    assert src.count(".untyped_storage()") == 3  # x, out and y: both are written while x is read
    assert "x_ptr_shared = x_ptr_storage == out_ptr_storage or x_ptr_storage == y_ptr_storage" in src
    assert src.count("copy=x_ptr_shared") == 1
    x, y, out = torch.randn(8), torch.randn(8), torch.empty(8)
    expected = x + y
    add_then_use_old[(1,)](x, y, out, 8, BLOCK=8)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(y, expected * x)
