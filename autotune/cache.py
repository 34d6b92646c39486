"""The persistent autotune cache: per-config timings in versioned JSON files.

Layout: `$KF_CACHE_DIR/autotune/<kernel>-<source hash prefix>.json` (default
`~/.cache/kernelforge`), one file per kernel source, holding one entry per (backend,
device, library versions, key). An entry keeps the time of *every* config it has timed,
not only the winner, so that adding a config to a kernel re-times only that config and a
shorter search can reuse a longer one's work. Editing a kernel changes its source hash,
so its old timings stop matching.

Robustness rules: a corrupt file or one written by another cache version is warned
about and ignored (never a crash); writes go to a temporary file that replaces the
target atomically, and re-read and merge the file first so concurrent tuners lose
nothing but a race on the same config.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch

from kernelforge.autotuning import Config

CACHE_VERSION = 1


class CacheWarning(UserWarning):
    """A cache file was unreadable or foreign and is being ignored."""


def cache_root() -> Path:
    """`$KF_CACHE_DIR/autotune`, read at call time so tests can point it elsewhere."""
    base = os.environ.get("KF_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kernelforge")
    return Path(base) / "autotune"


def library_versions() -> dict[str, str]:
    """Versions that change generated code or its speed; part of every entry's identity."""
    triton = "none"
    for dist in ("triton", "triton-ascend"):
        try:
            triton = f"{dist}-{metadata.version(dist)}"
            break
        except metadata.PackageNotFoundError:
            continue
    return {"torch": torch.__version__, "triton": triton}


def _tuplify(value: Any) -> Any:
    """JSON lists back into the tuples that `Autotuned.key_of` produces."""
    return tuple(_tuplify(v) for v in value) if isinstance(value, list) else value


@dataclass
class Entry:
    """Timings of one kernel source at one key on one backend/device/library stack.

    `timings` maps `Config.to_json()` to seconds (see `Timer.summarize`), or to None for a config that
    failed (the reason is in `failures`), so a failed config is not retried either.
    """

    kernel: str
    source_hash: str
    backend: str
    device: str
    versions: dict[str, str]
    key: tuple
    key_fields: tuple[str, ...] = ()
    timings: dict[str, float | None] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def ident(self) -> tuple:
        return (self.source_hash, self.backend, self.device, tuple(sorted(self.versions.items())), self.key)

    def time_of(self, config: Config) -> float | None:
        """Median seconds of `config`; inf if it failed; None if it was never timed."""
        text = config.to_json()
        if text not in self.timings:
            return None
        t = self.timings[text]
        return math.inf if t is None else t

    def set_time(self, config: Config, seconds: float, failure: str | None = None) -> None:
        text = config.to_json()
        if failure is not None or not math.isfinite(seconds):
            self.timings[text] = None
            self.failures[text] = failure or "failed"
        else:
            self.timings[text] = seconds
            self.failures.pop(text, None)

    def best(self, among: Iterable[Config] | None = None) -> tuple[Config, float] | None:
        """The fastest successfully timed config (restricted to `among` if given)."""
        allowed = None if among is None else {c.to_json() for c in among}
        timed = [(t, text) for text, t in self.timings.items()
                 if t is not None and (allowed is None or text in allowed)]
        if not timed:
            return None
        t, text = min(timed)
        return Config.from_json(text), t

    def merge(self, other: "Entry") -> None:
        """Take `other`'s timings; on a config both timed, `other` wins (it is newer)."""
        for text, t in other.timings.items():
            self.timings[text] = t
            if t is None:
                self.failures[text] = other.failures.get(text, "failed")
            else:
                self.failures.pop(text, None)
        if other.key_fields:
            self.key_fields = other.key_fields

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device, "versions": self.versions,
                "key": list(self.key), "key_fields": list(self.key_fields),
                "timings": self.timings, "failures": self.failures}

    @staticmethod
    def from_dict(kernel: str, source_hash: str, data: dict[str, Any]) -> "Entry":
        timings = {str(k): (None if v is None else float(v)) for k, v in data["timings"].items()}
        for text in timings:
            Config.from_json(text)  # reject entries whose configs do not parse
        return Entry(kernel, source_hash, str(data["backend"]), str(data["device"]),
                     {str(k): str(v) for k, v in data["versions"].items()}, _tuplify(data["key"]),
                     tuple(data.get("key_fields", ())), timings,
                     {str(k): str(v) for k, v in data.get("failures", {}).items()})


