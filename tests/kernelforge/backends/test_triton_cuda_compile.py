"""The `triton` backend's CUDA path: emitted kernels compiled by upstream Triton to cubins, on a CPU."""

from __future__ import annotations

import pytest

from kernelforge.backends.triton import cuda_check, flavor

pytestmark = pytest.mark.skipif(flavor() != "cuda", reason="needs upstream triton")


def test_semantics_and_attention_compile_for_sm80(capsys):
    assert cuda_check.main(["--arch", "80", "-k", "semantics/matmul", "-k", "semantics/early_exit_loop",
                            "-k", "_paged_attention_kernel[bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "kernels compiled to cubin; 0 failed" in out and "sm_80  reached cubin" in out
    assert "_paged_attention_kernel[bfloat16" in out and "semantics/early_exit_loop" in out


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90(capsys):
    status = cuda_check.main([])
    out = capsys.readouterr().out
    assert status == 0, out
    assert " 0 failed" in out


@pytest.mark.parametrize("build", ["add_bf16", "row_sum_with_return_in_loop", "half_math"])
def test_hand_built_ir_compiles_for_sm90(build, tmp_path, monkeypatch):
    from kernelforge.backends.triton import cuda_lowering
    from test_triton_emitter import add_kernel, half_math_kernel, row_sum_kernel
    from triton_ir_builder import D

    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    kernel = {"add_bf16": lambda: add_kernel(D.bfloat16), "row_sum_with_return_in_loop": lambda: row_sum_kernel(True),
              "half_math": half_math_kernel}[build]()
    result = cuda_lowering.lower(kernel, build)
    assert result.ok and result.stage == "cubin", result.error


def test_interpreting_library_functions_leaves_compilation_intact(tmp_path, monkeypatch):
    """The interpret backend patches triton.language while it runs; compiles afterwards must work."""
    import torch
    from kernelforge.backends.triton import cuda_lowering
    from test_triton_emitter import row_sum_kernel, run

    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    out = torch.empty(2)
    run(row_sum_kernel(True), (2,), torch.rand(2, 8), out, 8, 2)  # tl.sum / tl.min are library jit functions
    result = cuda_lowering.lower(row_sum_kernel(True), "after_interpret")
    assert result.stage == "cubin", result.error


@pytest.mark.parametrize("dtype,k,ok", [("float16", 8, False), ("float16", 16, True), ("int8", 16, False),
                                         ("float32", 8, True)])
def test_dot_k_below_the_nvidia_minimum_is_a_compilation_error(dtype, k, ok, tmp_path, monkeypatch):
    from kernelforge.backends.triton import cuda_lowering, cuda_rules
    from kernelforge.errors import CompilationError
    from triton_ir_builder import D, KernelBuilder, t

    dt = getattr(D, dtype)
    acc = D.int32 if dt is D.int8 else D.float32
    kb = KernelBuilder("small_dot")
    a, o = kb.param("a", dt, ptr=True), kb.param("o", acc, ptr=True)
    rows = kb.op("broadcast_to", kb.op("expand_dims", kb.op("arange", type=t(D.int32, 4), start=0, end=4),
                                       type=t(D.int32, 4, 1), axis=1), type=t(D.int32, 4, k))
    cols = kb.op("broadcast_to", kb.op("expand_dims", kb.op("arange", type=t(D.int32, k), start=0, end=k),
                                       type=t(D.int32, 1, k), axis=0), type=t(D.int32, 4, k))
    x = kb.op("load", kb.op("addptr", kb.op("full", a, type=t(dt, 4, k, ptr=True)), kb.op("add", rows, cols)))
    prod = kb.op("dot", x, kb.op("trans", x, perm=(1, 0), type=t(dt, k, 4)), type=t(acc, 4, 4))
    idx = kb.op("broadcast_to", kb.op("expand_dims", kb.op("arange", type=t(D.int32, 4), start=0, end=4),
                                      type=t(D.int32, 1, 4), axis=0), type=t(D.int32, 4, 4))
    kb.store(kb.op("addptr", kb.op("full", o, type=t(acc, 4, 4, ptr=True)), idx), prod)
    kernel = kb.build()
    if ok:
        monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
        monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
        result = cuda_lowering.lower(kernel, f"small_dot_{dtype}_{k}")
        assert result.stage == "cubin", result.error
    else:
        with pytest.raises(CompilationError, match=f"K={k}.*needs K >= "):
            cuda_rules.check(kernel)
