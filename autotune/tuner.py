"""The tuner: time a kernel's candidate configs at one launch's key and record them.

For one `Launch` (an Autotuned kernel with real arguments) the tuner

1. looks up the cache entry for (kernel source, backend, device, library versions, key)
   and reuses every config already timed there (`force=True` re-times everything);
2. runs the kernel's default config once for reference outputs;
3. lets the effort's search algorithm pick configs; each new one is run once (compile,
   then its outputs are compared with the reference), then timed: warm-up, repeated runs
   with the mutated arguments restored between runs outside the timing, summarised by
   the device's timer (median of device events; fastest run on a shared CPU);
4. re-times the default and the fastest few head to head, interleaved, so that a
   config replaces the default only if it wins in the same rounds;
5. stores the new timings in the cache, including failures (scored as infinite).

A candidate that raises anything while compiling or running - `kf.CompilationError`,
an NPU on-chip buffer overflow, a launcher fault - or that computes a different result
is skipped with its reason recorded, never fatal. Only a failing default is an error:
without a reference there is nothing to check candidates against.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field

import torch

from kernelforge.autotuning import Config, Launch

from autotune.benchmarking import benchmark, interleaved, timer_for
from autotune.cache import AutotuneCache, Entry, library_versions
from autotune.effort import Effort, get_effort
from autotune.search import get_search
from autotune.target import launch_target

log = logging.getLogger("autotune")

# (rtol, atol) by output dtype: candidates may reduce in another order than the default.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-3, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (3e-2, 3e-2),
}


# How many of the search's fastest configs are re-timed head to head with the default.
CONFIRM_FINALISTS = 3


class TuneError(RuntimeError):
    """Tuning could not start: the default config itself fails."""


@dataclass
class TuneResult:
    kernel: str
    key: tuple
    key_fields: tuple[str, ...]
    default: Config
    default_time: float
    best: Config
    best_time: float
    timed: int                      # configs timed by this call (the rest came from the cache)
    failures: dict[str, str] = field(default_factory=dict)


class _Runner:
    """Runs one launch with any config on private copies of the arguments it mutates."""

    def __init__(self, launch: Launch, effort: Effort) -> None:
        autotuned = launch.autotuned
        tensors = {n: v for n, v in launch.items() if isinstance(v, torch.Tensor)}
        compared = tensors if autotuned.outputs is None else autotuned.outputs
        self.compared = [n for n in compared if n in tensors]
        mutated = [n for n in dict.fromkeys([*self.compared, *autotuned.restore_value]) if n in tensors]
        self.pristine = {n: tensors[n].clone() for n in mutated}
        self.work = {n: t.clone() for n, t in self.pristine.items()}
        self.launch = launch.replace(**self.work)
        self.effort = effort
        self.timer = timer_for(launch.device())
        self.reference: dict[str, torch.Tensor] | None = None

    def restore(self) -> None:
        for name, tensor in self.work.items():
            tensor.copy_(self.pristine[name])

    def run_once(self, config: Config) -> dict[str, torch.Tensor]:
        self.restore()
        self.launch.run(config)
        return {n: self.work[n].clone() for n in self.compared}

    def set_reference(self, default: Config) -> None:
        try:
            self.reference = self.run_once(default)
        except Exception as exc:
            raise TuneError(f"{self.launch.autotuned.name}: the default config {default} fails: "
                            f"{_reason(exc)}") from exc

    def check(self, config: Config) -> str | None:
        """Why `config` is unusable (it raises, or its outputs differ from the reference), or None."""
        try:
            mismatch = self._mismatch(self.run_once(config))
        except Exception as exc:
            return _reason(exc)
        return None if mismatch is None else f"wrong output: {mismatch}"

    def measure(self, config: Config) -> tuple[float, str | None]:
        """(seconds, None), or (inf, reason) when the config fails or is wrong."""
        failure = self.check(config)
        if failure is not None:
            return math.inf, failure
        try:
            samples = benchmark(lambda: self.launch.run(config), self.timer, setup=self.restore,
                                warmup=max(0, self.effort.warmup - 1), reps=self.effort.reps,
                                max_seconds=self.effort.per_config_s)
        except Exception as exc:
            return math.inf, _reason(exc)
        return self.timer.summarize(samples), None

    def head_to_head(self, configs: list[Config]) -> dict[Config, float]:
        """Seconds of `configs` (all known to pass `check`) timed interleaved, round by round."""
        samples = interleaved({c: functools.partial(self.launch.run, c) for c in configs}, self.timer,
                              setup=self.restore, warmup=self.effort.warmup, reps=self.effort.reps,
                              max_seconds=self.effort.per_config_s * max(1, len(configs)))
        return {c: self.timer.summarize(s) for c, s in samples.items()}

    def _mismatch(self, outputs: dict[str, torch.Tensor]) -> str | None:
        """Why `outputs` differ from the reference beyond the dtype's tolerance, or None."""
        assert self.reference is not None
        for name, got in outputs.items():
            expected = self.reference[name]
            rtol, atol = TOLERANCES.get(expected.dtype, (0.0, 0.0))
            try:
                torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, equal_nan=True)
            except AssertionError as exc:
                return f"{name}: {' '.join(str(exc).split())[:200]}"
        return None


