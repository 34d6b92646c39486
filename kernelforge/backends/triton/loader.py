"""Turns generated Triton source into an imported module.

Triton's `@triton.jit` reads the function's source back with `inspect.getsource`, so
the text must live in a real file: each source is written once under
`$KF_CACHE_DIR/triton_src/` (default `~/.cache/kernelforge/triton_src/`), named by its
key and a hash of its text, and imported from there with importlib.

Triton decides at decoration time whether a `@triton.jit` function is interpreted, by
reading `TRITON_INTERPRET`; `interpret=True` sets it only around the import so other
kernels in the same process still compile for the device. The library's own jit
functions (`tl.sum`, `tl.max`, `tl.sigmoid`, ...) were decorated when `triton` was first
imported, usually without that variable, so they are compiled-only `JITFunction`s
that refuse to be called; `interpreted_call` runs a launch with such calls routed
through Triton's `InterpretedFunction`, as they would be had the variable been set.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

_env_lock = threading.Lock()
_launch_lock = threading.RLock()
_modules: dict[Path, ModuleType] = {}


def source_dir() -> Path:
    """Where generated Triton modules are written."""
    root = os.environ.get("KF_CACHE_DIR") or os.path.join(Path.home(), ".cache", "kernelforge")
    return Path(root) / "triton_src"


def write_source(source: str, key: str) -> Path:
    """The file holding `source` (written atomically once; parallel writers agree)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    stem = "".join(c if c.isalnum() else "_" for c in key)[:80]
    path = source_dir() / f"kf_{stem}_{digest}.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    return path


def import_source(source: str, key: str, *, interpret: bool) -> ModuleType:
    """Imports the module `source` (once per file and process)."""
    path = write_source(source, key + ("_interpret" if interpret else ""))
    if path in _modules:
        return _modules[path]
    # Import Triton itself outside the interpret window: its library jit functions must be
    # decorated under the process's own setting, or later lazy Triton imports reject them.
    importlib.import_module("triton.language")
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with _interpret_env(interpret):
        spec.loader.exec_module(module)
    _modules[path] = module
    return module


@contextlib.contextmanager
def _interpret_env(interpret: bool) -> Iterator[None]:
    with _env_lock:
        previous = os.environ.get("TRITON_INTERPRET")
        if interpret:
            os.environ["TRITON_INTERPRET"] = "1"
        else:
            os.environ.pop("TRITON_INTERPRET", None)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = previous


def interpreted_call(launch: Callable[..., None]) -> Callable[..., None]:
    """`launch`, with device-side calls of library `JITFunction`s interpreted."""
    from triton.runtime.interpreter import InterpretedFunction, _patch_lang
    from triton.runtime.jit import JITFunction

    interpreted: dict[int, InterpretedFunction] = {}

    def call(self, *args, **kwargs):
        # What InterpretedFunction.__call__ does, except that the patches it applies to
        # `triton.language` are undone afterwards: left in place they break every later
        # compile (not interpreted) of a kernel in this process.
        fn = interpreted.setdefault(id(self), InterpretedFunction(self.fn))
        scope = _patch_lang(self.fn)
        try:
            return fn.rewrite()(*args, **kwargs)
        finally:
            scope.restore()

    def run(grid, args) -> None:
        # The interpreter itself patches `triton.language` for the launch; launches are
        # serialised for the same reason.
        with _launch_lock:
            original = JITFunction.__call__
            JITFunction.__call__ = call
            try:
                launch(grid, args)
            finally:
                JITFunction.__call__ = original

    return run
