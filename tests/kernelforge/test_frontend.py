"""The IR the frontend produces: typing and promotion, explicit broadcasts and casts,
constexpr folding, unrolling, inlining, and the structure of loops and branches."""

from __future__ import annotations

import pytest

import kernelforge as kf
import kernelforge.language as kl
from kernelforge import ir


def compile_ir(fn, signature=None, **constexprs) -> ir.Kernel:
    names = fn.runtime_names
    sig = {n: "*fp32" if n.endswith("ptr") else "i32" for n in names}
    sig.update(signature or {})
    kernel = fn.specialize({n: sig[n] for n in names}, constexprs)
    ir.verify(kernel)
    return kernel


def assigns(kernel: ir.Kernel, op: str | None = None) -> list[ir.Assign]:
    return [s for s in ir.walk(kernel.body) if isinstance(s, ir.Assign) and (op is None or s.op == op)]


def stmts(kernel: ir.Kernel, kind: type) -> list:
    return [s for s in ir.walk(kernel.body) if isinstance(s, kind)]


@kf.jit
def binop_kernel(x_ptr, y_ptr, out_ptr, OP: kl.constexpr, SCALAR: kl.constexpr):
    """x OP y for blocks (SCALAR is None) or x OP SCALAR for a Python scalar."""
    x = kl.load(x_ptr + kl.arange(0, 16))
    y = kl.load(y_ptr + kl.arange(0, 16)) if SCALAR is None else SCALAR
    if OP == "+":
        r = x + y
    elif OP == "*":
        r = x * y
    elif OP == "/":
        r = x / y
    elif OP == "//":
        r = x // y
    elif OP == "%":
        r = x % y
    else:
        r = x < y
    kl.store(out_ptr + kl.arange(0, 16), r)


OPS = {"+": "add", "*": "mul", "/": "truediv", "//": "floordiv", "%": "mod", "<": "lt"}


@pytest.mark.parametrize("x, y, op, expected", [
    # weakly typed Python scalars do not widen a block of the same or a higher kind
    ("fp16", 2.0, "*", ir.DType.float16),
    ("bf16", 2.0, "+", ir.DType.bfloat16),
    ("i32", 1, "+", ir.DType.int32),
    ("i8", 1, "+", ir.DType.int8),
    ("i64", 1, "*", ir.DType.int64),
    ("i32", 0.5, "*", ir.DType.float32),   # a float scalar is a higher kind than an int block
    ("i8", 2.5, "+", ir.DType.float32),
    ("fp16", 2, "+", ir.DType.float16),
    # block with block
    ("fp16", "fp32", "+", ir.DType.float32),
    ("fp16", "bf16", "+", ir.DType.float16),  # Triton checks fp16 before bf16
    ("fp32", "bf16", "+", ir.DType.float32),
    ("bf16", "bf16", "*", ir.DType.bfloat16),
    ("i32", "i64", "+", ir.DType.int64),
    ("i8", "i32", "*", ir.DType.int32),
    ("u8", "i8", "+", ir.DType.uint8),        # C: unsigned wins at equal width
    ("u8", "i32", "+", ir.DType.int32),
    ("i32", "fp16", "+", ir.DType.float16),
    # division: int/int and low-precision floats go through fp32
    ("i32", "i32", "/", ir.DType.float32),
    ("i32", 2, "/", ir.DType.float32),
    ("fp16", "fp16", "/", ir.DType.float32),
    ("fp16", 2.0, "%", ir.DType.float32),
    ("i32", 2, "//", ir.DType.int32),
    ("i64", "i32", "%", ir.DType.int64),
])
def test_type_promotion_follows_triton(x, y, op, expected):
    scalar = y if not isinstance(y, str) else None
    sig = {"x_ptr": "*" + x, "y_ptr": "*" + (y if isinstance(y, str) else x)}
    kernel = compile_ir(binop_kernel, sig, OP=op, SCALAR=scalar)
    (node,) = assigns(kernel, OPS[op])
    assert node.dst.type.dtype is expected
    for operand in node.args:
        assert operand.type.dtype is expected, "operands are cast to the computation type"


