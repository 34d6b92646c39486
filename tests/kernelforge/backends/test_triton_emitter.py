"""The Triton emitter, run under Triton's interpreter on hand-built IR (no frontend needed)."""

from __future__ import annotations

import ast

import pytest
import torch

from kernelforge import ir
from kernelforge.errors import CompilationError
from kernelforge.backends.triton import InterpretBackend, emitter
from kernelforge.backends.triton.returns import lower_returns

from triton_ir_builder import D, KernelBuilder, c, t

pytest.importorskip("triton")
pytestmark = pytest.mark.interpret


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)


def run(kernel: ir.Kernel, grid: tuple[int, ...], *args: object) -> str:
    backend = InterpretBackend()
    source = backend.generate(kernel)
    backend.load(source, kernel.name)((tuple(grid) + (1, 1))[:3], args)
    return source


def add_kernel(dtype: ir.DType, block: int = 16) -> ir.Kernel:
    kb = KernelBuilder("add_kernel", BLOCK=block)
    x, y, out = (kb.param(n, dtype, ptr=True) for n in ("x_ptr", "y_ptr", "out_ptr"))
    n = kb.param("n", D.int32)
    pid = kb.op("program_id", type=t(D.int32), axis=0, name="pid")
    base = kb.op("mul", pid, c(block))
    offs = kb.op("add", kb.op("full", base, type=t(D.int32, block)),
                 kb.op("arange", type=t(D.int32, block), start=0, end=block), name="offs")
    mask = kb.op("lt", offs, kb.op("full", n, type=t(D.int32, block)), name="mask")
    xv = kb.op("load", kb.op("addptr", kb.op("full", x, type=t(dtype, block, ptr=True)), offs), mask, c(0.0, dtype))
    yv = kb.op("load", kb.op("addptr", kb.op("full", y, type=t(dtype, block, ptr=True)), offs), mask, c(0.0, dtype))
    kb.store(kb.op("addptr", kb.op("full", out, type=t(dtype, block, ptr=True)), offs), kb.op("add", xv, yv), mask)
    return kb.build()


def test_source_is_readable_triton():
    src = emitter.generate(add_kernel(D.float32), emitter.NATIVE)
    ast.parse(src)
    assert "import triton\n" in src and "import triton.language as tl\n" in src
    assert src.count("@triton.jit") == 1
    assert "def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):" in src
    assert "do_not_specialize=['n']" in src
    assert "add_kernel[tuple(grid)](*args, **_CONSTEXPRS)" in src
    assert "# L" in src and "_round_bf16" not in src


@pytest.mark.parametrize("dtype", [D.float32, D.float16, D.bfloat16])
def test_add_matches_torch(dtype):
    x = torch.randn(37).to(dtype.torch_dtype)
    y = torch.randn(37).to(dtype.torch_dtype)
    out = torch.zeros_like(x)
    run(add_kernel(dtype), (3,), x, y, out, 37)
    torch.testing.assert_close(out, x + y, rtol=0, atol=0)


def test_bf16_rounds_to_nearest_even_after_each_op():
    kb = KernelBuilder("scale")
    x, out = kb.param("x", D.bfloat16, ptr=True), kb.param("out", D.bfloat16, ptr=True)
    offs = kb.op("arange", type=t(D.int32, 256), start=0, end=256)
    xp = kb.op("addptr", kb.op("full", x, type=t(D.bfloat16, 256, ptr=True)), offs)
    v = kb.op("load", xp)
    v3 = kb.op("mul", v, c(3.0, D.bfloat16))
    v4 = kb.op("mul", v3, c(1.1, D.bfloat16))
    kb.store(kb.op("addptr", kb.op("full", out, type=t(D.bfloat16, 256, ptr=True)), offs), v4)
    src = emitter.generate(kb.build(), emitter.INTERPRET)
    assert "_round_bf16(" in src
    xs = torch.randn(256).bfloat16()
    o = torch.empty_like(xs)
    run(kb.kernel, (1,), xs, o)
    torch.testing.assert_close(o, xs * 3.0 * torch.tensor(1.1).bfloat16(), rtol=0, atol=0)


