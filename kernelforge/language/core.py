"""Declarations of the language's operations.

Each function here is a marker: `@builtin` tags it with the name the frontend looks up
in `kernelforge.frontend.builtins`, and makes a call from plain Python fail with a
message that points at the missing `@kf.jit`. Signatures document the accepted
arguments; the frontend enforces them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

BUILTIN_ATTR = "__kf_builtin__"


def builtin(fn: F) -> F:
    """Marks `fn` as a language builtin that only means something inside a kernel."""

    @functools.wraps(fn)
    def outside_kernel(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"kl.{fn.__name__}() can only be used inside a @kf.jit function "
            "(did you forget the @kf.jit decorator?)")

    setattr(outside_kernel, BUILTIN_ATTR, fn.__name__)
    return outside_kernel  # type: ignore[return-value]


class constexpr:
    """Annotation for compile-time parameters (`BLOCK: kl.constexpr`); inside a kernel,
    `kl.constexpr(v)` asserts that `v` is known at compile time."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"constexpr({self.value!r})"


def cdiv(a: Any, b: Any) -> Any:
    """Ceiling division; works on host ints (grid sizes) and on values inside a kernel."""
    return (a + b - 1) // b


setattr(cdiv, BUILTIN_ATTR, "cdiv")


@builtin
def program_id(axis: int) -> Any:
    """Index of this program along grid `axis` (0, 1 or 2), an int32 scalar."""


@builtin
def num_programs(axis: int) -> Any:
    """Number of programs along grid `axis`, an int32 scalar."""


@builtin
def arange(start: int, end: int) -> Any:
    """int32 block [start, end); bounds are constexprs and end - start a power of two."""


@builtin
def zeros(shape: Any, dtype: Any) -> Any:
    """Block of `shape` (constexpr) filled with zeros of `dtype`."""


@builtin
def full(shape: Any, value: Any, dtype: Any) -> Any:
    """Block of `shape` (constexpr) filled with `value` cast to `dtype`."""


@builtin
def load(pointer: Any, mask: Any = None, other: Any = None) -> Any:
    """Gathers the elements `pointer` points at; masked-off lanes read `other`."""


@builtin
def store(pointer: Any, value: Any, mask: Any = None) -> None:
    """Scatters `value` (cast to the pointee dtype) to `pointer` where `mask` holds."""


@builtin
def atomic_add(pointer: Any, val: Any, mask: Any = None) -> Any:
    """Atomically adds `val` at `pointer`; returns the previous values."""


@builtin
def where(condition: Any, x: Any, y: Any) -> Any:
    """Elementwise `x if condition else y`, with type promotion of `x` and `y`."""


@builtin
def maximum(x: Any, y: Any) -> Any:
    """Elementwise maximum."""


@builtin
def minimum(x: Any, y: Any) -> Any:
    """Elementwise minimum."""


@builtin
def exp(x: Any) -> Any:
    """e ** x (floating point; fp16/bf16 are computed in fp32)."""


@builtin
def exp2(x: Any) -> Any:
    """2 ** x."""


@builtin
def log(x: Any) -> Any:
    """Natural logarithm."""


@builtin
def log2(x: Any) -> Any:
    """Base-2 logarithm."""


@builtin
def sqrt(x: Any) -> Any:
    """Square root."""


@builtin
def rsqrt(x: Any) -> Any:
    """1 / sqrt(x)."""


@builtin
def sigmoid(x: Any) -> Any:
    """1 / (1 + exp(-x))."""


@builtin
def abs(x: Any) -> Any:
    """Absolute value (any numeric dtype)."""


@builtin
def cos(x: Any) -> Any:
    """Cosine."""


@builtin
def sin(x: Any) -> Any:
    """Sine."""


@builtin
def sum(input: Any, axis: Any = None, keep_dims: bool = False) -> Any:
    """Sum over `axis` (None: all); integers narrower than 32 bits sum in int32."""


@builtin
def max(input: Any, axis: Any = None, keep_dims: bool = False) -> Any:
    """Maximum over `axis` (None: all)."""


@builtin
def min(input: Any, axis: Any = None, keep_dims: bool = False) -> Any:
    """Minimum over `axis` (None: all)."""


@builtin
def argmax(input: Any, axis: Any, keep_dims: bool = False) -> Any:
    """int32 index of the maximum over `axis`; ties resolve to the smallest index."""


@builtin
def dot(a: Any, b: Any, acc: Any = None) -> Any:
    """Matrix product of 2-D blocks [M,K] x [K,N], accumulated in fp32 (int32 for int8), plus `acc`."""


@builtin
def trans(input: Any, *dims: Any) -> Any:
    """Permutes axes (default: reverses a 2-D block)."""


@builtin
def reshape(input: Any, *shape: Any) -> Any:
    """Same elements, new constexpr shape."""


@builtin
def broadcast_to(input: Any, *shape: Any) -> Any:
    """Broadcasts `input` to a constexpr shape."""


@builtin
def static_range(*args: int) -> Any:
    """`range` over constexprs, unrolled at compile time: `for i in kl.static_range(4)`."""

