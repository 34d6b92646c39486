"""Row gathers of the CPU backend (`rows.load_rows`): masks per row, programs that are not
executing, and rows that leave the tensor."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import rows
from kernelforge.backends.cpu.runtime import Programs

ROW = (0, (0, 0, 0), (0, 1))  # affine part of `start[:, None] + arange(L)[None, :]`


def load(t: torch.Tensor, starts: list[list[int]], length: int, *, masks=(), active=None, other=-1.0):
    """`t[start : start + length]` for every start of every program, as load_rows reads it."""
    starts_t = torch.tensor(starts, dtype=torch.int64)
    P = Programs((starts_t.shape[0], 1, 1))
    return rows.load_rows(t, P, ROW, (starts_t.shape[1], length), 1, True, dyn=((starts_t, 1, (0,), True),),
                          masks=masks, other=other, active=active)


def test_masked_rows_read_other():
    t = torch.arange(40.0)
    keep = torch.tensor([[True, False], [False, True]])
    got = load(t, [[0, 8], [16, 24]], 4, masks=((keep, 1, (0,), True),))
    want = torch.tensor([[[0.0, 1, 2, 3], [-1, -1, -1, -1]], [[-1, -1, -1, -1], [24, 25, 26, 27]]])
    torch.testing.assert_close(got, want)


def test_rows_of_programs_not_executing_are_never_read():
    """Program 1 is not executing: its row start lies past the end, which must not fault;
    its values are unspecified (predication drops them), program 0's are exact."""
    t = torch.arange(40.0)
    got = load(t, [[4, 12], [1000, -50]], 4, active=torch.tensor([True, False]))
    torch.testing.assert_close(got[0], torch.tensor([[4.0, 5, 6, 7], [12, 13, 14, 15]]))
    assert got.shape == (2, 2, 4)


def test_row_masks_still_apply_to_executing_programs():
    t = torch.arange(40.0)
    keep = torch.tensor([[True, False], [True, True]])
    got = load(t, [[0, 500], [8, 12]], 4, masks=((keep, 1, (0,), True),), active=torch.tensor([True, False]))
    torch.testing.assert_close(got[0], torch.tensor([[0.0, 1, 2, 3], [-1, -1, -1, -1]]))


@pytest.mark.parametrize("start", [37, -4, 1000])
def test_an_unmasked_row_leaving_the_tensor_is_an_index_error(start):
    with pytest.raises(IndexError):
        load(torch.arange(40.0), [[0, start]], 4)


@kf.jit
def gather_rows_kernel(src_ptr, dst_ptr, rows_ptr, D: kl.constexpr):
    row = kl.load(rows_ptr + kl.program_id(0)).to(kl.int64)
    cols = kl.arange(0, D)
    kl.store(dst_ptr + kl.program_id(0) * D + cols, kl.load(src_ptr + row * D + cols))


def test_row_gather_past_the_end_is_reported():
    src, dst = torch.randn(4, 8), torch.zeros(2, 8)
    assert "rows.load_rows" in gather_rows_kernel.source("cpu", src_ptr="*fp32", dst_ptr="*fp32",
                                                         rows_ptr="*i32", D=8)
    with kf.backend("cpu"):
        gather_rows_kernel[(2,)](src, dst, torch.tensor([1, 3], dtype=torch.int32), D=8)
        torch.testing.assert_close(dst, src[[1, 3]])
        with pytest.raises(kf.KernelFault, match="out-of-bounds memory access"):
            gather_rows_kernel[(2,)](src, dst, torch.tensor([1, 4], dtype=torch.int32), D=8)


@pytest.mark.parametrize(("base", "coef"), [(0, 1), (2, 1), (0, 4), (3, 2)])
def test_row_starts_add_the_affine_base_and_scaled_terms(base, coef):
    t = torch.arange(100.0)
    starts = torch.tensor([[1, 5], [9, 0]], dtype=torch.int32)
    P = Programs((2, 1, 1))
    got = rows.load_rows(t, P, (base, (0, 0, 0), (0, 1)), (2, 3), 1, True, dyn=((starts, coef, (0,), True),))
    first = (base + coef * starts.long())[..., None]
    torch.testing.assert_close(got, (first + torch.arange(3)).float())


def test_a_constant_row_term_with_no_affine_part():
    P = Programs((2, 1, 1))
    got = rows.load_rows(torch.arange(20.0), P, (0, (0, 0, 0), (0, 1)), (1, 4), 1, True, dyn=((6, 1, (0,), True),))
    torch.testing.assert_close(got, torch.tensor([[[6.0, 7, 8, 9]], [[6.0, 7, 8, 9]]]))
