"""A dot whose acc operand is a fresh temporary read only by it accumulates into that
temporary in place (`fusion.find_dots_into_temporaries`); a temporary read again, or a
loaded tile (a view of an argument), stays out of place and keeps its value."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu.codegen import generate


@kf.jit
def rescaled_dot_kernel(a_ptr, b_ptr, s_ptr, c_ptr, out_ptr, kept_ptr, steps, MODE: kl.constexpr,
                        N: kl.constexpr):
    r = kl.arange(0, N)
    tile = kl.program_id(0) * N * N + r[:, None] * N + r[None, :]
    acc = kl.zeros((N, N), dtype=kl.float32)
    kept = acc
    for i in range(0, steps):
        a = kl.load(a_ptr + tile)
        b = kl.load(b_ptr + tile)
        s = kl.load(s_ptr + kl.program_id(0) * steps + i)
        if MODE == 0:  # the online-softmax rescale: a temporary only the dot reads
            acc = kl.dot(a, b, acc * s)
        elif MODE == 1:  # the temporary is read again after the dot
            t = acc * s
            acc = kl.dot(a, b, t)
            kept = t
        else:  # a loaded tile: a view of c, which must stay intact
            acc = kl.dot(a, b, kl.load(c_ptr + tile))
    kl.store(out_ptr + tile, acc)
    kl.store(kept_ptr + tile, kept)


def _inputs(dtype: torch.dtype, steps: int):
    g = torch.Generator().manual_seed(steps)
    a = torch.randn(2, 16, 16, generator=g).to(dtype)
    b = torch.randn(2, 16, 16, generator=g).to(dtype)
    s = torch.rand(2, steps, generator=g) + 0.5
    c = torch.randn(2, 16, 16, generator=g)
    return a, b, s, c


def _expected(mode: int, a, b, s, c, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    prod = a.float() @ b.float()
    acc, kept = torch.zeros(2, 16, 16), torch.zeros(2, 16, 16)
    for i in range(steps):
        if mode == 2:
            acc = c + prod
            continue
        rescaled = acc * s[:, i, None, None]
        acc = rescaled + prod
        if mode == 1:
            kept = rescaled
    return acc, kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_dot_into_temporary_computes_the_out_of_place_result(mode, steps, dtype):
    a, b, s, c = _inputs(dtype, steps)
    c_before = c.clone()
    out, kept = torch.empty(2, 16, 16), torch.empty(2, 16, 16)
    rescaled_dot_kernel[(2,)](a, b, s, c, out, kept, steps, MODE=mode, N=16)
    want_out, want_kept = _expected(mode, a, b, s, c, steps)
    torch.testing.assert_close(out, want_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(kept, want_kept, rtol=1e-4, atol=1e-4)
    assert torch.equal(c, c_before)


@pytest.mark.parametrize("mode,inplace", [(0, True), (1, False), (2, False)])
def test_only_a_temporary_read_by_the_dot_alone_is_overwritten(mode, inplace):
    a, b, s, c = _inputs(torch.float32, 2)
    args = (a, b, s, c, torch.empty(2, 16, 16), torch.empty(2, 16, 16), 2)
    source = generate(rescaled_dot_kernel.specialize(args, {"MODE": mode, "N": 16}))
    assert ("inplace=True" in source) == inplace
