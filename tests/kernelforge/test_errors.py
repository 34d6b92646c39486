"""Compile errors name the kernel, the file, the line and the offending source text, with a
caret; they never surface as a traceback from inside the compiler."""

from __future__ import annotations

import inspect
import pickle

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.errors import CompilationError, KernelFault

THIS_FILE = inspect.getsourcefile(lambda: None)


def compile_error(fn, **constexprs) -> CompilationError:
    with pytest.raises(CompilationError) as info:
        fn.source("ir", **constexprs)
    return info.value


def line_of(fn, needle: str) -> int:
    lines, first = inspect.getsourcelines(fn.fn)
    return first + next(i for i, text in enumerate(lines) if needle in text)


def assert_points_at(err: CompilationError, fn, needle: str, message: str) -> None:
    text = str(err)
    assert err.kernel == fn.__name__ and f"in kernel '{fn.__name__}'" in text
    assert err.file == THIS_FILE and f"{THIS_FILE}:{line_of(fn, needle)}:" in text
    assert needle in err.source_line and needle in text
    assert "^" in text
    assert message in text


@kf.jit
def unknown_name(x_ptr):
    kl.store(x_ptr, undefined_thing)  # noqa: F821


@kf.jit
def runtime_arange(x_ptr, n):
    kl.store(x_ptr + kl.arange(0, n), 1.0)


@kf.jit
def shape_mismatch(x_ptr):
    a = kl.arange(0, 16)
    b = kl.arange(0, 32)
    kl.store(x_ptr + a, a + b)


@kf.jit
def uses_while(x_ptr, n):
    i = 0
    while i < n:
        i += 1


@kf.jit
def uses_lambda(x_ptr):
    f = lambda v: v  # noqa: E731
    kl.store(x_ptr, f(1.0))


@kf.jit
def nested_def(x_ptr):
    def inner(v):
        return v
    kl.store(x_ptr, inner(1.0))


@kf.jit
def leaves_loop_early(x_ptr, n):
    for i in range(n):
        break


@kf.jit
def loop_type_change(x_ptr, n):
    acc = 0
    for i in range(n):
        acc = acc + 0.5
    kl.store(x_ptr, acc)


@kf.jit
def loop_shape_change(x_ptr, n, BLOCK: kl.constexpr = 16):
    acc = 0.0
    for i in range(n):
        acc = acc + kl.load(x_ptr + kl.arange(0, BLOCK))
    kl.store(x_ptr, acc)


@kf.jit
def branch_type_mismatch(x_ptr, n):
    if n > 0:
        v = 1
    else:
        v = 1.0
    kl.store(x_ptr, v)


@kf.jit
def one_arm_only(x_ptr, n):
    if n > 0:
        w = 2.0
    kl.store(x_ptr, w)


@kf.jit
def loop_local_after_loop(x_ptr, n):
    for i in range(n):
        tmp = 1.0
    kl.store(x_ptr, tmp)


@kf.jit
def returns_a_value(x_ptr):
    return kl.load(x_ptr)


@kf.jit
def block_condition(x_ptr):
    x = kl.load(x_ptr + kl.arange(0, 16))
    if x > 0:
        kl.store(x_ptr, 1.0)


@kf.jit
def float_offsets(x_ptr):
    kl.store(x_ptr + 1.5, 1.0)


@kf.jit
def not_power_of_two(x_ptr):
    kl.store(x_ptr + kl.arange(0, 10), 1.0)


@kf.jit
def _bad_helper(x):
    return x + missing_in_helper  # noqa: F821


@kf.jit
def calls_bad_helper(x_ptr):
    kl.store(x_ptr, _bad_helper(1.0))


@kf.jit
def store_to_subscript(x_ptr):
    x_ptr[0] = 1.0


@kf.jit
def bad_builtin_args(x_ptr):
    kl.store(x_ptr, kl.exp(1.0, 2.0))


@kf.jit
def int_exp(x_ptr):
    kl.store(x_ptr, kl.exp(kl.arange(0, 16)))


@kf.jit
def dot_inner_mismatch(x_ptr):
    a = kl.zeros((16, 32), dtype=kl.float32)
    kl.store(x_ptr, kl.sum(kl.dot(a, a), axis=None))


@kf.jit
def static_assert(x_ptr, BLOCK: kl.constexpr):
    assert BLOCK >= 16, "BLOCK must be at least 16"
    kl.store(x_ptr, 1.0)


