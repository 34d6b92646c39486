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

from typing import Any

import torch
from torch import Tensor

from kernelforge.autotuning import Autotuned
from kernelforge.backends import num_cores, select_backend_name
from kernelforge.backends.cpu import c_build
from kernelforge.jit import BoundLaunch
from kernelforge.memo import BoundedMemo


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


_KEY_SCALARS = (int, float, bool, str, type(None))


def memo_key(scalars: tuple, *tensors: Tensor | None) -> tuple | None:
    """An op call's `LaunchMemo` key: its scalar arguments with their types, and what its
    metadata checks and kernel arguments read from its tensors (shape, strides, dtype,
    device; None stays None). None when an argument is neither an int, float, bool, str,
    None nor a tensor: the op's checks then name it."""
    if not all(type(v) in _KEY_SCALARS for v in scalars):
        return None
    parts: list = [tuple((type(v), v) for v in scalars)]
    for t in tensors:
        if t is None:
            parts.append(None)
        elif isinstance(t, Tensor):
            parts.append((t.shape, t.stride(), t.dtype, t.device))
        else:
            return None
    return tuple(parts)


class LaunchMemo:
    """One op's memo from its call's metadata to the kernel launch that metadata settled.

    An op's metadata checks, and its kernel's config, specialisation and grid, depend only
    on its tensors' `metadata`, its scalar arguments and the kernel's `memo_state`. So a
    call whose key (the op builds it from exactly those) was seen before skips the
    metadata checks, the autotune memo and the launcher's lookups, and runs the compiled
    launch directly: on one token a launch costs a few microseconds instead of twenty.
    Checks that read tensor contents (slots, positions) still run on every call.
    """

    def __init__(self, kernel: Autotuned) -> None:
        self._kernel = kernel
        self._launches: BoundedMemo = BoundedMemo()

    def find(self, key: tuple | None, anchor: Tensor) -> BoundLaunch | None:
        """The launch memoised for `key` (None: nothing is) on the device of `anchor`, the
        tensor whose device picks the backend; None: check the arguments and `launch`."""
        if key is None:
            return None
        state = self._kernel.memo_state(anchor.device)
        return None if state is None else self._launches.get((state, key))

    def launch(self, key: tuple | None, device: torch.device, found: BoundLaunch | None,
               grid: tuple[int, ...], args: tuple, constexprs: dict[str, Any]) -> None:
        """Run the kernel: through `found` (what `find` gave) when there is one, else the
        checked way, then memoise the launch under `key` (None: never)."""
        if found is not None and found(list(args)):
            return
        self._kernel[grid](*args, **constexprs)
        if key is None:
            return
        state = self._kernel.memo_state(device)
        bound = self._kernel.bind(args, constexprs, grid) if state is not None else None
        if bound is not None:
            self._launches[(state, key)] = bound
