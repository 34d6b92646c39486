"""The config provider the launcher asks at every Autotuned launch.

It answers from the autotune cache and memoises the answer per (kernel, backend,
device, key), so after the first launch of a key the hot path is one dict lookup.
Untuned keys get None, so the launcher uses the kernel's heuristic default; serving
never stalls to tune unless `KF_AUTOTUNE=1` (then a missing key is tuned at its first
launch, with the `KF_AUTOTUNE_EFFORT` preset, default quick, and stored).
The memo is per process: keys tuned by another process are seen after a restart.
"""

from __future__ import annotations

import logging
import os

from kernelforge.autotuning import Autotuned, Config, Launch

from autotune.cache import AutotuneCache, library_versions
from autotune.target import launch_target
from autotune.tuner import TuneError, Tuner

log = logging.getLogger("autotune")


class CacheProvider:
    # An answer, once resolved for a key, is memoised below and never changes.
    stable = True

    def __init__(self, cache: AutotuneCache | None = None, tune_missing: bool = False,
                 effort: str = "quick") -> None:
        self.cache = cache if cache is not None else AutotuneCache()
        self.tune_missing = tune_missing
        self.effort = effort
        self._versions = library_versions()
        self._hashes: dict[int, str] = {}
        self._memo: dict[tuple, Config | None] = {}

    def get_config(self, autotuned: Autotuned, key: tuple, named_args: Launch) -> Config | None:
        backend, device = launch_target(named_args)
        memo_key = (id(autotuned), backend, device, key)
        if memo_key not in self._memo:
            self._memo[memo_key] = self._resolve(autotuned, backend, device, key, named_args)
        return self._memo[memo_key]

    def _resolve(self, autotuned: Autotuned, backend: str, device: str, key: tuple,
                 launch: Launch) -> Config | None:
        if id(autotuned) not in self._hashes:
            self._hashes[id(autotuned)] = autotuned.source_hash
        entry = self.cache.lookup(autotuned.name, self._hashes[id(autotuned)], backend, device,
                                  self._versions, key)
        candidates = [autotuned.default_config(launch), *autotuned.configs(launch)]
        best = entry.best(among=candidates) if entry is not None else None
        if best is not None:
            return best[0]
        if not self.tune_missing:
            return None
        try:
            result = Tuner(self.cache, effort=self.effort).tune(launch)
        except TuneError as exc:
            log.warning("autotune: %s; using the default config", exc)
            return None
        log.info("autotune: %s %s -> %s (%.1f us)", autotuned.name, key, result.best, result.best_time * 1e6)
        return result.best


def provider_from_env() -> CacheProvider:
    """A provider configured by `KF_AUTOTUNE` and `KF_AUTOTUNE_EFFORT`."""
    return CacheProvider(tune_missing=os.environ.get("KF_AUTOTUNE") == "1",
                         effort=os.environ.get("KF_AUTOTUNE_EFFORT", "quick"))
