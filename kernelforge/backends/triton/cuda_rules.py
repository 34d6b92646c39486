"""NVIDIA rules checked on the IR before a kernel is compiled by upstream Triton.

Triton's NVIDIA backend pads small `dot` M and N onto tensor cores but needs the
reduction dimension K to fill at least one MMA step: 32 elements for 8-bit inputs, 16
for 16-bit, 8 for fp32 (`min_dot_size` in triton/backends/nvidia/compiler.py). A smaller
K fails deep in Triton's code generator; checking it here reports it on the kernel's own
source line instead. Ascend (min size 1) and the interpreter have no such limit, so the
IR allows any size and only this target rejects them.
"""

from __future__ import annotations

from kernelforge import ir
from kernelforge.errors import CompilationError

_MIN_K_BY_BITS = {8: 32, 16: 16, 32: 8, 64: 4}


def check(kernel: ir.Kernel) -> None:
    """Raises `CompilationError` for a `dot` whose K is below Triton's NVIDIA minimum."""
    for stmt in ir.walk(kernel.body):
        if not (isinstance(stmt, ir.Assign) and stmt.op == "dot"):
            continue
        a = stmt.args[0].type
        k = a.shape[-1]
        min_k = _MIN_K_BY_BITS[a.dtype.bits]
        if k < min_k:
            loc = stmt.loc or ir.Loc(kernel.file, kernel.line, 0, "")
            raise CompilationError(
                f"dot with K={k} on {a.dtype} inputs: Triton on NVIDIA GPUs needs K >= {min_k} "
                f"(M and N may be small); use a larger block for the reduction dimension",
                kernel=kernel.name, file=loc.file, line=loc.line, source_line=loc.source, col=loc.col)
