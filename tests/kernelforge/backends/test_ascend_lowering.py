"""`make check-ascend`: kernels lowered by triton-ascend in `.venv-ascend`, and how they are found.

The lowering runs in a subprocess because triton-ascend and upstream triton install the
same module and cannot share this test environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kernelforge import ir
from kernelforge.backends.triton import emitter, examples

REPO = Path(__file__).resolve().parents[3]
ASCEND_PYTHON = REPO / ".venv-ascend" / "bin" / "python"
needs_ascend_venv = pytest.mark.skipif(not ASCEND_PYTHON.exists(),
                                       reason=".venv-ascend is absent (make check-ascend creates it)")


def check_ascend(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ASCEND_PYTHON), "-m", "kernelforge.backends.triton.ascend_check", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def rows(output: str) -> dict[str, str]:
    """Kernel name -> status column of the check's table (columns are 2+ spaces apart)."""
    out = {}
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 3 and cells[1] in ("lowered", "FAILED"):
            out[cells[0]] = cells[1]
    return out


@needs_ascend_venv
def test_semantics_and_llm_kernels_lower_to_linalg():
    proc = check_ascend("-k", "semantics/matmul", "-k", "semantics/early_exit_loop",
                        "-k", "_rms_norm_kernel[bfloat16", "-k", "_paged_attention_kernel[float16")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = rows(proc.stdout)
    assert table["semantics/matmul"] == "lowered"
    assert table["semantics/early_exit_loop"] == "lowered"
    # FUSED_ADD False/True, each also in the persistent-grid variant an NPU launches.
    rms = [name for name in table if name.startswith("kernels/_rms_norm_kernel[bfloat16")]
    assert len(rms) == 4 and sum("PERSISTENT=True" in name for name in rms) == 2
    assert any(name.startswith("kernels/_paged_attention_kernel[float16") for name in table)
    assert set(table.values()) == {"lowered"}
    assert "reached linalg" in proc.stdout


@needs_ascend_venv
def test_a_kernel_over_the_ub_budget_fails_the_check():
    proc = check_ascend("-k", "_rms_norm_kernel[bfloat16", KF_NPU_UB_BYTES="1024")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert set(rows(proc.stdout).values()) == {"FAILED"}
    assert "on-chip buffer" in proc.stdout


def test_every_llm_op_launch_is_recorded_and_specialises():
    found = examples.kernel_examples()
    names = {e.name.split("[")[0] for e in found}
    assert {"kernels/_rms_norm_kernel", "kernels/_rotary_kernel", "kernels/_reshape_and_cache_kernel",
            "kernels/_paged_attention_kernel", "kernels/_merge_segments_kernel"} <= names
    for example in found:
        kernel = example.build()
        ir.verify(kernel)
        assert len(emitter.triton_types(kernel)) == len(kernel.params)


def test_semantic_cases_are_enumerated():
    names = [e.name for e in examples.semantic_examples()]
    assert "semantics/add" in names and len(names) == len(set(names))


def test_check_refuses_to_run_without_triton_ascend():
    proc = subprocess.run([sys.executable, "-m", "kernelforge.backends.triton.ascend_check"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "triton-ascend" in proc.stderr