def test_comparisons_give_int1_over_the_promoted_operands():
    kernel = compile_ir(binop_kernel, {"x_ptr": "*fp16", "y_ptr": "*fp32"}, OP="<", SCALAR=None)
    (node,) = assigns(kernel, "lt")
    assert node.dst.type == ir.BlockType(ir.DType.int1, (16,))
    assert all(a.type.dtype is ir.DType.float32 for a in node.args)


def test_out_of_range_scalar_is_an_error():
    with pytest.raises(kf.CompilationError, match="out of range for int8"):
        compile_ir(binop_kernel, {"x_ptr": "*i8"}, OP="+", SCALAR=1000)


@kf.jit
def broadcast_kernel(x_ptr, y_ptr, out_ptr):
    x = kl.load(x_ptr + kl.arange(0, 16))
    y = kl.load(y_ptr + kl.arange(0, 8))
    out = x[:, None] + y[None, :] * 2
    row = kl.sum(out, axis=1)
    kl.store(out_ptr + kl.arange(0, 16), row + x)


def test_broadcasts_are_explicit():
    kernel = compile_ir(broadcast_kernel)
    (add,) = [a for a in assigns(kernel, "add") if a.dst.type.shape == (16, 8)]
    assert all(arg.type.shape == (16, 8) for arg in add.args)
    expands = assigns(kernel, "expand_dims")
    assert sorted(a.attrs["axis"] for a in expands) == [0, 1]
    assert {a.dst.type.shape for a in assigns(kernel, "broadcast_to")} == {(16, 8)}
    (red,) = assigns(kernel, "sum")
    assert red.attrs == {"axis": 1, "keep_dims": False} and red.dst.type.shape == (16,)


@kf.jit
def splat_kernel(out_ptr, v):
    offs = kl.arange(0, 16)
    kl.store(out_ptr + offs, v)
    kl.store(out_ptr + offs, 3)


def test_scalar_store_values_are_splatted_with_full():
    kernel = compile_ir(splat_kernel)
    for store in stmts(kernel, ir.Store):
        assert store.value.type == ir.BlockType(ir.DType.float32, (16,))
    fulls = assigns(kernel, "full")
    assert len(fulls) == 2 and all(f.args[0].type.shape == () for f in fulls)


@kf.jit
def constexpr_if_kernel(x_ptr, FLAG: kl.constexpr, N: kl.constexpr):
    if FLAG and N > 2:
        v = 1.0
    else:
        v = 2.0
    for i in kl.static_range(N):
        kl.store(x_ptr + i, v + i)


def test_constexpr_if_folds_and_static_range_unrolls():
    kernel = compile_ir(constexpr_if_kernel, FLAG=True, N=3)
    assert not stmts(kernel, ir.If) and not stmts(kernel, ir.For)
    values = [s.value for s in stmts(kernel, ir.Store)]
    assert len(values) == 3
    offsets = [s.ptr for s in stmts(kernel, ir.Store)]
    assert [o.type for o in offsets] == [ir.BlockType(ir.DType.float32, (), True)] * 3
    listing = ir.format_kernel(kernel)
    assert "[FLAG=True, N=3]" in listing


@kf.jit
def loop_kernel(x_ptr, out_ptr, n, start):
    acc = kl.zeros((16,), dtype=kl.float32)
    count = 0
    for i in range(start, n, 2):
        acc += kl.load(x_ptr + i * 16 + kl.arange(0, 16))
        count += 1
    kl.store(out_ptr + kl.arange(0, 16), acc / count)


def test_runtime_for_carries_variables_in_place():
    kernel = compile_ir(loop_kernel)
    (loop,) = stmts(kernel, ir.For)
    assert loop.var.type == ir.BlockType(ir.DType.int32)
    assert isinstance(loop.start, ir.Var) and isinstance(loop.stop, ir.Var)
    assert loop.step == ir.Const(2, ir.BlockType(ir.DType.int32))
    carried = {s.dst.name: s.dst for s in loop.body.stmts if isinstance(s, ir.Assign)}
    before = {s.dst.name: s.dst for s in kernel.body.stmts if isinstance(s, ir.Assign)}
    shared = set(carried) & set(before)
    assert len(shared) == 2, "acc and count are assigned before the loop and written in its body"
    assert not [s for s in loop.body.stmts if isinstance(s, ir.Assign) and s.op == "cast"
                and s.args[0].type == s.dst.type], "copies into carried variables are folded away"