def _reason(exc: BaseException) -> str:
    """The exception as one line (a CompilationError's message follows its source excerpt)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:400]


class Tuner:
    """Tunes launches into `cache` with an effort preset (see `autotune.effort`)."""

    def __init__(self, cache: AutotuneCache | None = None, effort: str | Effort = "quick",
                 budget_s: float | None = None, search: str | None = None,
                 force: bool = False, seed: int = 0) -> None:
        self.cache = cache if cache is not None else AutotuneCache()
        effort = get_effort(effort) if isinstance(effort, str) else effort
        self.effort = effort.with_budget(budget_s)
        self.search = search or effort.search
        if self.search is not None:
            get_search(self.search)  # fail on a bad name before any timing
        self.force = force
        self.seed = seed

    def measure(self, launch: Launch, configs: list[Config]) -> dict[Config, float]:
        """Seconds of `configs` timed afresh and interleaved (not cached; inf for a
        config that fails or disagrees with the default): for reports that must not reuse
        the noisy timings a search picked its winner by."""
        runner = _Runner(launch, self.effort)
        runner.set_reference(launch.autotuned.default_config(launch))
        valid = [config for config in dict.fromkeys(configs) if runner.check(config) is None]
        return {config: math.inf for config in configs} | runner.head_to_head(valid)

    def _confirm(self, runner: _Runner, entry: Entry, fresh: Entry, default: Config,
                 candidates: list[Config]) -> None:
        """Re-time the default and the fastest few configs head to head, and keep those times.

        The search timed configs one after another, so load that changed in between (a
        shared machine) can crown a config that is not faster; timing the finalists
        interleaved makes the default lose only to a config that beats it in the same rounds.
        Runs only when this call's timing crowned a new winner over the default, so a key
        whose winner is unchanged (e.g. one config added, and slower) re-times nothing more.
        """
        best = entry.best(among=candidates)
        if best is None or best[0] == default or best[0].to_json() not in fresh.timings:
            return
        if not math.isfinite(entry.time_of(default) or math.inf):
            return
        timed = sorted((t, i) for i, c in enumerate(candidates)
                       if (t := entry.time_of(c)) is not None and math.isfinite(t))
        finalists = list(dict.fromkeys([default, *(candidates[i] for _, i in timed[:CONFIRM_FINALISTS])]))
        for config, seconds in runner.head_to_head(finalists).items():
            entry.set_time(config, seconds)
            fresh.set_time(config, seconds)

    def entry_for(self, launch: Launch) -> Entry:
        """The cached entry for this launch's key, or a new empty one."""
        autotuned = launch.autotuned
        backend, device = launch_target(launch)
        ident = (autotuned.name, autotuned.source_hash, backend, device, library_versions(), launch.key)
        cached = None if self.force else self.cache.lookup(*ident)
        return cached or Entry(*ident, key_fields=autotuned.key_fields)

    def tune(self, launch: Launch) -> TuneResult:
        autotuned = launch.autotuned
        entry = self.entry_for(launch)
        fresh = Entry(entry.kernel, entry.source_hash, entry.backend, entry.device, entry.versions,
                      entry.key, entry.key_fields)
        default = autotuned.default_config(launch)
        candidates = list(dict.fromkeys([default, *autotuned.configs(launch)]))
        runner: _Runner | None = None  # copies the arguments: only made once something needs timing
        deadline = time.monotonic() + self.effort.budget_s

        def evaluate(config: Config) -> float:
            nonlocal runner
            known = entry.time_of(config)
            if known is not None:
                return known
            if runner is None:
                runner = _Runner(launch, self.effort)
                runner.set_reference(default)
            seconds, failure = runner.measure(config)
            log.debug("%s %s %s: %s", autotuned.name, entry.key, config, failure or f"{seconds * 1e6:.1f} us")
            entry.set_time(config, seconds, failure)
            fresh.set_time(config, seconds, failure)
            return seconds

        try:
            if self.search is None:
                evaluate(default)
            else:
                algorithm = get_search(self.search)(candidates, default, seed=self.seed)
                algorithm.run(evaluate, lambda: time.monotonic() > deadline)
                if runner is not None:
                    self._confirm(runner, entry, fresh, default, candidates)
        finally:
            if fresh.timings:
                self.cache.store([fresh])
        best = entry.best(among=candidates)
        if best is None:
            raise TuneError(f"{autotuned.name}: no config succeeded at key {entry.key}")
        default_time = entry.time_of(default)
        return TuneResult(autotuned.name, entry.key, entry.key_fields, default,
                          math.inf if default_time is None else default_time, best[0], best[1],
                          len(fresh.timings), dict(entry.failures))
