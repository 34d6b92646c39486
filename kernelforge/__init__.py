"""kernelforge: LLM-serving kernels written once in a Triton-style DSL.

    import kernelforge as kf
    import kernelforge.language as kl

    @kf.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: kl.constexpr): ...

    add_kernel[(kf.cdiv(n, 128),)](x, y, out, n, BLOCK=128)
"""

from kernelforge.autotuning import Config, autotune
from kernelforge.backends import available_backends, backend, num_cores
from kernelforge.errors import CompilationError, KernelFault
from kernelforge.jit import JITFunction, jit
from kernelforge.language import cdiv

__all__ = [
    "CompilationError", "Config", "JITFunction", "KernelFault", "autotune", "available_backends",
    "backend", "cdiv", "jit", "num_cores",
]
