"""A recording stand-in for a backend, so launcher and cache tests need no real codegen."""

from __future__ import annotations

import importlib

import pytest

from kernelforge import cache, ir

# `kernelforge.jit` the attribute is the decorator; the module is reached by name.
jit_module = importlib.import_module("kernelforge.jit")


class FakeBackend:
    """Generates the IR listing as 'source' and records every generate, load and launch."""

    def __init__(self) -> None:
        self.selected: list[str] = []
        self.generated: list[ir.Kernel] = []
        self.loaded: list[str] = []
        self.launches: list[tuple[tuple[int, int, int], list]] = []

    def is_available(self) -> bool:
        return True

    def device_name(self) -> str:
        return "fake-device"

    def generate(self, kernel: ir.Kernel) -> str:
        self.generated.append(kernel)
        return ir.format_kernel(kernel)

    def load(self, source: str, key: str):
        self.loaded.append(source)
        return lambda grid, args: self.launches.append((grid, list(args)))


@pytest.fixture
def fake(monkeypatch, tmp_path) -> FakeBackend:
    """Routes every launch to a fresh FakeBackend and a private, empty cache directory."""
    backend = FakeBackend()

    def get_backend(name: str) -> FakeBackend:
        backend.selected.append(name)
        return backend

    monkeypatch.setattr(jit_module, "get_backend", get_backend)
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path / "cache"))
    cache.clear_memory()
    return backend
