"""Autotune tests run against a private cache directory and leave no provider installed."""

from __future__ import annotations

import sys
import textwrap
import time
from typing import Any, Callable

import pytest
import torch

from autotune import registry
from kernelforge import autotuning
from kernelforge.backends import available_backends


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
def make_sleepy(fake_jit):
    """A kernel (out = 2 * x) whose configs cost `cost(BLOCK, nth_call_of_that_BLOCK)` seconds,
    so tests can decide which config wins, and when."""
    def make(cost, configs=(16, 32)):
        calls: dict[int, int] = {}

        def sleepy_kernel(out, x, n, BLOCK):
            calls[BLOCK] = calls.get(BLOCK, 0) + 1
            time.sleep(cost(BLOCK, calls[BLOCK]))
            out.copy_(x * 2)

        jit = fake_jit(sleepy_kernel, source_hash="sleepy")
        at = autotuning.autotune(configs=[autotuning.Config(BLOCK=b) for b in configs], key=["n"],
                                 outputs=["out"])(jit)
        return jit, at
    return make


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


KERNEL_MODULE = '''
"""A test kernel module laid out like kernelforge/kernels/*.py."""
import torch
import kernelforge as kf
import kernelforge.language as kl


@kf.autotune(configs=[kf.Config(BLOCK=b) for b in (16, 3, 64, 128)], key=["n"], bucket={"n": "pow2"},
             default=kf.Config(BLOCK=16), outputs=["out_ptr"])
@kf.jit
def double_kernel(x_ptr, out_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    kl.store(out_ptr + offs, kl.load(x_ptr + offs, mask=mask, other=0.0) * {factor}, mask=mask)


def double(x, out):
    double_kernel[lambda meta: (kf.cdiv(meta["n"], meta["BLOCK"]),)](x, out, x.numel())


def make_args(num_tokens, hidden_size, dtype, device, **_):
    x = torch.randn(num_tokens, hidden_size, dtype=dtype, device=device)
    return [(double, (x, torch.empty_like(x)))]
'''


def _works(name: str) -> bool:
    """Only a backend whose packages are missing counts as unavailable; any other error fails the test."""
    return name in available_backends()


@pytest.fixture
def cpu_backend(monkeypatch):
    """Launches go to the CPU backend (the real LLM kernels are too slow interpreted)."""
    if not _works("cpu"):
        pytest.skip("backend cpu is not available here")
    monkeypatch.setenv("KF_BACKEND", "cpu")


@pytest.fixture(params=["cpu", "interpret"])
def dsl_backend(request, monkeypatch):
    if not _works(request.param):
        pytest.skip(f"backend {request.param} is not available here")
    monkeypatch.setenv("KF_BACKEND", request.param)
    return request.param


@pytest.fixture
def kernels_package(tmp_path, monkeypatch):
    """A `tkernels` package with one kernel module; `registry` pointed at it. Returns a
    function that (re)writes the module with a given source variant."""
    package = tmp_path / "tkernels"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "KERNELS_PACKAGE", "tkernels")

    def write(factor: str = "2.0"):
        (package / "double.py").write_text(textwrap.dedent(KERNEL_MODULE.replace("{factor}", factor)))
        for name in [m for m in sys.modules if m.startswith("tkernels")]:
            del sys.modules[name]
        return registry.tunable_kernels()["double_kernel"]

    yield write
    for name in [m for m in sys.modules if m.startswith("tkernels")]:
        del sys.modules[name]
