"""Cache of generated backend sources: in memory, and on disk under `$KF_CACHE_DIR`.

The key (see `cache_key`) covers everything that changes the generated code: the
kernel's source hash (its own source and every jit function it calls), the backend,
the device, the constexpr values and the argument types. A warm process therefore
finds the source on disk and skips the frontend and code generation entirely.
Writes are atomic (temporary file + `os.replace`) so concurrent processes never read
a half-written module.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path

_memory: dict[str, str] = {}
_lock = threading.Lock()
_warned = False


def cache_dir() -> Path:
    """`$KF_CACHE_DIR`, default `~/.cache/kernelforge` (read on every call so tests can move it)."""
    configured = os.environ.get("KF_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "kernelforge"


def cache_key(*parts: object) -> str:
    """A stable hex digest of `parts` (their reprs), usable as a file name."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:40]


def _path(backend: str, key: str) -> Path:
    return cache_dir() / backend / key[:2] / f"{key}.py"


def get(backend: str, key: str) -> str | None:
    """The cached source for `key`, from memory or disk, or None."""
    with _lock:
        hit = _memory.get(f"{backend}/{key}")
    if hit is not None:
        return hit
    try:
        text = _path(backend, key).read_text()
    except OSError:
        return None
    with _lock:
        _memory[f"{backend}/{key}"] = text
    return text


def put(backend: str, key: str, source: str) -> None:
    """Stores `source`; a disk that cannot be written only costs a warning."""
    global _warned
    with _lock:
        _memory[f"{backend}/{key}"] = source
    path = _path(backend, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(source)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        if not _warned:
            _warned = True
            warnings.warn(f"kernelforge: cannot write the kernel cache at {path.parent}: {exc}", stacklevel=2)


def clear_memory() -> None:
    """Forgets the in-memory copies (the disk cache stays); used to simulate a new process."""
    with _lock:
        _memory.clear()