class AutotuneCache:
    """Reads and writes the per-kernel JSON files under `root` (default `cache_root()`)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def path_for(self, kernel: str, source_hash: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", kernel)
        return self.root / f"{safe}-{source_hash[:16]}.json"

    def lookup(self, kernel: str, source_hash: str, backend: str, device: str,
               versions: dict[str, str], key: tuple) -> Entry | None:
        wanted = (source_hash, backend, device, tuple(sorted(versions.items())), key)
        for entry in self._read(self.path_for(kernel, source_hash)):
            if entry.ident == wanted:
                return entry
        return None

    def store(self, entries: Iterable[Entry]) -> None:
        """Merge entries into their files (newer timings win), each file written atomically."""
        by_path: dict[Path, list[Entry]] = {}
        for entry in entries:
            by_path.setdefault(self.path_for(entry.kernel, entry.source_hash), []).append(entry)
        for path, new in by_path.items():
            current = {e.ident: e for e in self._read(path)}
            for entry in new:
                if entry.ident in current:
                    current[entry.ident].merge(entry)
                else:
                    current[entry.ident] = entry
            self._write(path, new[0].kernel, new[0].source_hash, list(current.values()))

    def entries(self) -> list[Entry]:
        """Every readable entry of every file, sorted by kernel name."""
        if not self.root.is_dir():
            return []
        found: list[Entry] = []
        for path in sorted(self.root.glob("*.json")):
            found.extend(self._read(path))
        return sorted(found, key=lambda e: (e.kernel, e.backend, repr(e.key)))

    def export(self, path: Path | str) -> int:
        """Write every entry to one portable file; returns the number of entries."""
        entries = self.entries()
        bundle = {"version": CACHE_VERSION, "entries": [
            {"kernel": e.kernel, "source_hash": e.source_hash, **e.to_dict()} for e in entries]}
        _atomic_write(Path(path), bundle)
        return len(entries)

    def import_(self, path: Path | str) -> int:
        """Merge an exported file into this cache; returns the number of entries read."""
        try:
            bundle = json.loads(Path(path).read_text())
            if not isinstance(bundle, dict) or bundle.get("version") != CACHE_VERSION:
                raise ValueError(f"expected an autotune export of version {CACHE_VERSION}")
            entries = [Entry.from_dict(str(d["kernel"]), str(d["source_hash"]), d) for d in bundle["entries"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"cannot import {path}: {exc}") from exc
        self.store(entries)
        return len(entries)

    def clear(self) -> int:
        """Delete every cache file; returns how many were removed."""
        if not self.root.is_dir():
            return 0
        paths = list(self.root.glob("*.json"))
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    def _read(self, path: Path) -> list[Entry]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            warnings.warn(f"ignoring unreadable autotune cache file {path}: {exc}", CacheWarning, stacklevel=3)
            return []
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("version") != CACHE_VERSION:
                warnings.warn(f"ignoring autotune cache file {path}: version {data.get('version')!r}, "
                              f"this kernelforge reads version {CACHE_VERSION}", CacheWarning, stacklevel=3)
                return []
            kernel, source_hash = str(data["kernel"]), str(data["source_hash"])
            return [Entry.from_dict(kernel, source_hash, d) for d in data["entries"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            warnings.warn(f"ignoring corrupt autotune cache file {path}: {exc}", CacheWarning, stacklevel=3)
            return []

    def _write(self, path: Path, kernel: str, source_hash: str, entries: list[Entry]) -> None:
        _atomic_write(path, {"version": CACHE_VERSION, "kernel": kernel, "source_hash": source_hash,
                             "entries": [e.to_dict() for e in entries]})


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`, so that a
    reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
