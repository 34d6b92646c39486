"""NPU rules: the UB liveness estimate, its error, and the alignment/dtype warnings."""

from __future__ import annotations

import pytest

from kernelforge import ir
from kernelforge.backends import npu_rules
from kernelforge.errors import CompilationError

from triton_ir_builder import D, KernelBuilder, c, t


def copy_kernel(block: int, dtype: ir.DType = D.float32, chunks: int = 0, masked: bool = False) -> ir.Kernel:
    """out[:block] = x[:block] * 2, optionally masked to n, or accumulated over `chunks` loads."""
    kb = KernelBuilder("copy")
    x, out = kb.param("x", dtype, ptr=True), kb.param("out", dtype, ptr=True)
    n = kb.param("n", D.int32)
    offs = kb.op("arange", type=t(D.int32, block), start=0, end=block, name="offs")
    mask = kb.op("lt", offs, kb.op("full", n, type=t(D.int32, block)), name="mask") if masked else None
    xp = kb.op("addptr", kb.op("full", x, type=t(dtype, block, ptr=True)), offs, name="xp")
    if chunks:
        acc = kb.op("full", c(0.0, dtype), type=t(dtype, block), name="acc")
        with kb.for_("i", c(0), c(chunks)):
            kb.assign(acc, "add", acc, kb.op("load", xp, name="v"))
        val = acc
    else:
        loaded = kb.op("load", xp, mask, c(0.0, dtype), name="v") if masked else kb.op("load", xp, name="v")
        val = kb.op("mul", loaded, c(2.0, dtype), name="doubled")
    kb.store(kb.op("addptr", kb.op("full", out, type=t(dtype, block, ptr=True)), offs), val, mask)
    return kb.build()


def test_address_offsets_are_free_and_elementwise_results_reuse_dying_operands():
    est = npu_rules.estimate_ub(copy_kernel(1024))
    # Only v, double-buffered: offs only forms addresses, and doubled overwrites v.
    assert est.peak_bytes == 2 * 1024 * 4
    assert [t.name for t in est.live] == ["v"]
    assert est.fits and est.limit_bytes == 96 * 1024


def test_offsets_that_also_feed_compute_are_counted():
    est = npu_rules.estimate_ub(copy_kernel(1024, masked=True))
    # offs (it feeds the mask), the int1 mask, and v double-buffered.
    assert est.peak_bytes == 1024 * 4 + 1024 + 2 * 1024 * 4
    assert {t.name for t in est.live} == {"offs", "mask", "v"}


def test_loop_carried_values_stay_live_across_the_loop():
    est = npu_rules.estimate_ub(copy_kernel(256, chunks=4))
    assert {t.name for t in est.live} == {"acc", "v"}
    assert est.peak_bytes == 256 * 4 * (1 + 2)


def test_overflow_raises_a_compilation_error_naming_the_tensors(monkeypatch):
    monkeypatch.setenv("KF_NPU_UB_BYTES", str(16 * 1024))
    with pytest.raises(npu_rules.NPUResourceError) as err:
        npu_rules.check_ub(copy_kernel(4096))
    assert isinstance(err.value, CompilationError)
    text = str(err.value)
    assert "kernel 'copy'" in text and "16.0 KiB budget" in text and "%v: float32[4096]" in text
    assert "test.py:" in text
    assert npu_rules.check_ub(copy_kernel(1024)).fits


def test_alignment_and_fp64_warnings():
    assert npu_rules.alignment_warnings(copy_kernel(64)) == []
    messages = npu_rules.alignment_warnings(copy_kernel(12))
    assert messages and all("48 bytes" in m for m in messages)
    assert any("fp64" in m for m in npu_rules.alignment_warnings(copy_kernel(64, D.float64)))
    with pytest.warns(npu_rules.NPUPerformanceWarning, match="not a multiple of 32"):
        npu_rules.check(copy_kernel(12))


def test_dot_operands_want_512_byte_rows():
    kb = KernelBuilder("mm")
    a = kb.param("a", D.float16, ptr=True)
    r = kb.op("arange", type=t(D.int32, 16), start=0, end=16)
    idx = kb.op("broadcast_to", kb.op("expand_dims", r, type=t(D.int32, 1, 16), axis=0), type=t(D.int32, 16, 16))
    v = kb.op("load", kb.op("addptr", kb.op("full", a, type=t(D.float16, 16, 16, ptr=True)), idx))
    kb.op("dot", v, v, type=t(D.float32, 16, 16))
    messages = npu_rules.alignment_warnings(kb.build())
    assert any("dot operand" in m and "not a multiple of 512" in m for m in messages)
