"""autotune.tuner: timing, skipping bad candidates, reuse of cached per-config timings."""

from __future__ import annotations

import math

import pytest
import torch

from autotune import AutotuneCache, Tuner, TuneError
from autotune.benchmarking import CPUTimer, benchmark, interleaved
from kernelforge import autotuning
from kernelforge.autotuning import Config
from kernelforge.backends.npu_rules import NPUResourceError
from kernelforge.errors import CompilationError


def test_tune_times_every_config_and_records_them(fake_target, make_scale, capture_one):
    jit, at = make_scale(configs=(16, 32, 64))
    launch = capture_one(at)
    result = Tuner(effort="quick", search="exhaustive").tune(launch)
    assert result.timed == 3 and result.key == (128, "float32", "")
    assert result.best in {Config(BLOCK=b) for b in (16, 32, 64)} and 0 < result.best_time < math.inf
    assert result.default == Config(BLOCK=16) and result.default_time < math.inf
    entry = AutotuneCache().lookup("scale_kernel", "fake-v1", "cpu", "test-cpu", *_ident(launch))
    assert {Config.from_json(k)["BLOCK"] for k in entry.timings} == {16, 32, 64}


def _ident(launch):
    from autotune.cache import library_versions
    return library_versions(), launch.key


def _retune_with_config_64_added(make_sleepy, capture_one, costs):
    """Tune BLOCK 16/32 (16 is the default), then tune again with 64 added; returns the
    second result and the BLOCKs the second tuning ran, in order."""
    _, at = make_sleepy(lambda b, n: costs[b], configs=(16, 32))
    Tuner(search="exhaustive").tune(capture_one(at))
    jit2, at2 = make_sleepy(lambda b, n: costs[b], configs=(16, 32, 64))
    launch = capture_one(at2)
    before = len(jit2.calls)
    result = Tuner(search="exhaustive").tune(launch)
    return result, [c["BLOCK"] for c in jit2.calls[before:]]


def test_adding_one_config_re_times_only_that_config(fake_target, make_sleepy, capture_one):
    result, blocks = _retune_with_config_64_added(make_sleepy, capture_one, {16: 0.001, 32: 0.002, 64: 0.004})
    assert result.timed == 1 and result.best == Config(BLOCK=16)
    assert blocks[0] == 16 and set(blocks[1:]) == {64}  # one reference run of the default, then 64 only


def test_a_new_winner_is_confirmed_head_to_head_with_the_default(fake_target, make_sleepy, capture_one):
    result, blocks = _retune_with_config_64_added(make_sleepy, capture_one, {16: 0.003, 32: 0.004, 64: 0.0005})
    assert result.best == Config(BLOCK=64)
    rounds = blocks[blocks.index(16, 1):]  # after the reference run and 64's own timing
    assert rounds[:6] == [16, 64, 32] * 2  # finalists interleaved, the default first


def test_a_winner_that_loses_head_to_head_does_not_replace_the_default(fake_target, make_sleepy, capture_one):
    # BLOCK=32 is fast while the search times it, then slow: a load spike that flattered it
    _, at = make_sleepy(lambda b, n: 0.002 if b == 16 else (0.0005 if n <= 12 else 0.004))
    result = Tuner(search="exhaustive").tune(capture_one(at))
    assert result.best == Config(BLOCK=16)
    assert result.best_time < AutotuneCache().entries()[0].time_of(Config(BLOCK=32))


def test_fully_cached_key_runs_nothing(fake_target, make_scale, capture_one):
    _, at = make_scale()
    Tuner(search="exhaustive").tune(capture_one(at))
    jit2, at2 = make_scale()
    launch = capture_one(at2)
    before = len(jit2.calls)
    assert Tuner(search="exhaustive").tune(launch).timed == 0
    assert len(jit2.calls) == before


def test_changing_the_kernel_source_invalidates_its_timings(fake_target, make_scale, capture_one):
    _, at = make_scale(source_hash="v1")
    Tuner(search="exhaustive").tune(capture_one(at))
    _, at2 = make_scale(source_hash="v2")
    assert Tuner(search="exhaustive").tune(capture_one(at2)).timed == 2


def test_force_re_times_everything(fake_target, make_scale, capture_one):
    _, at = make_scale()
    Tuner(search="exhaustive").tune(capture_one(at))
    assert Tuner(search="exhaustive", force=True).tune(capture_one(at)).timed == 2


def test_failing_and_wrong_candidates_are_skipped(fake_target, make_scale, capture_one):
    jit, at = make_scale(configs=(16, 3, 7, 32))
    result = Tuner(search="exhaustive").tune(capture_one(at))
    assert result.best in (Config(BLOCK=16), Config(BLOCK=32))
    assert "does not compile" in result.failures[Config(BLOCK=3).to_json()]
    assert result.failures[Config(BLOCK=7).to_json()].startswith("wrong output: out")
    # the failures are cached too: a second run retries neither
    assert Tuner(search="exhaustive").tune(capture_one(at)).timed == 0


