"""Builds the native tier's C (`c_emit`) into a shared library and wraps it as a launch.

The library is compiled once per source with the system C compiler (`$CC`, default
`cc`) and kept under `$KF_CACHE_DIR/cpu-native`, keyed by the source, the flags, the
compiler's version and this CPU's feature flags (`-march=native`), so a warm process
only loads it. `KF_CPU_NATIVE=0` turns the tier off; without a compiler it is off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Sequence

from kernelforge import cache
from kernelforge.backends import Launch, environ_get
from kernelforge.backends.cpu.c_emit import FUNCTION
from kernelforge.errors import KernelFault

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11", "-fPIC", "-shared", "-w")
_loaded: dict[str, Callable] = {}
_lock = threading.Lock()


class NativeBuildError(RuntimeError):
    """The C compiler rejected a generated kernel (a bug in `c_emit`)."""


def enabled() -> bool:
    """Whether launches use the native tier: on when a C compiler exists, unless KF_CPU_NATIVE=0."""
    return environ_get("KF_CPU_NATIVE", "1") not in ("", "0") and compiler() is not None


@functools.cache
def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


@functools.cache
def _toolchain_tag() -> str:
    """Compiler version and CPU features: what `-march=native` output depends on."""
    version = subprocess.run([compiler(), "--version"], capture_output=True, text=True).stdout
    try:
        cpu = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        cpu = ""
    return hashlib.sha256(f"{version}\n{cpu}\n{FLAGS}".encode()).hexdigest()[:16]


def build(source: str) -> Callable:
    """The compiled `kf_kernel` of `source`, from this process, the disk cache or the compiler."""
    key = hashlib.sha256(f"{_toolchain_tag()}\n{source}".encode()).hexdigest()[:40]
    with _lock:
        fn = _loaded.get(key)
        if fn is None:
            fn = _loaded[key] = _load(_compiled(source, key))
    return fn


def _compiled(source: str, key: str) -> Path:
    path = cache.cache_dir() / "cpu-native" / key[:2] / f"{key}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        c_file, so_file = Path(tmp) / "kernel.c", Path(tmp) / "kernel.so"
        c_file.write_text(source)
        done = subprocess.run([compiler(), *FLAGS, str(c_file), "-o", str(so_file), "-lm"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise NativeBuildError(f"{compiler()} failed on a generated kernel:\n{done.stderr[-4000:]}")
        os.replace(so_file, path)
    return path


def _load(path: Path) -> Callable:
    fn = getattr(ctypes.CDLL(str(path)), FUNCTION)
    fn.restype = ctypes.c_int
    return fn


def launcher(fn: Callable, kinds: Sequence[str], sites: Sequence[str], kernel: str) -> Launch:
    """`launch(grid, args)` calling `fn` with one packed record: the grid, then per
    argument its data pointer and element count (tensors) or its value, 8 bytes each (see
    `c_emit`). A non-zero return names the faulting access."""
    fn.argtypes = [ctypes.c_char_p]
    record = struct.Struct("=qqq" + "".join("qq" if kind == "ptr" else "d" if kind == "float" else "q"
                                             for kind in kinds))
    names = [f"a{n}" for n in range(len(kinds))]
    passed = []
    for name, kind in zip(names, kinds):
        passed += [f"{name}.data_ptr()", f"{name}.numel()"] if kind == "ptr" else [name]
    unpack = f"    {', '.join(names)}, = args\n" if names else ""
    text = (f"def launch(grid, args):\n{unpack}"
            f"    rc = fn(pack(grid[0], grid[1], grid[2]{''.join(', ' + p for p in passed)}))\n"
            "    if rc:\n        fault(rc)\n")
    namespace = {"fn": fn, "pack": record.pack, "fault": functools.partial(_fault, sites, kernel)}
    exec(compile(text, f"<kernelforge-native {kernel}>", "exec"), namespace)
    return namespace["launch"]


def _fault(sites: Sequence[str], kernel: str, rc: int) -> None:
    """Raises what a non-zero return of the kernel means."""
    if rc < 0:
        raise ValueError(f"kernel {kernel}: a loop's range() step is zero")
    raise KernelFault("out-of-bounds memory access (the lane was not performed); rerun with KF_SANITIZE=1 "
                      "for the offset and the tensor", kernel=kernel, source=sites[rc - 1])