def test_int64_bounds_make_an_int64_loop_variable():
    kernel = compile_ir(loop_kernel, {"n": "i64"})
    (loop,) = stmts(kernel, ir.For)
    assert loop.var.type.dtype is ir.DType.int64
    assert loop.start.type.dtype is ir.DType.int64


@kf.jit
def branch_kernel(x_ptr, n):
    pid = kl.program_id(0)
    if pid < n:
        v = kl.load(x_ptr + pid)
    else:
        v = 0.0
    if pid == 3:
        return
    kl.store(x_ptr + pid, v)


def test_runtime_if_merges_into_one_variable_and_return_moves_the_rest():
    kernel = compile_ir(branch_kernel)
    first, second = [s for s in kernel.body.stmts if isinstance(s, ir.If)]
    then_v, else_v = first.then_body.stmts[-1], first.else_body.stmts[-1]
    assert then_v.op == "load" and else_v.op == "cast"
    assert then_v.dst is else_v.dst, "both arms write the same variable"
    assert isinstance(second.then_body.stmts[0], ir.Return)
    assert any(isinstance(s, ir.Store) for s in second.else_body.stmts), "the rest runs in the live arm"
    assert kernel.body.stmts[-1] is second


@kf.jit
def _pair(x, k: kl.constexpr):
    return x * k, x + k


@kf.jit
def _pick(x, flag):
    if flag > 0:
        return x
    return -x


@kf.jit
def inline_kernel(x_ptr, flag):
    x = kl.load(x_ptr)
    a, b = _pair(x, 3)
    a, b = b, a
    c = _pick(a, flag)
    kl.store(x_ptr, c + b)


def test_helpers_are_inlined_with_tuple_returns_and_merged_early_returns():
    kernel = compile_ir(inline_kernel)
    ops = [s.op for s in assigns(kernel)]
    assert ops.count("mul") == 1 and ops.count("neg") == 1
    (branch,) = stmts(kernel, ir.If)
    then_last, else_last = branch.then_body.stmts[-1], branch.else_body.stmts[-1]
    assert then_last.dst is else_last.dst, "both return points write the call's result"
    (store,) = stmts(kernel, ir.Store)
    (final,) = [s for s in assigns(kernel, "add") if s.dst is store.value]
    assert then_last.dst in final.args


@kf.jit
def methods_kernel(x_ptr, out_ptr):
    x = kl.load(x_ptr + kl.arange(0, 16)[:, None] * 16 + kl.arange(0, 16)[None, :])
    y = x.to(kl.float16).to(x.dtype)
    z = kl.trans(y) + y.T
    kl.store(out_ptr + kl.arange(0, 16), z.sum(axis=0) + kl.max(z, 1) + kl.argmax(z, 0))


def test_methods_dtype_attributes_and_casts():
    kernel = compile_ir(methods_kernel)
    casts = assigns(kernel, "cast")
    assert [c.dst.type.dtype for c in casts][:2] == [ir.DType.float16, ir.DType.float32]
    assert [t.attrs["perm"] for t in assigns(kernel, "trans")] == [(1, 0), (1, 0)]
    (arg,) = assigns(kernel, "argmax")
    assert arg.dst.type == ir.BlockType(ir.DType.int32, (16,))


@kf.jit
def sum_int8_kernel(x_ptr, out_ptr):
    kl.store(out_ptr, kl.sum(kl.load(x_ptr + kl.arange(0, 16)), axis=0))


