"""What each operation does to types and shapes (the role of triton's `semantic.py`).

Every function takes the `Builder` and frontend values (`Tensor`s or Python numbers),
checks the typing rules, inserts the explicit casts and broadcasts the IR requires
(see `kernelforge.ir`), emits the op and returns the result. Python numbers are
*weakly typed* as in Triton: they do not widen a tensor of the same or a higher kind
(`fp16_block * 2.0` stays fp16, `int32_block + 1` stays int32).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from kernelforge import ir
from kernelforge.frontend.builder import Builder
from kernelforge.frontend.values import SemanticError, Tensor
from kernelforge.ir import BlockType, Const, DType

Value = Any  # Tensor or a Python number
_INT32 = BlockType(DType.int32)

# ---------------------------------------------------------------------------- types


def is_number(x: Any) -> bool:
    return isinstance(x, (bool, int, float))


def number_dtype(x: bool | int | float) -> DType:
    """The dtype a Python number gets when it becomes a tensor (Triton's rules)."""
    if isinstance(x, bool):
        return DType.int1
    if isinstance(x, int):
        if -2**31 <= x < 2**31:
            return DType.int32
        if -2**63 <= x < 2**63:
            return DType.int64
        raise SemanticError(f"integer {x} does not fit in int64")
    magnitude = abs(x)
    if magnitude in (0.0, math.inf) or x != x or 2**-126 <= magnitude <= (2 - 2**-23) * 2**127:
        return DType.float32
    return DType.float64  # outside fp32's normal range


def _kind(d: DType) -> int:
    return 0 if d.is_bool else (2 if d.is_float else 1)


def _int_range(d: DType) -> tuple[int, int]:
    if d.is_bool:
        return 0, 1
    if d.is_signed:
        return -2**(d.bits - 1), 2**(d.bits - 1) - 1
    return 0, 2**d.bits - 1


def _integer_promote(a: DType, b: DType) -> DType:
    """C's usual arithmetic conversions for the integer types the IR has."""
    if a.is_signed == b.is_signed:
        return a if a.bits >= b.bits else b
    unsigned, signed = (a, b) if not a.is_signed else (b, a)
    return unsigned if unsigned.bits >= signed.bits else signed


def computation_type(a: DType, a_weak: bool, b: DType, b_weak: bool, div_or_mod: bool) -> DType:
    """Common dtype of a binary op (triton's `computation_type_impl`)."""
    if a_weak != b_weak:
        weak, strong = (a, b) if a_weak else (b, a)
        if _kind(weak) <= _kind(strong):
            a = b = strong
    if DType.float64 in (a, b):
        return DType.float64
    if div_or_mod and (a.is_float or b.is_float):
        return DType.float32
    if DType.float32 in (a, b):
        return DType.float32
    if DType.float16 in (a, b):
        return DType.float16
    if a is DType.bfloat16 and b is DType.bfloat16:
        return DType.bfloat16
    if DType.bfloat16 in (a, b):
        return DType.float32
    if div_or_mod and a.is_signed != b.is_signed:  # int1 counts as unsigned, as in Triton
        raise SemanticError(f"cannot use / or % with {a!r} and {b!r}: they differ in signedness; cast one")
    return _integer_promote(a, b)


def _fold_number(value: bool | int | float, dtype: DType) -> bool | int | float:
    """A Python number converted the way a cast to `dtype` would convert it."""
    if dtype.is_bool:
        return bool(value)
    if dtype.is_float:
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SemanticError(f"cannot convert {value} to {dtype!r}")
        value = int(value)  # truncates toward zero, like a C cast
    lo, hi = _int_range(dtype)
    if not lo <= int(value) <= hi:
        raise SemanticError(f"scalar {value} is out of range for {dtype!r}")
    return int(value)


def constant(value: bool | int | float, dtype: DType | None = None) -> Tensor:
    dtype = dtype or number_dtype(value)
    return Tensor(Const(_fold_number(value, dtype), BlockType(dtype)))


def to_tensor(x: Value) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if is_number(x):
        return constant(x)
    raise SemanticError(f"expected a tensor or a number, got {describe(x)}")


def describe(x: Any) -> str:
    """How a value reads in an error message."""
    if isinstance(x, Tensor):
        return f"a tensor of type {x.type}"
    if isinstance(x, DType):
        return f"the dtype {x!r}"
    return f"{type(x).__name__} {x!r}"


def cast(b: Builder, x: Value, dtype: DType) -> Tensor:
    if not isinstance(x, Tensor):
        if not is_number(x):
            raise SemanticError(f"cannot cast {describe(x)} to {dtype!r}")
        return constant(x, dtype)
    if x.is_pointer:
        raise SemanticError(f"cannot cast pointer {x.type} to {dtype!r}")
    if x.dtype is dtype:
        return x
    if isinstance(x.handle, Const):
        return constant(x.handle.value, dtype)
    return b.op("cast", (x,), x.type.with_dtype(dtype))


# ---------------------------------------------------------------------------- shapes


def _check_block_shape(shape: Sequence[Any], what: str) -> tuple[int, ...]:
    dims = []
    for d in shape:
        if isinstance(d, Tensor) or not isinstance(d, int) or isinstance(d, bool):
            raise SemanticError(f"{what}: shape must be a tuple of constexpr ints, got {describe(d)}")
        if d <= 0 or d & (d - 1):
            raise SemanticError(f"{what}: every dimension must be a power of two, got {tuple(shape)}")
        dims.append(d)
    return tuple(dims)


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if not a:
        return b
    if not b:
        return a
    rank = max(len(a), len(b))
    a1 = (1,) * (rank - len(a)) + a
    b1 = (1,) * (rank - len(b)) + b
    out = []
    for x, y in zip(a1, b1):
        if x != y and 1 not in (x, y):
            raise SemanticError(f"incompatible shapes {list(a)} and {list(b)} for broadcasting")
        out.append(max(x, y))
    return tuple(out)


def expand_dims(b: Builder, x: Tensor, axis: int) -> Tensor:
    rank = len(x.shape)
    if not -rank - 1 <= axis <= rank:
        raise SemanticError(f"expand_dims axis {axis} out of range for shape {list(x.shape)}")
    axis = axis % (rank + 1)
    if rank == 0:
        return to_shape(b, x, (1,))
    shape = x.shape[:axis] + (1,) + x.shape[axis:]
    return b.op("expand_dims", (x,), x.type.with_shape(shape), root=x.root, axis=axis)


def _splat_pointer(b: Builder, p: Tensor, shape: tuple[int, ...]) -> Tensor:
    zeros = b.op("full", (constant(0, DType.int32),), BlockType(DType.int32, shape))
    return b.op("addptr", (p, zeros), p.type.with_shape(shape), root=p.root)


def to_shape(b: Builder, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """`x` broadcast to exactly `shape` (scalars are splatted with `full`)."""
    if x.shape == shape:
        return x
    if x.shape == ():
        if x.is_pointer:
            return _splat_pointer(b, x, shape)
        return b.op("full", (x,), x.type.with_shape(shape))
    if broadcast_shapes(x.shape, shape) != shape:
        raise SemanticError(f"cannot broadcast shape {list(x.shape)} to {list(shape)}")
    while len(x.shape) < len(shape):
        x = expand_dims(b, x, 0)
    if x.shape == shape:
        return x
    return b.op("broadcast_to", (x,), x.type.with_shape(shape), root=x.root)


def broadcast_values(b: Builder, *xs: Tensor) -> list[Tensor]:
    """Brings blocks to their common shape; scalars stay scalars (the IR allows them)."""
    shape: tuple[int, ...] = ()
    for x in xs:
        shape = broadcast_shapes(shape, x.shape)
    return [x if x.shape in ((), shape) else to_shape(b, x, shape) for x in xs]


def result_shape(*xs: Tensor) -> tuple[int, ...]:
    shape: tuple[int, ...] = ()
    for x in xs:
        shape = broadcast_shapes(shape, x.shape)
    return shape


# ---------------------------------------------------------------------------- binary ops


def _promote_pair(b: Builder, x: Value, y: Value, div_or_mod: bool = False) -> tuple[Tensor, Tensor]:
    x_weak, y_weak = not isinstance(x, Tensor), not isinstance(y, Tensor)
    tx, ty = to_tensor(x), to_tensor(y)
    dtype = computation_type(tx.dtype, x_weak, ty.dtype, y_weak, div_or_mod)
    tx = cast(b, x, dtype) if x_weak else cast(b, tx, dtype)
    ty = cast(b, y, dtype) if y_weak else cast(b, ty, dtype)
    tx, ty = broadcast_values(b, tx, ty)
    return tx, ty


def _elementwise(b: Builder, op: str, args: Sequence[Tensor], dtype: DType) -> Tensor:
    shape = result_shape(*args)
    return b.op(op, tuple(args), BlockType(dtype, shape))


def add(b: Builder, x: Value, y: Value) -> Tensor:
    if isinstance(y, Tensor) and y.is_pointer and not (isinstance(x, Tensor) and x.is_pointer):
        x, y = y, x
    if isinstance(x, Tensor) and x.is_pointer:
        return addptr(b, x, y)
    return _arith(b, "add", x, y)


def sub(b: Builder, x: Value, y: Value) -> Tensor:
    if isinstance(x, Tensor) and x.is_pointer:
        if isinstance(y, Tensor) and y.is_pointer:
            raise SemanticError("cannot subtract pointers")
        return addptr(b, x, neg(b, y) if isinstance(y, Tensor) else -y)
    return _arith(b, "sub", x, y)


def addptr(b: Builder, p: Tensor, offset: Value) -> Tensor:
    if isinstance(offset, Tensor) and offset.is_pointer:
        raise SemanticError("cannot add two pointers")
    off = to_tensor(offset)
    if not off.dtype.is_int or off.dtype.is_bool:
        raise SemanticError(f"pointer offsets must be integers, got {off.dtype!r}")
    p, off = broadcast_values(b, p, off)
    shape = result_shape(p, off)
    return b.op("addptr", (p, off), p.type.with_shape(shape), root=p.root)


def _reject_pointers(op: str, *xs: Value) -> None:
    for x in xs:
        if isinstance(x, Tensor) and x.is_pointer:
            raise SemanticError(f"operator {op!r} is not defined on pointers ({x.type})")


def _arith(b: Builder, op: str, x: Value, y: Value) -> Tensor:
    _reject_pointers(op, x, y)
    tx, ty = _promote_pair(b, x, y)
    if tx.dtype.is_bool and op in ("add", "sub", "mul"):
        raise SemanticError(f"arithmetic {op!r} on int1 values; cast them to an integer type first")
    return _elementwise(b, op, (tx, ty), tx.dtype)


def mul(b: Builder, x: Value, y: Value) -> Tensor:
    return _arith(b, "mul", x, y)


def truediv(b: Builder, x: Value, y: Value) -> Tensor:
    _reject_pointers("/", x, y)
    tx, ty = _promote_pair(b, x, y, div_or_mod=True)
    if tx.dtype.is_int:
        tx, ty = cast(b, tx, DType.float32), cast(b, ty, DType.float32)
    return _elementwise(b, "truediv", (tx, ty), tx.dtype)


def floordiv(b: Builder, x: Value, y: Value) -> Tensor:
    """Integer division truncating toward zero (C semantics, like Triton)."""
    _reject_pointers("//", x, y)
    tx, ty = _promote_pair(b, x, y, div_or_mod=True)
    if not tx.dtype.is_int or tx.dtype.is_bool:
        raise SemanticError(f"// is only defined on integers, got {tx.dtype!r}; use / for floats")
    return _elementwise(b, "floordiv", (tx, ty), tx.dtype)


def mod(b: Builder, x: Value, y: Value) -> Tensor:
    """Remainder with the sign of the dividend (C's % and fmod, like Triton)."""
    _reject_pointers("%", x, y)
    tx, ty = _promote_pair(b, x, y, div_or_mod=True)
    if tx.dtype.is_bool:
        raise SemanticError("% is not defined on int1")
    return _elementwise(b, "mod", (tx, ty), tx.dtype)


def bitwise(b: Builder, op: str, x: Value, y: Value) -> Tensor:
    _reject_pointers(op, x, y)
    tx, ty = _promote_pair(b, x, y)
    if tx.dtype.is_float:
        raise SemanticError(f"bitwise {op!r} needs integer operands, got {tx.dtype!r}")
    if op in ("shl", "shr") and tx.dtype.is_bool:
        raise SemanticError("shifts are not defined on int1")
    return _elementwise(b, op, (tx, ty), tx.dtype)


def minimum(b: Builder, x: Value, y: Value) -> Tensor:
    _reject_pointers("minimum", x, y)
    tx, ty = _promote_pair(b, x, y)
    return _elementwise(b, "minimum", (tx, ty), tx.dtype)


def maximum(b: Builder, x: Value, y: Value) -> Tensor:
    _reject_pointers("maximum", x, y)
    tx, ty = _promote_pair(b, x, y)
    return _elementwise(b, "maximum", (tx, ty), tx.dtype)


def compare(b: Builder, op: str, x: Value, y: Value) -> Tensor:
    if any(isinstance(v, Tensor) and v.is_pointer for v in (x, y)):
        raise SemanticError("comparing pointers is not supported; compare offsets instead")
    tx, ty = _promote_pair(b, x, y)
    return _elementwise(b, op, (tx, ty), DType.int1)


def to_bool(b: Builder, x: Value) -> Tensor:
    """`x != 0` unless `x` already is int1 (truth value of a runtime value)."""
    t = to_tensor(x)
    _reject_pointers("truth value", t)
    return t if t.dtype.is_bool else compare(b, "ne", t, 0)


def logical(b: Builder, op: str, x: Value, y: Value) -> Tensor:
    tx, ty = broadcast_values(b, to_bool(b, x), to_bool(b, y))
    return _elementwise(b, op, (tx, ty), DType.int1)


# ---------------------------------------------------------------------------- unary ops


def neg(b: Builder, x: Value) -> Tensor:
    t = to_tensor(x)
    _reject_pointers("-", t)
    if t.dtype.is_bool:
        raise SemanticError("unary - is not defined on int1")
    return b.op("neg", (t,), t.type)


def invert(b: Builder, x: Value) -> Tensor:
    t = to_tensor(x)
    _reject_pointers("~", t)
    if t.dtype.is_float:
        raise SemanticError(f"~ needs an integer operand, got {t.dtype!r}")
    return b.op("invert", (t,), t.type)


def logical_not(b: Builder, x: Value) -> Tensor:
    t = to_bool(b, x)
    return b.op("not", (t,), t.type)


def math_unary(b: Builder, op: str, x: Value) -> Tensor:
    """exp, log, sqrt, ...: floating point only; fp16/bf16 are computed in fp32 and cast back."""
    t = to_tensor(x)
    _reject_pointers(op, t)
    if not t.dtype.is_float:
        raise SemanticError(f"kl.{op} needs a floating-point operand, got {t.dtype!r}; cast it with .to()")
    wide = t.dtype in (DType.float32, DType.float64)
    u = t if wide else cast(b, t, DType.float32)
    r = b.op(op, (u,), u.type)
    return r if wide else cast(b, r, t.dtype)


def abs_(b: Builder, x: Value) -> Tensor:
    t = to_tensor(x)
    _reject_pointers("abs", t)
    if t.dtype.is_bool or (t.dtype.is_int and not t.dtype.is_signed):
        return t
    return b.op("abs", (t,), t.type)


# ---------------------------------------------------------------------------- creation


def program_id(b: Builder, axis: int) -> Tensor:
    _check_grid_axis(axis)
    return b.op("program_id", (), _INT32, axis=axis)


def num_programs(b: Builder, axis: int) -> Tensor:
    _check_grid_axis(axis)
    return b.op("num_programs", (), _INT32, axis=axis)


def _check_grid_axis(axis: Any) -> None:
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise SemanticError(f"grid axis must be the constexpr 0, 1 or 2, got {describe(axis)}")


def arange(b: Builder, start: Any, end: Any) -> Tensor:
    for name, v in (("start", start), ("end", end)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise SemanticError(f"arange {name} must be a constexpr int, got {describe(v)} "
                                "(annotate the parameter with kl.constexpr)")
    n = end - start
    if n <= 0 or n & (n - 1):
        raise SemanticError(f"arange's range must be a positive power of two, got arange({start}, {end})")
    return b.op("arange", (), BlockType(DType.int32, (n,)), start=start, end=end)


def full(b: Builder, shape: Any, value: Value, dtype: Any) -> Tensor:
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise SemanticError(f"shape must be a constexpr tuple, got {describe(shape)}")
    dims = _check_block_shape(shape, "full") if shape else ()
    if not isinstance(dtype, DType):
        raise SemanticError(f"dtype must be a kl dtype such as kl.float32, got {describe(dtype)}")
    fill = cast(b, value, dtype)
    if fill.shape != ():
        raise SemanticError("the fill value of kl.full must be a scalar")
    if not dims:
        return fill if isinstance(fill.handle, ir.Var) else b.op("full", (fill,), BlockType(dtype))
    return b.op("full", (fill,), BlockType(dtype, dims))


# ---------------------------------------------------------------------------- selection


def where(b: Builder, cond: Value, x: Value, y: Value) -> Tensor:
    c = to_tensor(cond)
    if not c.dtype.is_bool:
        c = to_bool(b, c)
    if any(isinstance(v, Tensor) and v.is_pointer for v in (x, y)):
        raise SemanticError("kl.where on pointers is not supported; select offsets instead")
    tensors = [v for v in (x, y) if isinstance(v, Tensor)]
    numbers = [v for v in (x, y) if not isinstance(v, Tensor)]
    dtype = None
    for t in tensors:
        dtype = t.dtype if dtype is None else computation_type(dtype, False, t.dtype, False, False)
    for n in numbers:
        nd = number_dtype(n) if is_number(n) else None
        if nd is None:
            raise SemanticError(f"kl.where operands must be tensors or numbers, got {describe(n)}")
        dtype = nd if dtype is None else computation_type(dtype, not tensors, nd, True, False)
    tx, ty = cast(b, x, dtype), cast(b, y, dtype)
    c, tx, ty = broadcast_values(b, c, tx, ty)
    return _elementwise(b, "where", (c, tx, ty), dtype)


# ---------------------------------------------------------------------------- reductions


def _reduce_axis(x: Tensor, axis: Any, name: str) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise SemanticError(f"kl.{name} axis must be a constexpr int or None, got {describe(axis)}")
    rank = len(x.shape)
    if not -rank <= axis < rank:
        raise SemanticError(f"kl.{name} axis {axis} out of range for shape {list(x.shape)}")
    return axis % rank


def reduce(b: Builder, op: str, x: Value, axis: Any = None, keep_dims: Any = False) -> Tensor:
    t = to_tensor(x)
    _reject_pointers(op, t)
    if t.shape == ():
        raise SemanticError(f"kl.{op} needs a block, got a scalar")
    ax = _reduce_axis(t, axis, op)
    if ax is None and op == "argmax":
        raise SemanticError("kl.argmax needs an axis")
    keep = bool(keep_dims)
    if op == "sum" and t.dtype.is_int and t.dtype.bits < 32:
        t = cast(b, t, DType.int32)
    if ax is None:
        shape = (1,) * len(t.shape) if keep else ()
    elif keep:
        shape = t.shape[:ax] + (1,) + t.shape[ax + 1:]
    else:
        shape = t.shape[:ax] + t.shape[ax + 1:]
    dtype = DType.int32 if op == "argmax" else t.dtype
    return b.op(op, (t,), BlockType(dtype, shape), axis=ax, keep_dims=keep)


# ---------------------------------------------------------------------------- linear algebra


_DOT_INPUTS = (DType.int8, DType.float16, DType.bfloat16, DType.float32)


def dot(b: Builder, x: Value, y: Value, acc: Value = None) -> Tensor:
    a, c = to_tensor(x), to_tensor(y)
    _reject_pointers("dot", a, c)
    if len(a.shape) != 2 or len(c.shape) != 2:
        raise SemanticError(f"kl.dot needs 2-D blocks, got {list(a.shape)} and {list(c.shape)}")
    if a.shape[1] != c.shape[0]:
        raise SemanticError(f"kl.dot inner dimensions differ: {list(a.shape)} x {list(c.shape)}")
    if a.dtype not in _DOT_INPUTS or c.dtype not in _DOT_INPUTS:
        raise SemanticError(f"kl.dot inputs must be int8, float16, bfloat16 or float32, "
                            f"got {a.dtype!r} and {c.dtype!r}")
    if a.dtype is not c.dtype:
        raise SemanticError(f"kl.dot inputs must share a dtype, got {a.dtype!r} and {c.dtype!r}")
    m, k, n = a.shape[0], a.shape[1], c.shape[1]
    out = DType.int32 if a.dtype is DType.int8 else DType.float32
    if acc is None:
        return b.op("dot", (a, c), BlockType(out, (m, n)))
    t = to_tensor(acc)
    if t.shape != (m, n):
        raise SemanticError(f"kl.dot accumulator must have shape {[m, n]}, got {list(t.shape)}")
    if t.dtype is not out:
        raise SemanticError(f"kl.dot accumulator must be {out!r} for {a.dtype!r} inputs, got {t.dtype!r}")
    return b.op("dot", (a, c, t), BlockType(out, (m, n)))


def trans(b: Builder, x: Value, dims: Sequence[Any]) -> Tensor:
    t = to_tensor(x)
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    rank = len(t.shape)
    perm = tuple(dims) if dims else tuple(reversed(range(rank)))
    if sorted(perm) != list(range(rank)):
        raise SemanticError(f"kl.trans permutation {list(perm)} does not match rank {rank}")
    shape = tuple(t.shape[i] for i in perm)
    return b.op("trans", (t,), t.type.with_shape(shape), root=t.root, perm=perm)


def _shape_arg(shape: Sequence[Any]) -> tuple[Any, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(b: Builder, x: Value, shape: Sequence[Any]) -> Tensor:
    t = to_tensor(x)
    dims = _check_block_shape(_shape_arg(shape), "kl.reshape")
    if math.prod(dims) != t.type.numel:
        raise SemanticError(f"kl.reshape cannot turn {list(t.shape)} into {list(dims)}: sizes differ")
    if dims == t.shape:
        return t
    return b.op("reshape", (t,), t.type.with_shape(dims), root=t.root)


def broadcast_to(b: Builder, x: Value, shape: Sequence[Any]) -> Tensor:
    t = to_tensor(x)
    dims = _check_block_shape(_shape_arg(shape), "kl.broadcast_to")
    return to_shape(b, t, dims)


# ---------------------------------------------------------------------------- memory


def _pointer(p: Value, what: str) -> Tensor:
    if not isinstance(p, Tensor) or not p.is_pointer:
        raise SemanticError(f"{what} needs a pointer (a tensor argument plus offsets), got {describe(p)}")
    return p


def _mask(b: Builder, mask: Value) -> Tensor:
    m = to_tensor(mask)
    if not m.dtype.is_bool:
        raise SemanticError(f"mask must be a boolean (int1) value, got {m.dtype!r}")
    return m


def load(b: Builder, ptr: Value, mask: Value = None, other: Value = None) -> Tensor:
    p = _pointer(ptr, "kl.load")
    if mask is None:
        if other is not None:
            raise SemanticError("kl.load got `other` without `mask`")
        return b.op("load", (p,), BlockType(p.dtype, p.shape))
    m = _mask(b, mask)
    shape = result_shape(p, m)
    p, m = to_shape(b, p, shape), to_shape(b, m, shape)
    if other is None:
        return b.op("load", (p, m), BlockType(p.dtype, shape))
    o = cast(b, other, p.dtype)
    if o.shape != ():
        if broadcast_shapes(o.shape, shape) != shape:
            raise SemanticError(f"`other` of shape {list(o.shape)} does not fit the loaded shape {list(shape)}")
        o = to_shape(b, o, shape)
    return b.op("load", (p, m, o), BlockType(p.dtype, shape))


def _store_operands(b: Builder, ptr: Value, value: Value, mask: Value, what: str):
    p = _pointer(ptr, what)
    v = cast(b, value, p.dtype) if not (isinstance(value, Tensor) and value.is_pointer) else None
    if v is None:
        raise SemanticError(f"{what} cannot write a pointer")
    m = _mask(b, mask) if mask is not None else None
    shape = result_shape(*(x for x in (p, v, m) if x is not None))
    p, v = to_shape(b, p, shape), to_shape(b, v, shape)
    if m is not None:
        m = to_shape(b, m, shape)
    return p, v, m


def store(b: Builder, ptr: Value, value: Value, mask: Value = None) -> None:
    p, v, m = _store_operands(b, ptr, value, mask, "kl.store")
    b.emit(ir.Store(p.handle, v.handle, m.handle if m is not None else None, b.loc))


def atomic_add(b: Builder, ptr: Value, value: Value, mask: Value = None) -> Tensor:
    p, v, m = _store_operands(b, ptr, value, mask, "kl.atomic_add")
    args = (p, v) if m is None else (p, v, m)
    return b.op("atomic_add", args, BlockType(p.dtype, p.shape))
