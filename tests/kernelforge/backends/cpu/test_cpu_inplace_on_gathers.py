"""A row gather's result is a private copy, so an elementwise op that is its only reader
overwrites it (`fusion.find_inplace`'s `private`); a gathered tile read again, or a tile
loaded as a strided view of the argument, is never overwritten."""

from __future__ import annotations

import re

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import CPUBackend
from kernelforge.backends.cpu.codegen import generate


@kf.jit
def scaled_tiles(out_ptr, x_ptr, idx_ptr, s, MODE: kl.constexpr, R: kl.constexpr, D: kl.constexpr):
    r = kl.arange(0, R)
    c = kl.arange(0, D)
    block = kl.program_id(0) * R * D + r[:, None] * D + c[None, :]
    if MODE == 2:  # a strided view of x
        tile = kl.load(x_ptr + block)
    else:  # a row gather: rows idx[r] of x
        idx = kl.load(idx_ptr + kl.program_id(0) * R + r)
        tile = kl.load(x_ptr + idx[:, None] * D + c[None, :])
    y = tile * s
    if MODE == 1:  # the gathered tile is read again
        y = y + tile
    kl.store(out_ptr + block, y + 1.0)


def _run(mode: int):
    g = torch.Generator().manual_seed(mode)
    x = torch.randn(12, 8, generator=g)
    idx = torch.randint(0, 12, (3, 4), generator=g, dtype=torch.int32)
    out = torch.empty(3, 4, 8)
    args = [out, x.clone(), idx, 0.5]
    source = generate(scaled_tiles.specialize(args, {"MODE": mode, "R": 4, "D": 8}))
    CPUBackend().load(source, f"scaled-tiles-{mode}")((3, 1, 1), args)
    tile = x[:12].view(3, 4, 8) if mode == 2 else x[idx.long()]
    expected = tile * 0.5 + (tile if mode == 1 else 0) + 1.0
    torch.testing.assert_close(out, expected)
    assert torch.equal(args[1], x)  # the argument is never written
    return source


@pytest.mark.parametrize("mode,inplace", [(0, True), (1, False), (2, False)])
def test_only_a_gathered_tile_read_once_is_scaled_in_place(mode, inplace):
    source = _run(mode)
    assert bool(re.search(r"torch\.mul\((\w+), [^)]*out=\1\)", source)) == inplace