def test_integer_division_truncates_like_c():
    kb = KernelBuilder("divmod")
    a, q, r = (kb.param(n, D.int32, ptr=True) for n in ("a", "q", "r"))
    offs = kb.op("arange", type=t(D.int32, 8), start=0, end=8)
    av = kb.op("load", kb.op("addptr", kb.op("full", a, type=t(D.int32, 8, ptr=True)), offs))
    kb.store(kb.op("addptr", kb.op("full", q, type=t(D.int32, 8, ptr=True)), offs), kb.op("floordiv", av, c(3)))
    kb.store(kb.op("addptr", kb.op("full", r, type=t(D.int32, 8, ptr=True)), offs), kb.op("mod", av, c(-3)))
    av_t = torch.tensor([-7, -6, -1, 0, 1, 5, 7, 8], dtype=torch.int32)
    qo, ro = torch.empty_like(av_t), torch.empty_like(av_t)
    run(kb.build(), (1,), av_t, qo, ro)
    assert qo.tolist() == [int(v / 3) for v in av_t.tolist()]
    assert ro.tolist() == [int(torch.fmod(v, torch.tensor(-3))) for v in av_t]


def row_sum_kernel(with_return_in_loop: bool) -> ir.Kernel:
    """out[pid] = sum(x[pid, :n]) computed in chunks of 4; pid >= rows returns early.

    With `with_return_in_loop`, a negative element also ends the program mid-loop
    without storing.
    """
    kb = KernelBuilder("row_sum")
    x, out = kb.param("x", D.float32, ptr=True), kb.param("out", D.float32, ptr=True)
    n, rows = kb.param("n", D.int32), kb.param("rows", D.int32)
    pid = kb.op("program_id", type=t(D.int32), axis=0, name="pid")
    with kb.if_(kb.op("ge", pid, rows)):
        kb.ret()
    acc = kb.op("full", c(0.0, D.float32), type=t(D.float32), name="acc")
    row = kb.op("addptr", x, kb.op("mul", pid, n))
    with kb.for_("i", c(0), n, c(4)) as i:
        offs = kb.op("add", kb.op("full", i, type=t(D.int32, 4)), kb.op("arange", type=t(D.int32, 4), start=0, end=4))
        mask = kb.op("lt", offs, kb.op("full", n, type=t(D.int32, 4)))
        v = kb.op("load", kb.op("addptr", kb.op("full", row, type=t(D.float32, 4, ptr=True)), offs), mask,
                  c(0.0, D.float32))
        if with_return_in_loop:
            with kb.if_(kb.op("lt", kb.op("min", v, type=t(D.float32), axis=None, keep_dims=False),
                              c(0.0, D.float32))):
                kb.ret()
        kb.assign(acc, "add", acc, kb.op("sum", v, type=t(D.float32), axis=0, keep_dims=False))
    kb.store(kb.op("addptr", out, pid), acc)
    return kb.build()


def test_early_return_in_if_restructures_without_flag():
    lowered = lower_returns(row_sum_kernel(False))
    assert not any(isinstance(s, ir.Return) for s in ir.walk(lowered.body))
    assert "active" not in emitter.generate(row_sum_kernel(False))
    x = torch.randn(3, 10)
    out = torch.full((5,), -1.0)
    run(row_sum_kernel(False), (5,), x, out, 10, 3)
    torch.testing.assert_close(out[:3], x.sum(1))
    assert out[3:].tolist() == [-1.0, -1.0]


def test_return_inside_loop_uses_active_flag():
    src = emitter.generate(row_sum_kernel(True))
    assert "active = tl.full((), True, tl.int1)" in src and "return" not in src.split("def launch")[0]
    x = torch.rand(4, 10)
    x[1, 7] = -1.0
    out = torch.full((4,), -1.0)
    run(row_sum_kernel(True), (4,), x, out, 10, 4)
    expected = x.sum(1)
    expected[1] = -1.0
    torch.testing.assert_close(out, expected)


