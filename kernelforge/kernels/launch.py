"""Launch geometry shared by the LLM kernels.

Each kernel does its work item by item (a row, a token, a query block) in a jit helper,
and its entry point chooses how programs map to items with the constexpr PERSISTENT:

- On an Ascend NPU each program beyond the number of vector cores costs an extra
  start-up round, so the grid is one program per vector core and each program walks
  items `range(program_id(0), n_work, num_programs(0))` (PERSISTENT=True).
- Elsewhere the grid is one program per item (PERSISTENT=False): a GPU schedules them
  itself, and the CPU backend runs all programs of a grid at once as one batch, where
  an item index that is `program_id(0)` itself keeps loads affine in the program id,
  so they become strided views instead of gathers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernelforge.backends import num_cores, select_backend_name
from kernelforge.backends.cpu import c_build


def persistent(device: torch.device) -> bool:
    """Whether kernels on `device` loop over their work items in a core-sized grid."""
    return device.type == "npu"


def grid_size(n_work: int, device: torch.device) -> int:
    """How many programs to launch for `n_work` work items on `device`."""
    if persistent(device):
        return max(1, min(n_work, num_cores("vector", device)))
    return max(1, n_work)


def on_cpu_backend(device: torch.device) -> bool:
    """Whether launches on `device` go to the grid-vectorised CPU backend."""
    return select_backend_name(device) == "cpu"


def on_native_cpu(device: torch.device) -> bool:
    """Whether dot-free kernels launched on `device` run as compiled C (the CPU backend's
    native tier): program by program, where lanes past the data cost as much as real
    ones, so small blocks that waste none win."""
    return on_cpu_backend(device) and c_build.enabled()


def flat_view(t: Tensor) -> Tensor:
    """A contiguous 1-D view of the storage span `t` addresses, starting at its first element.

    Kernels index strided tensors (a query sliced out of a fused QKV projection, rows of a
    larger buffer) through explicit stride arguments; the launcher only needs the base
    pointer, and a contiguous view of the same memory gives it without a copy.
    """
    if t.is_contiguous():
        return t
    span = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()) if size > 0)
    return t.as_strided((span if t.numel() else 0,), (1,))
