"""What a name can hold while a kernel is being compiled.

A `Tensor` is a runtime value: an IR operand (a `Var`, or a `Const` for a Python number
that took part in a runtime computation). Anything else bound to a name — ints, floats,
dtypes, tuples, functions, modules — is a compile-time (constexpr) value and stays a
plain Python object, which is how constexpr folding falls out for free.
"""

from __future__ import annotations

from dataclasses import dataclass

from kernelforge import ir


@dataclass(frozen=True, eq=False)
class Tensor:
    """A runtime value of the kernel, scalar or block, possibly a pointer."""

    handle: ir.Operand

    @property
    def type(self) -> ir.BlockType:
        return self.handle.type

    @property
    def dtype(self) -> ir.DType:
        return self.handle.type.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.handle.type.shape

    @property
    def is_pointer(self) -> bool:
        return self.handle.type.is_pointer

    @property
    def root(self) -> str | None:
        return self.handle.root if isinstance(self.handle, ir.Var) else None

    def __repr__(self) -> str:
        return f"Tensor({self.handle}: {self.type})"


@dataclass(frozen=True)
class PointerDType:
    """What `ptr.dtype` gives for a pointer, as in Triton: `ptr.dtype.element_ty` is the pointee."""

    element_ty: ir.DType

    def __repr__(self) -> str:
        return f"pointer<{self.element_ty!r}>"


@dataclass(frozen=True)
class Undefined:
    """A name that exists in Python's eyes but has no value at this point of the kernel
    (assigned on one arm of an `if` only, or inside a loop); using it is an error."""

    reason: str


class SemanticError(Exception):
    """A typing or shape rule was broken; the code generator adds the source location."""
