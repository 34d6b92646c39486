"""autotune.provider / install(): tuned configs at launch, defaults otherwise, KF_AUTOTUNE."""

from __future__ import annotations

import torch

import autotune
from autotune import AutotuneCache, CacheProvider, Tuner
from kernelforge import autotuning
from kernelforge.autotuning import Config


def launch(at, n):
    x = torch.arange(float(n))
    out = torch.empty(n)
    at[(1,)](out, x, n)
    assert torch.equal(out, 2 * x)


def seed_cache(at, n, **micros):
    """Record timings (BLOCK<b>=microseconds) at n's key, without timing anything."""
    with autotuning.capture_launches() as launches:
        launch(at, n)
    entry = Tuner().entry_for(launches[0])
    for name, us in micros.items():
        entry.set_time(Config(BLOCK=int(name.removeprefix("BLOCK"))), us * 1e-6)
    AutotuneCache().store([entry])


def test_install_reads_the_environment(monkeypatch):
    monkeypatch.setenv("KF_AUTOTUNE", "1")
    provider = autotune.install()
    assert autotuning.get_config_provider() is provider and provider.tune_missing
    monkeypatch.delenv("KF_AUTOTUNE")
    assert not autotune.install().tune_missing


def test_provider_returns_the_tuned_config_for_the_bucketed_key(fake_target, make_scale):
    jit, at = make_scale(configs=(16, 32, 64))
    seed_cache(at, 100, BLOCK16=5, BLOCK32=4, BLOCK64=1)
    autotune.install()
    launch(at, 100)
    launch(at, 120)   # same pow2 bucket (128)
    launch(at, 300)   # never tuned: default
    assert [c["BLOCK"] for c in jit.calls[-3:]] == [64, 64, 16]


def test_provider_ignores_tuned_configs_the_kernel_no_longer_declares(fake_target, make_scale):
    _, at = make_scale(configs=(16, 32, 64))
    seed_cache(at, 100, BLOCK16=5, BLOCK32=4, BLOCK64=1)
    jit2, at2 = make_scale(configs=(16, 32))
    autotune.install()
    launch(at2, 100)
    assert jit2.calls[-1]["BLOCK"] == 32


def test_without_kf_autotune_nothing_is_tuned_on_the_hot_path(fake_target, make_scale):
    jit, at = make_scale(configs=(16, 32, 64))
    autotune.install()
    launch(at, 100)
    assert len(jit.calls) == 1 and AutotuneCache().entries() == []


def test_kf_autotune_tunes_a_missing_key_once_and_stores_it(fake_target, make_scale, monkeypatch):
    monkeypatch.setenv("KF_AUTOTUNE", "1")
    monkeypatch.setenv("KF_AUTOTUNE_EFFORT", "none")
    jit, at = make_scale(configs=(16, 32))
    autotune.install()
    launch(at, 100)
    tuned_calls = len(jit.calls)
    assert tuned_calls > 1
    launch(at, 100)
    assert len(jit.calls) == tuned_calls + 1
    (entry,) = AutotuneCache().entries()
    assert entry.key == (128, "float32", "") and entry.best()[0] == Config(BLOCK=16)


def test_memoised_answer_costs_no_cache_reads(fake_target, make_scale, monkeypatch):
    jit, at = make_scale(configs=(16, 32))
    seed_cache(at, 100, BLOCK16=5, BLOCK32=4)
    provider = autotune.install(CacheProvider())
    launch(at, 100)
    monkeypatch.setattr(provider.cache, "lookup", lambda *a: (_ for _ in ()).throw(AssertionError("read")))
    launch(at, 100)
    assert jit.calls[-1]["BLOCK"] == 32
