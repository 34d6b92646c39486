"""Per-shape autotuning for kernelforge kernels: search, benchmarking, persistent cache, CLI.

`autotune.install()` plugs the cache-backed provider into the launcher, so that every
`kf.autotune` kernel launches with its tuned config for the key (or its heuristic
default); the runtime calls it at start-up. `python -m autotune` tunes ahead of time.
"""

from __future__ import annotations

from kernelforge.autotuning import set_config_provider

from autotune.cache import AutotuneCache, Entry
from autotune.effort import EFFORTS, Effort
from autotune.provider import CacheProvider, provider_from_env
from autotune.tuner import TuneError, TuneResult, Tuner


def install(provider: CacheProvider | None = None) -> CacheProvider:
    """Install `provider` (default: from the environment, see `autotune.provider`) and return it."""
    provider = provider if provider is not None else provider_from_env()
    set_config_provider(provider)
    return provider


__all__ = ["AutotuneCache", "CacheProvider", "EFFORTS", "Effort", "Entry", "TuneError", "TuneResult",
           "Tuner", "install"]
