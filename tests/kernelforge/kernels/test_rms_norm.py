"""rms_norm and fused_add_rms_norm (DSL kernel) against the torch reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_cases import DTYPES, TOL, backend_param, randn, seeded

import kernelforge as kf
from kernelforge.kernels import fused_add_rms_norm, reference, rms_norm
from kernelforge.kernels.rms_norm import MAX_BLOCK

HIDDEN = st.sampled_from([1, 7, 64, 576, 1000, 4096, MAX_BLOCK + 100])


def check(backend: str, rows: int, hidden: int, dtype: torch.dtype, weight_dtype: torch.dtype, seed: int):
    gen = seeded(seed)
    x = randn((rows, hidden), dtype, gen)
    residual = randn((rows, hidden), dtype, gen)
    weight = randn((hidden,), weight_dtype, gen)
    eps = 1e-6
    out, expected = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
    with kf.backend(backend):
        rms_norm(out, x, weight, eps)
    reference.rms_norm(expected, x, weight, eps)
    torch.testing.assert_close(out, expected, **TOL[dtype])

    x1, r1, x2, r2 = x.clone(), residual.clone(), x.clone(), residual.clone()
    with kf.backend(backend):
        fused_add_rms_norm(x1, r1, weight, eps)
    reference.fused_add_rms_norm(x2, r2, weight, eps)
    torch.testing.assert_close(r1, r2, **TOL[dtype])
    torch.testing.assert_close(x1, x2, **TOL[dtype])


@given(rows=st.integers(1, 9), hidden=HIDDEN, dtype=st.sampled_from(DTYPES),
       weight_dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_matches_reference_cpu(rows, hidden, dtype, weight_dtype, seed):
    check("cpu", rows, hidden, dtype, weight_dtype, seed)


@pytest.mark.slow
@settings(max_examples=6)
@given(rows=st.integers(1, 3), hidden=st.sampled_from([7, 576, MAX_BLOCK + 100]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
@pytest.mark.parametrize("backend", [backend_param("interpret")])
def test_matches_reference_interpret(backend, rows, hidden, dtype, seed):
    check(backend, rows, hidden, dtype, dtype, seed)


@pytest.mark.parametrize("backend", [backend_param("cpu"), backend_param("interpret")])
def test_strided_rows_and_3d_input(backend):
    """Rows of a wider buffer (out and x strided) and a [batch, seq, hidden] input."""
    gen = seeded(0)
    buf = randn((4, 200), torch.float32, gen)
    x = buf[:, :96]
    weight = randn((96,), torch.float32, gen)
    out_buf = torch.zeros(4, 128)
    with kf.backend(backend):
        rms_norm(out_buf[:, 16:112], x, weight, 1e-5)
    expected = torch.empty(4, 96)
    reference.rms_norm(expected, x, weight, 1e-5)
    torch.testing.assert_close(out_buf[:, 16:112], expected)
    assert (out_buf[:, :16] == 0).all() and (out_buf[:, 112:] == 0).all()

    x3 = randn((2, 3, 96), torch.float16, gen)
    out3 = torch.empty_like(x3)
    with kf.backend(backend):
        rms_norm(out3, x3, weight, 1e-5)
    expected3 = torch.empty_like(x3)
    reference.rms_norm(expected3, x3, weight, 1e-5)
    torch.testing.assert_close(out3, expected3, **TOL[torch.float16])


def test_empty_batch_is_a_no_op():
    x = torch.empty(0, 64)
    rms_norm(torch.empty_like(x), x, torch.ones(64), 1e-6)
    fused_add_rms_norm(x, torch.empty_like(x), torch.ones(64), 1e-6)


def test_reference_formula():
    x = torch.tensor([[3.0, 4.0]])
    out = torch.empty_like(x)
    reference.rms_norm(out, x, torch.tensor([1.0, 2.0]), 0.0)
    rms = (12.5) ** 0.5
    torch.testing.assert_close(out, torch.tensor([[3.0 / rms, 8.0 / rms]]))


def test_cpu_default_widens_chunks_while_the_rows_chunk_stays_cache_sized(monkeypatch):
    from kernelforge.kernels.rms_norm import CPU_CHUNK_ELEMS, _default

    monkeypatch.setenv("KF_CPU_NATIVE", "0")  # the torch tier's rule
    def block(rows: int, hidden: int, device: str = "cpu") -> int:
        x = torch.empty(0, device=device)
        return _default({"hidden": hidden, "n_rows": rows, "x_ptr": x})["BLOCK"]

    assert block(1, 4096) == 4096 and block(1, 576) == 1024
    assert block(CPU_CHUNK_ELEMS // 4096 + 1, 4096) == 2048  # two 2048 chunks: a 4096 one is too big
    assert block(CPU_CHUNK_ELEMS // 4096, 4096) == 4096
    with kf.backend("interpret"):
        assert block(1, 4096) == MAX_BLOCK  # the NPU budget holds off the CPU backend


def test_native_cpu_default_is_a_quarter_of_the_padded_row_at_most_512(monkeypatch):
    from kernelforge.kernels.rms_norm import NATIVE_MAX_BLOCK, _default

    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    if not kf.kernels.launch.on_native_cpu(torch.device("cpu")):
        pytest.skip("no C compiler: the native tier is off")
    x = torch.empty(0)
    assert _default({"hidden": 576, "n_rows": 64, "x_ptr": x})["BLOCK"] == 256
    assert _default({"hidden": 4096, "n_rows": 1, "x_ptr": x})["BLOCK"] == NATIVE_MAX_BLOCK
    assert _default({"hidden": 100, "n_rows": 1, "x_ptr": x})["BLOCK"] == 64


@pytest.mark.parametrize("rows", [1, 40])
def test_cpu_multi_and_single_chunk_rows(rows):
    """40 rows of MAX_BLOCK + 100 run in two chunks on the CPU backend (the last one
    mostly masked), a single row in one."""
    check("cpu", rows, MAX_BLOCK + 100, torch.float32, torch.float32, 0)
