"""Compiles emitted Triton for an Ascend 910B as far as a machine without CANN allows.

triton-ascend 3.2's NPU pipeline (`triton/backends/ascend/compiler.py`,
`AscendBackend.add_stages`) has three stages:

1. `ttir`: the `@triton.jit` AST to Triton IR, then the common TTIR passes (in-process).
2. `ttadapter`: the shipped `triton-adapter-opt` binary lowers TTIR to linalg plus the
   HIVM/HFusion annotations (`--triton-to-annotation ... --triton-to-linalg`).
3. `npubin`: CANN's `bishengir-compile` turns that into an NPU binary.

Stages 1-2 need only the triton-ascend wheel, so they run here for target
`GPUTarget("npu", "Ascend910B3", 0)`; stage 3 runs only where `bishengir-compile` is
installed and is otherwise reported as skipped. A kernel that fails stage 1 or 2 would
fail on a real NPU too, which is what `make check-ascend` is for.

Only importable inside an environment with triton-ascend (`.venv-ascend`).
"""

from __future__ import annotations

import os

from kernelforge import ir
from kernelforge.backends import npu_rules
from kernelforge.backends.triton import emitter, loader
from kernelforge.backends.triton.examples import Lowering, compiler_error

TARGET_ARCH = "Ascend910B3"


def lower(kernel: ir.Kernel, key: str) -> Lowering:
    """Runs `kernel` through the NPU rules and triton-ascend's stages (see the module docstring)."""
    from triton._C.libtriton import ir as tir
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource, make_backend

    types = emitter.triton_types(kernel)
    try:
        ub = npu_rules.check_ub(kernel).peak_bytes
    except npu_rules.NPUResourceError as exc:
        return Lowering("ir", error=exc.message)
    source = emitter.generate(kernel, emitter.NATIVE)
    module = loader.import_source(source, f"ascend_{key}", interpret=False)
    fn = getattr(module, emitter.python_name(kernel.name))
    signature = dict(zip(fn.arg_names, types))
    constants = {n: v for n, v in kernel.constexprs.items() if emitter.simple_constexpr(v)}

    target = GPUTarget("npu", TARGET_ARCH, 0)
    backend = make_backend(target)
    options = backend.parse_options({})
    stages: dict = {}
    backend.add_stages(stages, options)
    metadata = {"hash": key, "target": target, **options.__dict__}
    context = tir.context()
    tir.load_dialects(context)
    backend.load_dialects(context)
    result = Lowering("ir", note=f"UB {ub / 1024:5.1f} KiB",
                      warnings=tuple(npu_rules.alignment_warnings(kernel)))
    try:
        src = ASTSource(fn, signature, constants)
        module_ir = src.make_ir(options, backend.get_codegen_implementation(), backend.get_module_map(), context)
        module_ir = stages["ttir"](module_ir, metadata)
        result.stage = "ttir"
        linalg = stages["ttadapter"](module_ir, metadata)
        result.stage = "linalg"
    except Exception as exc:  # noqa: BLE001 - any compiler failure is this kernel's result
        result.error = compiler_error(exc)
        return result
    if not _bishengir_available():
        result.error, result.skipped = "bishengir-compile not found (CANN is not installed)", True
        return result
    try:
        stages["npubin"](linalg, metadata)
        result.stage = "npubin"
    except Exception as exc:  # noqa: BLE001
        result.error = compiler_error(exc)
    return result


def _bishengir_available() -> bool:
    from triton.backends.ascend.utils import _get_npucompiler_path

    # triton-ascend falls back to "$TRITON_NPU_COMPILER_PATH/npuc" without checking it exists.
    path = _get_npucompiler_path()
    return os.path.isfile(path) and os.access(path, os.X_OK)