def test_dot_reductions_and_casts():
    kb = KernelBuilder("mm")
    a, b, o, am = (kb.param(n, dt, ptr=True) for n, dt in
                   (("a", D.float16), ("b", D.float16), ("o", D.float32), ("am", D.int32)))
    r = kb.op("arange", type=t(D.int32, 16), start=0, end=16)
    rows = kb.op("broadcast_to", kb.op("expand_dims", kb.op("mul", r, c(16)), type=t(D.int32, 16, 1), axis=1),
                 type=t(D.int32, 16, 16))
    cols = kb.op("broadcast_to", kb.op("expand_dims", r, type=t(D.int32, 1, 16), axis=0), type=t(D.int32, 16, 16))
    idx = kb.op("add", rows, cols)
    av = kb.op("load", kb.op("addptr", kb.op("full", a, type=t(D.float16, 16, 16, ptr=True)), idx))
    bv = kb.op("load", kb.op("addptr", kb.op("full", b, type=t(D.float16, 16, 16, ptr=True)), idx))
    acc = kb.op("full", c(1.0, D.float32), type=t(D.float32, 16, 16))
    prod = kb.op("dot", av, kb.op("trans", bv, perm=(1, 0)), acc)
    scaled = kb.op("cast", kb.op("exp", kb.op("cast", av, type=t(D.float32, 16, 16))), type=t(D.float16, 16, 16))
    kb.store(kb.op("addptr", kb.op("full", o, type=t(D.float32, 16, 16, ptr=True)), idx),
             kb.op("add", prod, kb.op("cast", scaled, type=t(D.float32, 16, 16))))
    best = kb.op("argmax", prod, type=t(D.int32, 16), axis=1, keep_dims=False)
    kb.store(kb.op("addptr", kb.op("full", am, type=t(D.int32, 16, ptr=True)), r), best)
    torch.manual_seed(0)
    av_t, bv_t = torch.randn(16, 16).half(), torch.randn(16, 16).half()
    out, arg = torch.empty(16, 16), torch.empty(16, dtype=torch.int32)
    run(kb.build(), (1,), av_t, bv_t, out, arg)
    prod_ref = av_t.float() @ bv_t.float().T + 1.0
    # exp may differ by one fp32 ulp between numpy and torch, so by one fp16 ulp after rounding.
    torch.testing.assert_close(out, prod_ref + av_t.float().exp().half().float(), rtol=2e-3, atol=2e-3)
    assert torch.equal(arg, prod_ref.argmax(1).int())


def half_math_kernel() -> ir.Kernel:
    """x[0] = sum over 8 copies of exp(x[0]) / 3, all in bf16."""
    kb = KernelBuilder("half_math")
    x = kb.param("x", D.bfloat16, ptr=True)
    v = kb.op("load", x)
    e = kb.op("exp", v)
    q = kb.op("truediv", e, c(3.0, D.bfloat16))
    s = kb.op("sum", kb.op("full", q, type=t(D.bfloat16, 8)), type=t(D.bfloat16), axis=None, keep_dims=False)
    kb.store(x, s)
    return kb.build()


def test_native_flavour_keeps_ir_dtypes_for_half_math():
    src = emitter.generate(half_math_kernel(), emitter.NATIVE)
    assert "tl.exp(t1.to(tl.float32)).to(tl.bfloat16)" in src
    assert "(t2 / 3.0).to(tl.bfloat16)" in src
    assert "tl.sum(t4.to(tl.float32)).to(tl.bfloat16)" in src
    xs = torch.tensor([0.5]).bfloat16()
    run(half_math_kernel(), (1,), xs)
    ref = ((torch.tensor([0.5]).bfloat16().exp() / 3.0).float() * 8).bfloat16()
    torch.testing.assert_close(xs, ref, rtol=0, atol=0)


