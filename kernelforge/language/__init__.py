"""The kernel language, `import kernelforge.language as kl`.

These names are declarations: the frontend (`kernelforge.frontend`) recognises them by
identity and gives them meaning while it compiles a `@kf.jit` function. Called from
ordinary Python they raise, except `cdiv` (also a host helper for grids) and the dtypes.
Names and semantics follow `triton.language`.
"""

from kernelforge.language.core import (
    abs, arange, argmax, atomic_add, broadcast_to, cdiv, constexpr, cos, dot, exp, exp2, full,
    load, log, log2, max, maximum, min, minimum, num_programs, program_id, reshape, rsqrt,
    sigmoid, sin, sqrt, static_range, store, sum, trans, where, zeros,
)
from kernelforge.language.dtypes import (
    bfloat16, float16, float32, float64, int1, int8, int16, int32, int64, uint8,
)

__all__ = [
    "abs", "arange", "argmax", "atomic_add", "broadcast_to", "cdiv", "constexpr", "cos", "dot",
    "exp", "exp2", "full", "load", "log", "log2", "max", "maximum", "min", "minimum",
    "num_programs", "program_id", "reshape", "rsqrt", "sigmoid", "sin", "sqrt", "static_range",
    "store", "sum", "trans", "where", "zeros",
    "bfloat16", "float16", "float32", "float64", "int1", "int8", "int16", "int32", "int64", "uint8",
]