def test_small_integer_sums_accumulate_in_int32():
    kernel = compile_ir(sum_int8_kernel, {"x_ptr": "*i8", "out_ptr": "*i32"})
    (red,) = assigns(kernel, "sum")
    assert red.args[0].type.dtype is ir.DType.int32 and red.dst.type == ir.BlockType(ir.DType.int32)


@kf.jit
def math_fp16_kernel(x_ptr):
    offs = kl.arange(0, 16)
    kl.store(x_ptr + offs, kl.exp(kl.load(x_ptr + offs)))


def test_math_on_half_precision_runs_in_fp32():
    kernel = compile_ir(math_fp16_kernel, {"x_ptr": "*fp16"})
    (exp,) = assigns(kernel, "exp")
    assert exp.args[0].type.dtype is ir.DType.float32
    assert [c.dst.type.dtype for c in assigns(kernel, "cast")] == [ir.DType.float32, ir.DType.float16]


@kf.jit
def dot_kernel(a_ptr, out_ptr):
    r = kl.arange(0, 16)
    a = kl.load(a_ptr + r[:, None] * 16 + r[None, :])
    acc = kl.dot(a, a)
    acc = kl.dot(a, a, acc)
    kl.store(out_ptr + r[:, None] * 16 + r[None, :], acc)


def test_dot_accumulates_in_fp32_for_half_inputs():
    kernel = compile_ir(dot_kernel, {"a_ptr": "*fp16"})
    first, second = assigns(kernel, "dot")
    assert len(first.args) == 2 and len(second.args) == 3
    assert second.dst.type == ir.BlockType(ir.DType.float32, (16, 16))


@kf.jit
def masked_load_kernel(x_ptr, n):
    offs = kl.arange(0, 16)
    v = kl.load(x_ptr + offs, mask=offs < n, other=-1)
    kl.atomic_add(x_ptr + offs, v, mask=offs < n)
    kl.store(x_ptr + offs[:, None] * 0 + offs[None, :], 0.0, mask=offs[None, :] < n)


def test_load_store_operands_have_the_pointer_shape_and_dtype():
    kernel = compile_ir(masked_load_kernel, {"x_ptr": "*bf16"})
    (load,) = assigns(kernel, "load")
    ptr, mask, other = load.args
    assert mask.type == ir.BlockType(ir.DType.int1, (16,))
    assert other == ir.Const(-1.0, ir.BlockType(ir.DType.bfloat16))
    (atomic,) = assigns(kernel, "atomic_add")
    assert [a.type.shape for a in atomic.args] == [(16,)] * 3
    (store,) = stmts(kernel, ir.Store)
    assert store.ptr.type.shape == store.value.type.shape == store.mask.type.shape == (16, 16)
    assert store.ptr.root == "x_ptr"


def test_readable_names_follow_the_source():
    listing = ir.format_kernel(compile_ir(loop_kernel))
    assert "%acc" in listing and "%count" in listing and "for %i in range(%start, %n, 2:int32)" in listing


@kf.jit
def argmax_loop_kernel(x_ptr, out_ptr, n):
    best = float("-inf")
    arg = -1
    for i in range(n):
        v = kl.load(x_ptr + i)
        if v > best:
            best = v
            arg = i
    kl.store(out_ptr, best + arg)


def test_branch_updates_inside_a_loop_write_the_carried_variables_directly():
    kernel = compile_ir(argmax_loop_kernel)
    (loop,) = stmts(kernel, ir.For)
    (branch,) = [s for s in loop.body.stmts if isinstance(s, ir.If)]
    assert loop.body.stmts[-1] is branch, "no copies after the if"
    assert branch.else_body.stmts == [], "the arm that keeps the values does nothing"
    init = {s.dst.name: s.dst for s in kernel.body.stmts if isinstance(s, ir.Assign)}
    assert {s.dst for s in branch.then_body.stmts} == {init["best"], init["arg"]}


@kf.jit
def cdiv_and_element_ty_kernel(x_ptr, out_ptr, k, BK: kl.constexpr):
    n_tiles = kl.cdiv(k, BK)
    kl.store(out_ptr, n_tiles.to(out_ptr.dtype.element_ty))
    kl.store(x_ptr, kl.load(x_ptr).to(x_ptr.dtype.element_ty))


