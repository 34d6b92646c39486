"""Bounds checks for `KF_SANITIZE=1`: every lane a load or store really performs
(mask on, program running) must address `0 <= offset < size` of its tensor.

A violation raises `kernelforge.errors.KernelFault` naming the kernel, its source
line, the first offending offset and the tensor size, instead of silently reading
a neighbour's memory (or, for negative offsets, wrapping around as torch indexing
would).
"""

from __future__ import annotations

import torch

from kernelforge.errors import KernelFault


def check(flat_t: torch.Tensor, offs, mask, active, kernel: str, source: str) -> None:
    offs = torch.as_tensor(offs)
    if active is not None:
        mask = active if mask is None else torch.as_tensor(mask) & active
    if mask is not None:
        offs, mask = torch.broadcast_tensors(offs, torch.as_tensor(mask))
        offs = offs[mask]
    size = flat_t.numel()
    bad = (offs < 0) | (offs >= size)
    if bool(bad.any()):
        offset = int(offs[bad].reshape(-1)[0])
        raise KernelFault("out-of-bounds memory access", kernel=kernel, source=source,
                          offset=offset, size=size)
