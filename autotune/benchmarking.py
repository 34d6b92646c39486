"""Per-backend timers and the benchmark loop the tuner times candidates with.

Each timed run is timed on its own, so that state the kernel mutates can be restored
between runs *outside* the measured interval. Devices are synchronised around every
run. On CUDA (and NPU) the L2 cache is flushed before each run by writing a buffer larger
than L2, so that a config is not flattered by data left warm by the previous run; CPU
caches are left alone (serving shapes are small and stay cache-resident anyway).
"""

from __future__ import annotations

import statistics
import time
from abc import ABC, abstractmethod
from typing import Callable, Hashable, Mapping, TypeVar

import torch

K = TypeVar("K", bound=Hashable)
_FLUSH_BYTES = 256 * 1024 * 1024  # larger than the L2 of any current GPU / NPU


class Timer(ABC):
    """Times one call of `fn` on one device, in seconds, and summarises repeated samples."""

    @abstractmethod
    def time_once(self, fn: Callable[[], object]) -> float: ...

    def summarize(self, samples: list[float]) -> float:
        """The median: robust to the odd slow run."""
        return statistics.median(samples)


class CPUTimer(Timer):
    def time_once(self, fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def summarize(self, samples: list[float]) -> float:
        """The fastest run. On a CPU the kernel shares cores with other processes and noise
        only ever adds time: on a loaded machine most runs are preempted (we measured
        medians 100x the minimum), so the median ranks the scheduler, the minimum the kernel."""
        return min(samples)


class _EventTimer(Timer):
    """Device events recorded around the call; the device module (`torch.cuda`,
    `torch.npu`) supplies Event and synchronize."""

    def __init__(self, device: torch.device, module: object) -> None:
        self.module = module
        self.flush_buffer = torch.empty(_FLUSH_BYTES // 4, dtype=torch.int32, device=device)

    def time_once(self, fn: Callable[[], object]) -> float:
        self.flush_buffer.zero_()
        start = self.module.Event(enable_timing=True)
        end = self.module.Event(enable_timing=True)
        self.module.synchronize()
        start.record()
        fn()
        end.record()
        self.module.synchronize()
        return start.elapsed_time(end) / 1e3


def timer_for(device: torch.device | None) -> Timer:
    """The timer for a launch on `device` (None: no tensors, time on the host)."""
    if device is None or device.type == "cpu":
        return CPUTimer()
    if device.type == "cuda":
        return _EventTimer(device, torch.cuda)
    if device.type == "npu":
        import torch_npu  # noqa: F401  registers torch.npu

        return _EventTimer(device, torch.npu)
    raise ValueError(f"no timer for device type {device.type!r}")


def benchmark(
    fn: Callable[[], object],
    timer: Timer,
    *,
    setup: Callable[[], object] | None = None,
    warmup: int = 2,
    reps: int = 10,
    max_seconds: float | None = None,
) -> list[float]:
    """Warm up, then time `reps` runs (fewer if `max_seconds` of timed runs is spent, but
    at least three); `setup` runs before each run, untimed. Returns the samples."""
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    samples: list[float] = []
    spent = 0.0
    for _ in range(max(1, reps)):
        if setup is not None:
            setup()
        samples.append(timer.time_once(fn))
        spent += samples[-1]
        if max_seconds is not None and spent > max_seconds and len(samples) >= 3:
            break
    return samples


def interleaved(
    fns: Mapping[K, Callable[[], object]],
    timer: Timer,
    *,
    setup: Callable[[], object] | None = None,
    warmup: int = 2,
    reps: int = 10,
    max_seconds: float | None = None,
) -> dict[K, list[float]]:
    """Time several functions in rounds, one run of each per round, so that load drifting on
    a shared machine during the measurement slows them all alike; for head-to-head reports.
    Stops after `reps` rounds or, past three rounds, once `max_seconds` of timed runs is spent."""
    for _ in range(warmup):
        for fn in fns.values():
            if setup is not None:
                setup()
            fn()
    samples: dict[K, list[float]] = {k: [] for k in fns}
    spent = 0.0
    for round_ in range(max(1, reps)):
        for k, fn in fns.items():
            if setup is not None:
                setup()
            samples[k].append(timer.time_once(fn))
            spent += samples[k][-1]
        if max_seconds is not None and spent > max_seconds and round_ >= 2:
            break
    return samples
