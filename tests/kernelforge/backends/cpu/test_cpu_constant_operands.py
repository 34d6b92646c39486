"""A constant beside a tensor of its type in an elementwise op is a module-level 0-d tensor
(`CodeGen.elementwise_val`), except for 16-bit floats and bools; the torch tier computes
what it computed with the Python number."""

from __future__ import annotations

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import CPUBackend
from kernelforge.backends.cpu.codegen import generate


@kf.jit
def constant_operands(out_ptr, x_ptr, FLOAT: kl.constexpr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    x = kl.load(x_ptr + offs)
    if FLOAT:
        y = kl.where(x > 0.5, x * 0.1 - 3.0, float("-inf"))
    else:
        y = kl.where(x > 5, (x >> 2) * 16 + (x & 15) - 1, -7)
    kl.store(out_ptr + offs, y)


def _expected(x: torch.Tensor) -> torch.Tensor:
    if x.dtype.is_floating_point:
        return torch.where(x > 0.5, x * 0.1 - 3.0, float("-inf"))
    return torch.where(x > 5, (x >> 2) * 16 + (x & 15) - 1, -7).to(x.dtype)


@pytest.mark.parametrize("dtype,tensors", [(torch.int32, True), (torch.int64, True), (torch.int8, True),
                                           (torch.float32, True), (torch.float16, False),
                                           (torch.bfloat16, False)])
def test_constants_beside_tensors_of_their_type(dtype, tensors):
    if dtype.is_floating_point:
        x = torch.linspace(-2, 2, 16).to(dtype)
    else:
        x = torch.arange(-8, 8, dtype=dtype) * 3
    out = torch.empty_like(x)
    source = generate(constant_operands.specialize((out, x), {"FLOAT": dtype.is_floating_point, "BLOCK": 16}))
    assert (f"torch.tensor(16, dtype=torch.{str(dtype)[6:]})" in source or
            f"torch.tensor(0.1, dtype=torch.{str(dtype)[6:]})" in source) == tensors
    CPUBackend().load(source, f"constant-operands-{dtype}")((1, 1, 1), [out, x])
    torch.testing.assert_close(out, _expected(x), rtol=0, atol=0)
