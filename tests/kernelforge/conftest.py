"""Fixtures for kernelforge tests: the backends to run kernels on, and a private cache dir."""

import os

import pytest

import kernelforge as kf

_AVAILABLE = kf.available_backends()


@pytest.fixture(scope="session", autouse=True)
def _kernel_cache_dir(tmp_path_factory):
    """Keeps generated sources out of ~/.cache while testing (unless KF_CACHE_DIR is set)."""
    if "KF_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["KF_CACHE_DIR"] = str(tmp_path_factory.mktemp("kf-cache"))
    yield
    del os.environ["KF_CACHE_DIR"]


@pytest.fixture
def fresh_kernel_cache(tmp_path, monkeypatch):
    """A cache dir of the test's own (every kernel generated anew) and no KF_SANITIZE /
    KF_BACKEND from outside: for tests that read generated sources or time nothing."""
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KF_SANITIZE", raising=False)
    monkeypatch.delenv("KF_BACKEND", raising=False)


@pytest.fixture(
    scope="session",
    params=[
        "cpu",
        pytest.param("interpret", marks=[
            pytest.mark.interpret,
            pytest.mark.skipif("interpret" not in _AVAILABLE,
                               reason="the interpret backend is not available here"),
        ]),
    ],
)
def backend(request) -> str:
    """Name of a backend that runs on CPU tensors; launch under `with kf.backend(backend):`."""
    return request.param
