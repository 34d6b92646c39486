"""Which backend and device a launch runs on: half of every cache entry's identity."""

from __future__ import annotations

import functools

import torch

from kernelforge.autotuning import Launch
from kernelforge.backends import get_backend, select_backend_name


@functools.lru_cache(maxsize=None)
def _device_name(backend: str) -> str:
    return get_backend(backend).device_name()


def launch_target(launch: Launch) -> tuple[str, str]:
    """(backend name, device name) for `launch`, following the launcher's selection rules
    (`kf.backend(...)`, `KF_BACKEND`, then the tensors' device)."""
    device: torch.device | None = launch.device()
    backend = select_backend_name(device)
    return backend, _device_name(backend)
