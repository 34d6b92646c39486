"""Compiles emitted Triton for an NVIDIA GPU down to a cubin, without a GPU.

Upstream Triton runs its whole pipeline (TTIR, TTGIR, LLVM IR, PTX, then the bundled
`ptxas` to a cubin) on the host; only loading the cubin needs a device. So the
`triton` backend's CUDA path can be checked on a CPU-only machine for a chosen
architecture, which is what `cuda_check` does for every kernel of the project.

Only importable with upstream triton (the `.venv`).
"""

from __future__ import annotations

from kernelforge import ir
from kernelforge.errors import CompilationError
from kernelforge.backends.triton import cuda_rules, emitter, loader
from kernelforge.backends.triton.examples import Lowering, compiler_error


def lower(kernel: ir.Kernel, key: str, arch: int = 90) -> Lowering:
    """Compiles `kernel`'s native-flavour source for `GPUTarget("cuda", arch, 32)`."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    try:
        cuda_rules.check(kernel)
    except CompilationError as exc:
        return Lowering("ir", error=exc.message)
    source = emitter.generate(kernel, emitter.NATIVE)
    module = loader.import_source(source, f"cuda_{key}", interpret=False)
    fn = getattr(module, emitter.python_name(kernel.name))
    constexprs = {n: v for n, v in kernel.constexprs.items() if emitter.simple_constexpr(v)}
    signature = dict(zip(fn.arg_names, emitter.triton_types(kernel)))
    signature.update({n: "constexpr" for n in constexprs})
    try:
        compiled = triton.compile(ASTSource(fn, signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", arch, 32))
    except Exception as exc:  # noqa: BLE001 - any compiler failure is this kernel's result
        return Lowering("source", error=compiler_error(exc))
    return Lowering(list(compiled.asm)[-1], note=f"sm_{arch}")
