"""The `triton` and `interpret` backends: kernels emitted as Triton source.

`triton` runs on CUDA tensors through upstream Triton and on Ascend NPU tensors through
triton-ascend (with torch_npu). Both distributions install the module `triton` and
cannot share an environment, so which one is present is found out at run time
(`flavor()`), never assumed. Before compiling, the kernel is checked against the
target's limits: the Ascend on-chip buffer (`kernelforge.backends.npu_rules`) or
Triton's minimum `dot` sizes on NVIDIA (`cuda_rules`).

`interpret` runs the same emitted source (with 16-bit floats held in fp32, see
`emitter`) under Triton's interpreter on CPU tensors: the GPU/NPU code path, checked on
a machine without either.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util

import torch

from kernelforge import ir
from kernelforge.backends import Launch
from kernelforge.backends.triton import cuda_rules, emitter, loader


@functools.lru_cache(maxsize=None)
def flavor() -> str | None:
    """`"ascend"` (triton-ascend), `"cuda"` (upstream triton) or None (no triton at all)."""
    if importlib.util.find_spec("triton") is None:
        return None
    for dist in ("triton-ascend", "triton_ascend"):
        try:
            importlib.metadata.distribution(dist)
            return "ascend"
        except importlib.metadata.PackageNotFoundError:
            continue
    if importlib.util.find_spec("triton.backends.ascend") is not None:
        return "ascend"
    return "cuda"


def _npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch_npu  # noqa: F401  (registers torch.npu)

    return torch.npu.is_available()


class TritonBackend:
    """Emitted Triton compiled for the CUDA GPU or Ascend NPU the tensors live on."""

    name = "triton"

    def is_available(self) -> bool:
        kind = flavor()
        if kind == "cuda":
            return torch.cuda.is_available()
        return kind == "ascend" and _npu_available()

    def device_name(self) -> str:
        if flavor() == "ascend":
            return f"npu:{torch.npu.get_device_name()}"
        return f"cuda:{torch.cuda.get_device_name()}"

    def generate(self, kernel: ir.Kernel) -> str:
        if flavor() == "ascend":
            from kernelforge.backends import npu_rules

            npu_rules.check(kernel)
        else:
            cuda_rules.check(kernel)
        return emitter.generate(kernel, emitter.NATIVE)

    def load(self, source: str, key: str) -> Launch:
        return loader.import_source(source, key, interpret=False).launch


class InterpretBackend:
    """Emitted Triton run by Triton's interpreter (`TRITON_INTERPRET=1`) on CPU tensors."""

    name = "interpret"

    def is_available(self) -> bool:
        return flavor() is not None

    def device_name(self) -> str:
        return "cpu-triton-interpreter"

    def generate(self, kernel: ir.Kernel) -> str:
        return emitter.generate(kernel, emitter.INTERPRET)

    def load(self, source: str, key: str) -> Launch:
        return loader.interpreted_call(loader.import_source(source, key, interpret=True).launch)