@pytest.mark.parametrize("error", [CompilationError, NPUResourceError])
def test_compilation_error_scores_infinite(fake_target, fake_jit, capture_one, error):
    def kernel(out, x, n, BLOCK):
        if BLOCK > 16:
            raise error("BLOCK too large", kernel="kernel", file="k.py", line=3)
        out.copy_(x * 2)

    at = autotuning.autotune(configs=[Config(BLOCK=16), Config(BLOCK=32)], key=["n"])(fake_jit(kernel))
    result = Tuner(search="exhaustive").tune(capture_one(at))
    assert result.best == Config(BLOCK=16)
    assert result.failures[Config(BLOCK=32).to_json()].startswith(error.__name__)


def test_failing_default_is_a_tune_error(fake_target, make_scale, capture_one):
    _, at = make_scale(configs=(3, 16))
    with autotuning.forced_config(at, Config(BLOCK=16)):
        launch = capture_one(at)
    with pytest.raises(TuneError, match="default config"):
        Tuner().tune(launch)


def test_in_place_arguments_are_restored_before_every_run(fake_target, fake_jit):
    runs = []

    def accumulate(acc, x, n, BLOCK):
        runs.append(acc.clone())
        acc += x

    at = autotuning.autotune(configs=[Config(BLOCK=1), Config(BLOCK=2)], key=["n"], outputs=["acc"])(
        fake_jit(accumulate))
    acc, x = torch.zeros(4), torch.ones(4)
    with autotuning.capture_launches() as launches:
        at[(1,)](acc, x, 4)
    result = Tuner(search="exhaustive").tune(launches[0])
    assert result.failures == {}
    assert all(torch.equal(r, torch.ones(4)) for r in runs[1:])  # the pre-tuning state every time
    assert torch.equal(acc, torch.ones(4))  # the caller's tensors are untouched by tuning


def test_budget_stops_the_search_after_the_default(fake_target, make_scale, capture_one):
    _, at = make_scale(configs=(16, 32, 64, 128))
    result = Tuner(search="exhaustive", budget_s=0.0).tune(capture_one(at))
    assert result.timed == 1 and result.best == Config(BLOCK=16)


def test_effort_none_times_only_the_default(fake_target, make_scale, capture_one):
    _, at = make_scale(configs=(16, 32, 64))
    assert Tuner(effort="none").tune(capture_one(at)).timed == 1


def test_unknown_effort_or_search_is_rejected():
    with pytest.raises(ValueError, match="effort"):
        Tuner(effort="max")
    with pytest.raises(ValueError, match="search"):
        Tuner(search="genetic")


def test_benchmark_runs_setup_untimed_and_caps_time():
    log = []
    samples = benchmark(lambda: log.append("run"), CPUTimer(), setup=lambda: log.append("setup"),
                        warmup=2, reps=5)
    assert len(samples) == 5 and log == ["setup", "run"] * 7
    assert len(benchmark(lambda: sum(range(10000)), CPUTimer(), reps=1000, max_seconds=0.0)) == 3


def test_interleaved_alternates_and_caps_time():
    log = []
    samples = interleaved({"a": lambda: log.append("a"), "b": lambda: log.append("b")}, CPUTimer(),
                          warmup=1, reps=3)
    assert log == ["a", "b"] * 4 and {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3}
    capped = interleaved({"a": lambda: sum(range(10000))}, CPUTimer(), reps=1000, max_seconds=0.0)
    assert len(capped["a"]) == 3


def test_measure_times_afresh_and_scores_bad_configs_infinite(fake_target, make_scale, capture_one):
    jit, at = make_scale(configs=(16, 3, 7, 32))
    times = Tuner(effort="none").measure(capture_one(at), [Config(BLOCK=b) for b in (16, 3, 7, 32)])
    assert times[Config(BLOCK=3)] == times[Config(BLOCK=7)] == math.inf
    assert 0 < times[Config(BLOCK=16)] < math.inf and 0 < times[Config(BLOCK=32)] < math.inf
    assert AutotuneCache().entries() == []


def test_event_timer_flushes_syncs_and_converts_milliseconds():
    from autotune.benchmarking import _EventTimer

    log = []

    class FakeEvent:
        def __init__(self, enable_timing):
            assert enable_timing
            self.name = f"event{len([e for e in log if e.startswith('new')])}"
            log.append("new")

        def record(self):
            log.append(f"record {self.name}")

        def elapsed_time(self, end):
            return 2.5  # milliseconds, as CUDA and NPU events report

    class Device:
        Event = FakeEvent

        @staticmethod
        def synchronize():
            log.append("sync")

    timer = _EventTimer(torch.device("cpu"), Device)
    timer.flush_buffer.fill_(7)
    assert timer.time_once(lambda: log.append("run")) == 0.0025
    assert int(timer.flush_buffer.max()) == 0  # L2 flushed by overwriting the buffer
    assert log == ["new", "new", "sync", "record event0", "run", "record event1", "sync"]
    assert timer.summarize([3.0, 1.0, 2.0]) == 2.0
    assert CPUTimer().summarize([3.0, 1.0, 2.0]) == 1.0
