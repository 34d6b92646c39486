"""The `cpu` backend: kernels as grid-vectorised PyTorch code (see `codegen.py`).

`generate` returns readable Python source (what `kernel.source("cpu")` shows);
`load` executes it once and hands back its `launch`. `KF_SANITIZE=1`, read at
generate time, adds bounds checks to every memory access; the launcher's cache key
must therefore include it. `KF_CPU_COMPILE=1`, read at load time, hands the
generated compute regions (`regions.py`) to `torch.compile`. Loading a kernel also fixes
glibc's malloc thresholds once (`allocator.py`), so launches reuse freed temporaries.

A kernel the native tier covers (`c_emit`: no `dot`, no pointer cast to another
element type, blocks within the stack budget) also carries its C
source in the module; `load` then compiles it (`c_build`) and launches that instead,
unless KF_CPU_NATIVE=0, KF_CPU_COMPILE=1 or no C compiler is installed. Sanitized
modules carry none: the torch tier's checks report the offending offset.
"""

from __future__ import annotations

import functools
import hashlib
import linecache
import os
import platform
import warnings
from pathlib import Path

import torch

from kernelforge import ir
from kernelforge.backends import Launch
from kernelforge.backends.cpu import c_build, c_emit
from kernelforge.backends.cpu.allocator import keep_freed_memory
from kernelforge.backends.cpu.codegen import generate


def sanitize_enabled() -> bool:
    return os.environ.get("KF_SANITIZE", "0") not in ("", "0")


def compile_enabled() -> bool:
    return os.environ.get("KF_CPU_COMPILE", "0") not in ("", "0")


def compile_regions(namespace: dict) -> None:
    """Replaces each `_compute*` region of a loaded module with its `torch.compile` version.

    Inductor compiles lazily on the first call, once per region (`dynamic=True`: the
    number of programs may change between launches), and keeps its artifacts in its
    own on-disk cache, so a later process reuses them.
    """
    for name, fn in list(namespace.items()):
        if name.startswith("_compute") and callable(fn):
            namespace[name] = torch.compile(fn, dynamic=True)


class CPUBackend:
    name = "cpu"

    def is_available(self) -> bool:
        return True

    def device_name(self) -> str:
        return f"cpu-{platform.machine()}-torch{torch.__version__.split('+')[0]}"

    @functools.cache
    def cache_tag(self) -> str:
        """Hash of this backend's own sources: a changed generator never reuses old modules."""
        digest = hashlib.sha256()
        for path in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    def generate(self, kernel: ir.Kernel) -> str:
        sanitize = sanitize_enabled()
        source = generate(kernel, sanitize=sanitize)
        native = None if sanitize else c_emit.emit(kernel)
        if native is None:
            return source
        return (f"{source}\n\n# The native tier (backends/cpu/c_emit.py), launched instead when a C compiler exists.\n"
                f"NATIVE_KERNEL = {kernel.name!r}\nNATIVE_KINDS = {native.kinds!r}\n"
                f"NATIVE_SITES = {native.sites!r}\nNATIVE_C = {native.source!r}\n")

    def load(self, source: str, key: str) -> Launch:
        keep_freed_memory()
        filename = f"<kernelforge-cpu {key}>"
        # Registering the text lets tracebacks and debuggers show the generated lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace: dict = {"__name__": f"kernelforge_cpu_{abs(hash(key))}"}
        exec(compile(source, filename, "exec"), namespace)
        if compile_enabled():
            compile_regions(namespace)
        elif "NATIVE_C" in namespace and c_build.enabled():
            try:
                fn = c_build.build(namespace["NATIVE_C"])
            except c_build.NativeBuildError as exc:  # a c_emit bug: the torch tier still runs the kernel
                warnings.warn(f"kernelforge: {namespace['NATIVE_KERNEL']} runs on the torch tier: {exc}",
                              RuntimeWarning, stacklevel=2)
                return namespace["launch"]
            return c_build.launcher(fn, namespace["NATIVE_KINDS"], namespace["NATIVE_SITES"],
                                    namespace["NATIVE_KERNEL"])
        return namespace["launch"]
