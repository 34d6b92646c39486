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
