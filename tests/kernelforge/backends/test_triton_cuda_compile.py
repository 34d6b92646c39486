"""The `triton` backend's CUDA path: emitted kernels compiled by upstream Triton to cubins, on a CPU."""

from __future__ import annotations

import pytest

from kernelforge.backends.triton import cuda_check, flavor

pytestmark = pytest.mark.skipif(flavor() != "cuda", reason="needs upstream triton")


def test_semantics_and_attention_compile_for_sm80(capsys):
    assert cuda_check.main(["--arch", "80", "-k", "semantics/matmul", "-k", "semantics/early_exit_loop",
                            "-k", "_paged_attention_kernel[bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "4/4 kernels compiled to cubin" in out and "sm_80  reached cubin" in out


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90(capsys):
    status = cuda_check.main([])
    out = capsys.readouterr().out
    assert status == 0, out
    assert " 0 failed" in out
