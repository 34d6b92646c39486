"""Autotune tests run against a private cache directory and leave no provider installed."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from kernelforge import autotuning


class FakeJit:
    """Stands in for a JITFunction where a test needs control over what each config does:
    `run` calls a plain torch implementation and logs the config it was given."""

    def __init__(self, impl: Callable[..., None], source_hash: str = "fake-v1") -> None:
        self.fn = impl
        self.__name__ = impl.__name__
        self.source_hash = source_hash
        self.calls: list[dict[str, Any]] = []

    def run(self, *args: Any, grid: Any, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        self.fn(*args, **kwargs)


def scale_kernel(out, x, n, BLOCK):
    """out = 2 * x, written BLOCK elements at a time; BLOCK=3 'fails to compile' and
    BLOCK=7 computes the wrong answer, to exercise the tuner's skipping."""
    if BLOCK == 3:
        raise RuntimeError("BLOCK=3 does not compile")
    for start in range(0, n, BLOCK):
        out[start:start + BLOCK] = x[start:start + BLOCK] * 2
    if BLOCK == 7:
        out[0] += 1


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path / "kf-cache"))
    monkeypatch.delenv("KF_AUTOTUNE", raising=False)
    previous = autotuning.set_config_provider(None)
    yield
    autotuning.set_config_provider(previous)


@pytest.fixture
def fake_target(monkeypatch):
    """Pins the (backend, device) pair so tests need no compiled backend."""
    import autotune.target

    monkeypatch.setattr(autotune.target, "_device_name", lambda backend: f"test-{backend}")


@pytest.fixture
def fake_jit():
    return FakeJit


@pytest.fixture
def make_scale():
    def make(configs=(16, 32), source_hash="fake-v1", default=None, **kw):
        jit = FakeJit(scale_kernel, source_hash)
        at = autotuning.autotune(configs=[autotuning.Config(BLOCK=b) for b in configs], key=["n"],
                                 bucket={"n": "pow2"}, default=default, outputs=["out"], **kw)(jit)
        return jit, at
    return make



@pytest.fixture
def capture_one():
    """Launch `at` once on fresh arguments of length n and return the recorded Launch."""
    def capture(at, n=100):
        x = torch.arange(n, dtype=torch.float32)
        out = torch.empty(n)
        with autotuning.capture_launches() as launches:
            at[(1,)](out, x, n)
        return launches[0]
    return capture