def test_cdiv_on_runtime_values_and_pointer_element_types():
    kernel = compile_ir(cdiv_and_element_ty_kernel, {"out_ptr": "*fp16"}, BK=16)
    assert [a.op for a in assigns(kernel)][:2] == ["add", "floordiv"]
    assert assigns(kernel)[0].args[1] == ir.Const(15, ir.BlockType(ir.DType.int32))
    casts = assigns(kernel, "cast")
    assert [c.dst.type.dtype for c in casts] == [ir.DType.float16]


@pytest.mark.parametrize("div_or_mod", [False, True])
def test_promotion_table_matches_triton(div_or_mod):
    """Our `computation_type` against triton's own, for every dtype pair, strong and weak."""
    reason = "compares with upstream triton's own promotion (pip install -e '.[triton]'; make test has it)"
    tl = pytest.importorskip("triton.language", reason=reason)
    semantic_mod = pytest.importorskip("triton.language.semantic", reason=reason)
    from kernelforge.frontend.semantic import SemanticError, computation_type

    theirs = semantic_mod.TritonSemantic(None).computation_type_impl
    to_tl = {d: getattr(tl, d.dsl_name) for d in ir.DType}
    from_tl = {t.name: d for d, t in to_tl.items()}
    for a in ir.DType:
        for b in ir.DType:
            for a_weak, b_weak in ((False, False), (True, False), (False, True)):
                case = f"{a!r}{' (weak)' if a_weak else ''} with {b!r}{' (weak)' if b_weak else ''}"
                try:
                    expected = from_tl[theirs(to_tl[a], a_weak, to_tl[b], b_weak, div_or_mod).name]
                except TypeError:
                    with pytest.raises(SemanticError):
                        computation_type(a, a_weak, b, b_weak, div_or_mod)
                    continue
                assert computation_type(a, a_weak, b, b_weak, div_or_mod) is expected, case


@kf.jit
def scalar_index_kernel(x_ptr):
    pid = kl.program_id(0)
    kl.store(x_ptr + pid[None], pid[None].to(kl.float32))
    kl.store((x_ptr + pid)[None], 1.0)


def test_none_indexing_a_scalar_makes_a_one_element_block():
    kernel = compile_ir(scalar_index_kernel)
    for store in stmts(kernel, ir.Store):
        assert store.ptr.type.shape == (1,) and store.value.type.shape == (1,)


def test_definitions_are_checked_on_every_path():
    i32 = ir.BlockType(ir.DType.int32)
    n = ir.Var("n", i32)
    x = ir.Var("x", i32)
    cond = ir.Var("c", ir.BlockType(ir.DType.int1))
    defines_c = ir.Assign(cond, "gt", (n, ir.Const(0, i32)))
    one_arm = ir.If(cond, ir.Block([ir.Assign(x, "add", (n, n))]), ir.Block())
    read_x = ir.Assign(ir.Var("y", i32), "add", (x, n))
    kernel = ir.Kernel("k", [ir.Param("n", n)], {}, ir.Block([defines_c, one_arm, read_x]))
    with pytest.raises(ir.VerificationError, match="%x is read before it is assigned"):
        ir.verify_definitions(kernel)
    one_arm.else_body.stmts.append(ir.Return())
    ir.verify_definitions(kernel)  # the arm without x returns: fine


GLOBAL_BLOCK = kl.constexpr(16)
GLOBAL_SCALE = 3


@kf.jit
def globals_kernel(x_ptr):
    offs = kl.arange(0, GLOBAL_BLOCK)
    kl.store(x_ptr + offs, kl.load(x_ptr + offs) * GLOBAL_SCALE)


def test_module_level_constants_are_constexprs():
    kernel = compile_ir(globals_kernel)
    (arange,) = assigns(kernel, "arange")
    assert arange.attrs == {"start": 0, "end": 16}
    (mul,) = assigns(kernel, "mul")
    assert mul.args[1] == ir.Const(3.0, ir.BlockType(ir.DType.float32))
