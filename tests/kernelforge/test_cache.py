"""The generated-source cache: keys, atomic disk writes, and warm starts that skip compiling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from fake_backend import fake, jit_module  # noqa: F401  (fake is a pytest fixture)
from kernelforge import cache
from kernelforge.frontend.source import FunctionSource


@kf.jit
def _double(x):
    return x * 2


@kf.jit
def _triple(x):
    return x * 3


@kf.jit
def twice_kernel(x_ptr, n, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    kl.store(x_ptr + offs, _double(kl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)


def test_put_get_round_trip_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    cache.clear_memory()
    key = cache.cache_key("src", "cpu", "dev")
    assert cache.get("cpu", key) is None
    cache.put("cpu", key, "print('hi')\n")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{key}.py"], "no temporary files may be left behind"
    cache.clear_memory()
    assert cache.get("cpu", key) == "print('hi')\n"


def test_cache_dir_defaults_to_home(monkeypatch):
    monkeypatch.delenv("KF_CACHE_DIR", raising=False)
    assert str(cache.cache_dir()).endswith(os.path.join(".cache", "kernelforge"))


def test_every_key_component_changes_the_key():
    base = ("hash", "cpu", "dev", (("BLOCK", "int", "16"),), ("*float32",))
    keys = {cache.cache_key(*base)}
    for i in range(len(base)):
        changed = list(base)
        changed[i] = ("other", i)
        keys.add(cache.cache_key(*changed))
    assert len(keys) == len(base) + 1


def test_unwritable_cache_dir_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("KF_CACHE_DIR", str(blocker))
    monkeypatch.setattr(cache, "_warned", False)
    with pytest.warns(UserWarning, match="cannot write the kernel cache"):
        cache.put("cpu", cache.cache_key("x"), "pass\n")
    assert cache.get("cpu", cache.cache_key("x")) == "pass\n"


def test_source_hash_covers_called_jit_functions():
    before = twice_kernel.source_hash
    assert before == kf.jit(twice_kernel.fn).source_hash
    globals_ = twice_kernel.fn.__globals__
    original = globals_["_double"]
    try:
        globals_["_double"] = _triple
        assert kf.jit(twice_kernel.fn).source_hash != before
    finally:
        globals_["_double"] = original


def test_warm_cache_skips_the_frontend_and_codegen(fake, monkeypatch):
    x = torch.ones(4)
    twice_kernel[(1,)](x, 4, BLOCK=4)
    assert len(fake.generated) == 1

    # A new process: no in-memory sources, a fresh JITFunction, and a frontend that must not run.
    cache.clear_memory()
    fresh = kf.jit(twice_kernel.fn)

    def no_compile(*args, **kwargs):
        raise AssertionError("the frontend ran although the disk cache holds the source")

    monkeypatch.setattr(jit_module, "compile_kernel", no_compile)
    monkeypatch.setattr(FunctionSource, "of", staticmethod(no_compile))  # not even a parse
    fresh[(1,)](x, 4, BLOCK=4)
    assert len(fake.generated) == 1
    assert fake.loaded[0] == fake.loaded[1]
    assert len(fake.launches) == 2


def test_a_new_specialisation_is_compiled_and_cached_separately(fake):
    twice_kernel[(1,)](torch.ones(4), 4, BLOCK=4)
    twice_kernel[(1,)](torch.ones(8), 8, BLOCK=8)
    twice_kernel[(1,)](torch.ones(8, dtype=torch.float16), 8, BLOCK=8)
    assert len(fake.generated) == 3
    files = list(cache.cache_dir().rglob("*.py"))
    assert len(files) == 3


def test_second_process_reuses_the_disk_cache(tmp_path):
    """End to end on the real CPU backend, across two interpreter processes."""
    script = tmp_path / "k.py"
    script.write_text(textwrap.dedent("""
        import sys, torch
        import kernelforge as kf, kernelforge.language as kl
        import importlib
        frontend_calls = []
        jit_module = importlib.import_module("kernelforge.jit")
        real = jit_module.compile_kernel
        jit_module.compile_kernel = lambda *a, **k: frontend_calls.append(1) or real(*a, **k)

        @kf.jit
        def inc(x_ptr, n, BLOCK: kl.constexpr):
            offs = kl.arange(0, BLOCK)
            kl.store(x_ptr + offs, kl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)

        x = torch.zeros(5)
        inc[(1,)](x, 5, BLOCK=8)
        assert x.tolist() == [1.0] * 5
        print(len(frontend_calls))
    """))
    env = {**os.environ, "KF_CACHE_DIR": str(tmp_path / "cache"), "KF_BACKEND": "cpu"}
    runs = [subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert [r.stdout.strip() for r in runs] == ["1", "0"]


def test_a_changed_backend_generator_does_not_reuse_old_sources(fake, monkeypatch):
    fake.cache_tag = lambda: "generator-v1"
    twice_kernel[(1,)](torch.ones(4), 4, BLOCK=4)
    newer = type(fake)()
    newer.cache_tag = lambda: "generator-v2"
    monkeypatch.setattr(jit_module, "get_backend", lambda name: newer)
    cache.clear_memory()
    twice_kernel[(1,)](torch.ones(4), 4, BLOCK=4)
    assert len(fake.generated) == 1 and len(newer.generated) == 1


def test_a_changed_frontend_does_not_reuse_old_sources(fake, monkeypatch):
    twice_kernel[(1,)](torch.ones(4), 4, BLOCK=4)
    monkeypatch.setattr(jit_module, "_frontend_tag", lambda: "frontend-v2")
    cache.clear_memory()
    kf.jit(twice_kernel.fn)[(1,)](torch.ones(4), 4, BLOCK=4)
    assert len(fake.generated) == 2
