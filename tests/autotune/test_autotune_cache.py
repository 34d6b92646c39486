"""autotune.cache: per-config timings, identity, robustness, export/import."""

from __future__ import annotations

import json
import math

import pytest

from autotune.cache import CACHE_VERSION, AutotuneCache, CacheWarning, Entry, cache_root
from kernelforge.autotuning import Config

VERSIONS = {"torch": "2.13.0", "triton": "triton-3.9.0"}


def entry(key=(128, "float32"), source_hash="abc123", **timings):
    e = Entry("scale_kernel", source_hash, "cpu", "test-cpu", dict(VERSIONS), key, ("n", "dtypes"))
    for block, t in timings.items():
        e.set_time(Config(BLOCK=int(block[1:])), t, None if math.isfinite(t) else "boom")
    return e


def lookup(cache, key=(128, "float32"), source_hash="abc123", versions=VERSIONS):
    return cache.lookup("scale_kernel", source_hash, "cpu", "test-cpu", versions, key)


def test_cache_root_follows_kf_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path / "autotune"
    assert AutotuneCache().root == tmp_path / "autotune"


def test_store_then_lookup_keeps_every_config_and_failures():
    cache = AutotuneCache()
    cache.store([entry(b16=2e-6, b32=1e-6, b3=math.inf)])
    got = lookup(cache)
    assert got.time_of(Config(BLOCK=16)) == 2e-6
    assert got.time_of(Config(BLOCK=3)) == math.inf and got.failures[Config(BLOCK=3).to_json()] == "boom"
    assert got.time_of(Config(BLOCK=64)) is None
    assert got.best() == (Config(BLOCK=32), 1e-6)
    assert got.best(among=[Config(BLOCK=16), Config(BLOCK=3)]) == (Config(BLOCK=16), 2e-6)


def test_identity_covers_source_key_and_versions():
    cache = AutotuneCache()
    cache.store([entry(b16=1e-6)])
    assert lookup(cache, key=(256, "float32")) is None
    assert lookup(cache, source_hash="def456") is None
    assert lookup(cache, versions={**VERSIONS, "torch": "9.9"}) is None
    assert lookup(cache) is not None


def test_store_merges_newer_timings_into_the_file():
    cache = AutotuneCache()
    cache.store([entry(b16=2e-6, b32=1e-6)])
    cache.store([entry(b32=3e-6, b64=0.5e-6)])
    got = lookup(cache)
    assert got.timings == {Config(BLOCK=b).to_json(): t for b, t in ((16, 2e-6), (32, 3e-6), (64, 0.5e-6))}
    assert len(cache.entries()) == 1
    assert not list(cache.root.glob("*.tmp"))


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 1, "kernel": "k"}',
                                     '{"version": 1, "kernel": "k", "source_hash": "abc123", '
                                     '"entries": [{"backend": "cpu"}]}'])
def test_corrupt_file_is_warned_about_and_ignored(content):
    cache = AutotuneCache()
    path = cache.path_for("scale_kernel", "abc123")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.warns(CacheWarning, match="corrupt"):
        assert lookup(cache) is None
    with pytest.warns(CacheWarning):
        cache.store([entry(b16=1e-6)])
    assert lookup(cache).time_of(Config(BLOCK=16)) == 1e-6


def test_foreign_version_file_is_ignored_with_a_warning():
    cache = AutotuneCache()
    cache.store([entry(b16=1e-6)])
    path = cache.path_for("scale_kernel", "abc123")
    data = json.loads(path.read_text())
    data["version"] = CACHE_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.warns(CacheWarning, match="version"):
        assert lookup(cache) is None
        assert cache.entries() == []


def test_export_import_round_trip_merges(tmp_path):
    source = AutotuneCache(tmp_path / "a")
    source.store([entry(b16=2e-6, b3=math.inf), entry(key=(1, "float32"), b32=1e-6),
                  entry(source_hash="other", b64=4e-6)])
    assert source.export(tmp_path / "bundle.json") == 3
    target = AutotuneCache(tmp_path / "b")
    target.store([entry(b128=9e-6)])
    assert target.import_(tmp_path / "bundle.json") == 3
    got = lookup(target)
    assert got.time_of(Config(BLOCK=16)) == 2e-6 and got.time_of(Config(BLOCK=128)) == 9e-6
    assert got.failures == {Config(BLOCK=3).to_json(): "boom"}
    assert lookup(target, key=(1, "float32")).best() == (Config(BLOCK=32), 1e-6)
    assert sorted((e.source_hash, e.key) for e in target.entries()) == sorted(
        (e.source_hash, e.key) for e in source.entries())


def test_import_of_a_bad_file_raises_value_error(tmp_path):
    (tmp_path / "bad.json").write_text('{"version": 99}')
    with pytest.raises(ValueError, match="cannot import"):
        AutotuneCache().import_(tmp_path / "bad.json")


def test_clear_removes_every_file():
    cache = AutotuneCache()
    cache.store([entry(b16=1e-6), entry(source_hash="zzz", b16=1e-6)])
    assert cache.clear() == 2
    assert cache.entries() == [] and lookup(cache) is None