def test_bit_ops_shapes_and_float_division():
    kb = KernelBuilder("misc")
    xi, xf, oi, of, am = (kb.param(n, dt, ptr=True) for n, dt in
                          (("xi", D.int32), ("xf", D.float32), ("oi", D.int32), ("of", D.float32), ("am", D.int32)))
    offs = kb.op("arange", type=t(D.int32, 8), start=0, end=8)
    vi = kb.op("load", kb.op("addptr", kb.op("full", xi, type=t(D.int32, 8, ptr=True)), offs))
    vf = kb.op("load", kb.op("addptr", kb.op("full", xf, type=t(D.float32, 8, ptr=True)), offs))
    bits = kb.op("xor", kb.op("shl", vi, c(2)), kb.op("shr", vi, c(1)))
    bits = kb.op("add", bits, kb.op("cast", kb.op("not", kb.op("lt", vi, c(0))), type=t(D.int32, 8)))
    bits = kb.op("and", kb.op("invert", bits), c(0xFFFF))
    flipped = kb.op("reshape", kb.op("trans", kb.op("reshape", bits, type=t(D.int32, 2, 4)), perm=(1, 0),
                                     type=t(D.int32, 4, 2)), type=t(D.int32, 8))
    cube = kb.op("reshape", vf, type=t(D.float32, 2, 2, 2))
    perm = kb.op("reshape", kb.op("trans", cube, perm=(2, 0, 1), type=t(D.float32, 2, 2, 2)), type=t(D.float32, 8))
    div = kb.op("add", kb.op("floordiv", perm, c(0.75, D.float32)), kb.op("mod", vf, c(0.75, D.float32)))
    kb.store(kb.op("addptr", kb.op("full", oi, type=t(D.int32, 8, ptr=True)), offs), flipped)
    kb.store(kb.op("addptr", kb.op("full", of, type=t(D.float32, 8, ptr=True)), offs), div)
    best = kb.op("argmax", cube, type=t(D.int32, 1, 1, 1), axis=None, keep_dims=True)
    kb.store(am, kb.op("add", kb.op("reshape", best, type=t(D.int32)),
                       kb.op("argmax", cube, type=t(D.int32), axis=None, keep_dims=False)))
    vi_t = torch.tensor([-5, -1, 0, 1, 2, 3, 100, -77], dtype=torch.int32)
    vf_t = torch.tensor([-2.5, -1.0, 0.3, 1.6, 2.0, 9.5, -0.1, 4.0])
    oi_t, of_t, am_t = torch.empty_like(vi_t), torch.empty_like(vf_t), torch.empty(1, dtype=torch.int32)
    run(kb.build(), (1,), vi_t, vf_t, oi_t, of_t, am_t)
    ref_bits = ~(((vi_t << 2) ^ (vi_t >> 1)) + (vi_t >= 0).int()) & 0xFFFF
    assert oi_t.tolist() == ref_bits.view(2, 4).T.reshape(8).tolist()
    ref_perm = vf_t.view(2, 2, 2).permute(2, 0, 1).reshape(8)
    torch.testing.assert_close(of_t, torch.floor(ref_perm / 0.75) + torch.fmod(vf_t, 0.75))
    assert am_t.item() == 2 * int(vf_t.argmax())


def test_bf16_atomics_are_rejected_under_the_interpreter():
    kb = KernelBuilder("acc")
    o = kb.param("o", D.bfloat16, ptr=True)
    kb.op("atomic_add", o, c(1.0, D.bfloat16), type=t(D.bfloat16))
    with pytest.raises(CompilationError, match="no bf16 atomics"):
        emitter.generate(kb.build(), emitter.INTERPRET)
    assert "tl.atomic_add(o, 1.0)" in emitter.generate(kb.kernel, emitter.NATIVE)


def test_fp16_atomic_add_accumulates_colliding_addresses():
    kb = KernelBuilder("acc16")
    o, x = kb.param("o", D.float16, ptr=True), kb.param("x", D.float16, ptr=True)
    offs = kb.op("arange", type=t(D.int32, 8), start=0, end=8)
    v = kb.op("load", kb.op("addptr", kb.op("full", x, type=t(D.float16, 8, ptr=True)), offs))
    idx = kb.op("floordiv", offs, c(2))
    kb.op("atomic_add", kb.op("addptr", kb.op("full", o, type=t(D.float16, 8, ptr=True)), idx), v,
          type=t(D.float16, 8))
    out = torch.zeros(4, dtype=torch.float16)
    run(kb.build(), (2,), out, torch.arange(1, 9, dtype=torch.float16))
    assert out.tolist() == [6.0, 14.0, 22.0, 30.0]