@pytest.mark.parametrize("fn, needle, message", [
    (unknown_name, "undefined_thing", "unknown name 'undefined_thing'"),
    (runtime_arange, "kl.arange(0, n)", "arange end must be a constexpr"),
    (shape_mismatch, "a + b", "incompatible shapes [16] and [32]"),
    (uses_while, "while i < n", "while loops are not supported"),
    (uses_lambda, "lambda v: v", "unsupported construct in a kernel: Lambda"),
    (nested_def, "def inner(v):", "functions cannot be defined inside a kernel"),
    (leaves_loop_early, "break", "break is not supported"),
    (loop_type_change, "for i in range(n)", "Loop-carried variable 'acc' has initial type int32"),
    (loop_shape_change, "for i in range(n)", "re-assigned to float32[16]"),
    (branch_type_mismatch, "if n > 0", "Mismatched type for 'v'"),
    (one_arm_only, "kl.store(x_ptr, w)", "'w' is assigned on only one branch of the if"),
    (loop_local_after_loop, "kl.store(x_ptr, tmp)", "'tmp' is assigned inside the for loop"),
    (returns_a_value, "return kl.load(x_ptr)", "a kernel cannot return a value"),
    (block_condition, "x > 0", "if condition must be a scalar"),
    (float_offsets, "x_ptr + 1.5", "pointer offsets must be integers"),
    (not_power_of_two, "kl.arange(0, 10)", "power of two"),
    (store_to_subscript, "x_ptr[0] = 1.0", "cannot assign to Subscript"),
    (bad_builtin_args, "kl.exp(1.0, 2.0)", "kl.exp()"),
    (int_exp, "kl.exp(kl.arange(0, 16))", "kl.exp needs a floating-point operand"),
    (dot_inner_mismatch, "kl.dot(a, a)", "kl.dot inner dimensions differ: [16, 32] x [16, 32]"),
])
def test_error_names_kernel_file_line_and_source(fn, needle, message):
    assert_points_at(compile_error(fn), fn, needle, message)


def test_static_assert_uses_constexprs():
    err = compile_error(static_assert, BLOCK=8)
    assert_points_at(err, static_assert, "assert BLOCK >= 16", "BLOCK must be at least 16")
    assert "kernel static_assert" in static_assert.source("ir", BLOCK=16)


def test_error_in_an_inlined_helper_points_into_the_helper():
    err = compile_error(calls_bad_helper)
    assert err.kernel == "calls_bad_helper"
    assert err.line == line_of(_bad_helper, "missing_in_helper")
    assert "in @kf.jit function '_bad_helper', inlined into 'calls_bad_helper'" in str(err)


def test_caret_sits_under_the_offending_column():
    err = compile_error(unknown_name)
    source_line, caret_line = str(err).splitlines()[1:3]
    assert source_line[caret_line.index("^"):].startswith("undefined_thing")


def test_internal_errors_are_wrapped_with_the_location(monkeypatch):
    from kernelforge.frontend import semantic

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(semantic, "arange", broken)
    err = compile_error(runtime_arange)
    assert "internal compiler error: ZeroDivisionError: boom" in str(err)
    assert err.line == line_of(runtime_arange, "kl.arange(0, n)")


def test_errors_survive_pickling():
    err = compile_error(unknown_name)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.line == err.line
    fault = KernelFault("out of bounds load", kernel="k", source="x = kl.load(p)", offset=12, size=8)
    assert str(pickle.loads(pickle.dumps(fault))) == str(fault)


def test_kernel_fault_message_names_kernel_source_offset_and_size():
    text = str(KernelFault("out of bounds store", kernel="add_kernel",
                           source="    kl.store(out_ptr + offs, x)", offset=130, size=128))
    assert "in kernel 'add_kernel': out of bounds store" in text
    assert "kl.store(out_ptr + offs, x)" in text
    assert "offset 130 is outside the tensor of 128 elements" in text


def test_compilation_error_is_exported():
    assert kf.CompilationError is CompilationError and kf.KernelFault is KernelFault


def test_kernels_without_a_source_file_fail_clearly():
    namespace: dict = {}
    exec("def made_by_exec(x_ptr):\n    pass\n", {"kl": kl}, namespace)
    fn = kf.jit(namespace["made_by_exec"])
    with pytest.raises(CompilationError, match="cannot read the source of the kernel"):
        fn.source("ir")
    with pytest.raises(CompilationError, match="made_by_exec"):
        fn[(1,)](torch.zeros(1))
