"""Broadcasts that torch's own broadcasting makes redundant (`fusion.find_free_broadcasts`)
are emitted as their source; every other broadcast still expands. Each kernel runs as
generated with and without peepholes on the same inputs."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import CPUBackend
from kernelforge.backends.cpu.codegen import generate


@kf.jit
def scale_rows(out_ptr, x_ptr, w_ptr, s_ptr, rows, MODE: kl.constexpr, R: kl.constexpr, C: kl.constexpr):
    r = kl.arange(0, R)
    c = kl.arange(0, C)
    mask = kl.broadcast_to((r < rows)[:, None], (R, C))
    base = kl.program_id(0) * rows * C
    x = kl.load(x_ptr + base + r[:, None] * C + c[None, :], mask=mask, other=0.0)
    w = kl.load(w_ptr + c)
    s = kl.load(s_ptr + kl.program_id(0))
    if MODE == 0:  # a uniform row and a per-program scalar, both broadcast by the op
        y = x * w[None, :] - s
    elif MODE == 1:  # both operands broadcast: the result must still be [R, C]
        y = w[None, :] + (r * 1.0)[:, None]
    else:  # a broadcast that a store reads must stay expanded
        y = kl.broadcast_to(w[None, :], (R, C))
    kl.store(out_ptr + base + r[:, None] * C + c[None, :], y, mask=mask)


def _run(mode: int, peepholes: bool, rows: int) -> tuple[torch.Tensor, str]:
    x = torch.randn(3 * rows * 8, generator=torch.Generator().manual_seed(rows))
    args = (torch.zeros(3 * rows * 8), x, torch.arange(8.0), torch.tensor([1.0, 2.0, 3.0]), rows)
    kernel = scale_rows.specialize(args, {"MODE": mode, "R": 4, "C": 8})
    source = generate(kernel, peepholes=peepholes)
    CPUBackend().load(source, f"free-broadcasts-{mode}-{peepholes}-{rows}")((3, 1, 1), list(args))
    return args[0], source


@pytest.mark.parametrize("rows", [4, 3])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_free_broadcasts_compute_what_expanded_ones_do(mode, rows):
    fast, source = _run(mode, True, rows)
    slow, plain = _run(mode, False, rows)
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)
    assert ".expand(" in plain
    if mode == 0:
        assert ".expand(" not in source
    else:
        assert ".expand(" in source
