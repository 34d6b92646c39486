"""Meaning of each `kernelforge.language` builtin, looked up by its marker name.

Arguments are bound against the `kl` declaration's own signature, so keyword use,
defaults and arity errors match what the user reads in `kernelforge/language/core.py`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import kernelforge.language as kl
from kernelforge.frontend import semantic as sem
from kernelforge.frontend.builder import Builder
from kernelforge.frontend.values import SemanticError, Tensor
from kernelforge.language.core import BUILTIN_ATTR


def _cdiv(b: Builder, a: Any, d: Any) -> Any:
    if not isinstance(a, Tensor) and not isinstance(d, Tensor):
        return (a + d - 1) // d
    if not isinstance(d, Tensor):
        return sem.floordiv(b, sem.add(b, a, d - 1), d)
    return sem.floordiv(b, sem.sub(b, sem.add(b, a, d), 1), d)


def _math(op: str) -> Callable[..., Tensor]:
    return lambda b, x: sem.math_unary(b, op, x)


def _reduction(op: str) -> Callable[..., Tensor]:
    return lambda b, input, axis=None, keep_dims=False: sem.reduce(b, op, input, axis, keep_dims)


_IMPLS: dict[str, Callable[..., Any]] = {
    "program_id": lambda b, axis: sem.program_id(b, axis),
    "num_programs": lambda b, axis: sem.num_programs(b, axis),
    "arange": lambda b, start, end: sem.arange(b, start, end),
    "zeros": lambda b, shape, dtype: sem.full(b, shape, 0, dtype),
    "full": lambda b, shape, value, dtype: sem.full(b, shape, value, dtype),
    "load": lambda b, pointer, mask=None, other=None: sem.load(b, pointer, mask, other),
    "store": lambda b, pointer, value, mask=None: sem.store(b, pointer, value, mask),
    "atomic_add": lambda b, pointer, val, mask=None: sem.atomic_add(b, pointer, val, mask),
    "where": lambda b, condition, x, y: sem.where(b, condition, x, y),
    "maximum": lambda b, x, y: sem.maximum(b, x, y),
    "minimum": lambda b, x, y: sem.minimum(b, x, y),
    "abs": lambda b, x: sem.abs_(b, x),
    "sum": _reduction("sum"), "max": _reduction("max"), "min": _reduction("min"),
    "argmax": lambda b, input, axis, keep_dims=False: sem.reduce(b, "argmax", input, axis, keep_dims),
    "dot": lambda b, x, y, acc=None: sem.dot(b, x, y, acc),
    "trans": lambda b, input, *dims: sem.trans(b, input, dims),
    "reshape": lambda b, input, *shape: sem.reshape(b, input, shape),
    "broadcast_to": lambda b, input, *shape: sem.broadcast_to(b, input, shape),
    "cdiv": _cdiv,
    **{op: _math(op) for op in ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "cos", "sin")},
}

@functools.lru_cache(maxsize=None)
def _signature(name: str) -> inspect.Signature:
    return inspect.signature(getattr(kl, name))


def builtin_name(obj: Any) -> str | None:
    """The builtin `obj` declares, or None when it is not a language builtin."""
    try:
        return getattr(obj, BUILTIN_ATTR, None)
    except Exception:  # objects with exotic __getattr__ are simply not builtins
        return None


def call_builtin(b: Builder, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
    if name == "static_range":
        raise SemanticError("kl.static_range can only be iterated over by a for loop")
    impl = _IMPLS.get(name)
    if impl is None:
        raise SemanticError(f"kl.{name} cannot be called here")
    try:
        bound = _signature(name).bind(*args, **kwargs)
    except TypeError as exc:
        raise SemanticError(f"kl.{name}(): {exc}") from None
    bound.apply_defaults()
    # Positionally, so that the declarations' parameter names never clash with the builder's.
    return impl(b, *bound.args, **bound.kwargs)


# Tensor methods that forward to a builtin with the tensor as first argument.
TENSOR_METHODS = {"sum", "max", "min", "argmax", "trans", "reshape", "broadcast_to", "exp", "exp2",
                  "log", "log2", "sqrt", "rsqrt", "sigmoid", "abs", "cos", "sin"}
