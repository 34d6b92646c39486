"""Launch geometry shared by the LLM kernels.

Every kernel walks its work items with a persistent loop,
`for work in range(program_id(0), n_work, num_programs(0))`, so the grid size is a
free choice made here and not in the kernels:

- On an Ascend NPU each program beyond the number of vector cores costs an extra
  start-up round, so the grid is one program per vector core.
- Elsewhere the grid is one program per work item: a GPU schedules them itself, and
  the CPU backend runs all programs of a grid at once as one batch, so the loop runs a
  single iteration and every work item is one row of that batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernelforge.backends import num_cores, select_backend_name


def grid_size(n_work: int, device: torch.device) -> int:
    """How many programs to launch for `n_work` persistent work items on `device`."""
    if device.type == "npu":
        return max(1, min(n_work, num_cores("vector", device)))
    return max(1, n_work)


def on_cpu_backend(device: torch.device) -> bool:
    """Whether launches on `device` go to the grid-vectorised CPU backend."""
    return select_backend_name(device) == "cpu"


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
