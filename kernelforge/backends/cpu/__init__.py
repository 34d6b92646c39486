"""The `cpu` backend: kernels as grid-vectorised PyTorch code (see `codegen.py`).

`generate` returns readable Python source (what `kernel.source("cpu")` shows);
`load` executes it once and hands back its `launch`. `KF_SANITIZE=1`, read at
generate time, adds bounds checks to every memory access; the launcher's cache key
must therefore include it. `KF_CPU_COMPILE=1`, read at load time, passes `launch`
through `torch.compile` (see `compiled.py`).
"""

from __future__ import annotations

import functools
import hashlib
import linecache
import os
import platform
from pathlib import Path

import torch

from kernelforge import ir
from kernelforge.backends import Launch
from kernelforge.backends.cpu.codegen import generate


def sanitize_enabled() -> bool:
    return os.environ.get("KF_SANITIZE", "0") not in ("", "0")


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
        return generate(kernel, sanitize=sanitize_enabled())

    def load(self, source: str, key: str) -> Launch:
        filename = f"<kernelforge-cpu {key}>"
        # Registering the text lets tracebacks and debuggers show the generated lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace: dict = {"__name__": f"kernelforge_cpu_{abs(hash(key))}"}
        exec(compile(source, filename, "exec"), namespace)
        return namespace["launch"]
