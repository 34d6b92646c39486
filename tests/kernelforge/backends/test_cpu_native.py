"""The CPU backend's native tier (`c_emit` + `c_build`): when it runs, that it computes
what the torch tier computes, and that it never performs an out-of-bounds lane.

The DSL's semantics and the LLM kernels are checked on both tiers by the rest of the
suite (`make test` runs the CPU tests a second time with KF_CPU_NATIVE=0).
"""

from __future__ import annotations

import os
import re
from unittest import mock

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import c_build, c_emit

pytestmark = pytest.mark.skipif(c_build.compiler() is None, reason="no C compiler (the native tier is off)")

FLOATS = [torch.float32, torch.float16, torch.bfloat16]


@kf.jit
def chain_kernel(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    x = kl.load(x_ptr + offs, mask=mask, other=1.0)
    y = kl.load(y_ptr + offs, mask=mask, other=1.0)
    z = x * y + x / y - kl.exp(y) * scale
    z = kl.where(x > y, kl.maximum(z, x), kl.minimum(z, y))
    kl.store(out_ptr + offs, z, mask=mask)


@kf.jit
def row_stats_kernel(x_ptr, out_ptr, n_cols, BLOCK: kl.constexpr):
    row = kl.program_id(0)
    cols = kl.arange(0, BLOCK)
    x = kl.load(x_ptr + row * n_cols + cols, mask=cols < n_cols, other=-float("inf"))
    peak = kl.max(x, axis=0)
    total = kl.sum(kl.where(cols < n_cols, kl.exp(x - peak), 0.0), axis=0)
    kl.store(out_ptr + row * 3, peak)
    kl.store(out_ptr + row * 3 + 1, total)
    kl.store(out_ptr + row * 3 + 2, kl.argmax(x, axis=0).to(kl.float32))


@kf.jit
def outer_kernel(a_ptr, b_ptr, out_ptr, M: kl.constexpr, N: kl.constexpr):
    a = kl.load(a_ptr + kl.arange(0, M))
    b = kl.load(b_ptr + kl.arange(0, N))
    prod = a[:, None] * b[None, :]
    kl.store(out_ptr + kl.arange(0, N)[:, None] * M + kl.arange(0, M)[None, :], kl.trans(prod, (1, 0)))


@kf.jit
def gather_kernel(x_ptr, idx_ptr, out_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    kl.store(out_ptr + offs, kl.load(x_ptr + kl.load(idx_ptr + offs)))


@kf.jit
def scatter_kernel(idx_ptr, out_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    kl.store(out_ptr + kl.load(idx_ptr + offs), offs.to(kl.float32))


@kf.jit
def dot_kernel(a_ptr, b_ptr, c_ptr, N: kl.constexpr):
    i = kl.arange(0, N)
    a = kl.load(a_ptr + i[:, None] * N + i[None, :])
    b = kl.load(b_ptr + i[:, None] * N + i[None, :])
    kl.store(c_ptr + i[:, None] * N + i[None, :], kl.dot(a, b))


def both_tiers(launch):
    """`launch()`'s result on the native tier, then on the torch tier."""
    results = []
    for flag in ("1", "0"):
        with mock.patch.dict(os.environ, {"KF_CPU_NATIVE": flag}):
            results.append(launch())
    return tuple(results)


def test_a_dot_free_kernel_carries_c_and_a_dot_kernel_does_not(fresh_kernel_cache):
    assert "NATIVE_C = " in chain_kernel.source("cpu", x_ptr="*fp32", y_ptr="*fp32", out_ptr="*fp32",
                                                 scale="fp32", BLOCK=64)
    assert "NATIVE_C = " not in dot_kernel.source("cpu", N=16)


def test_sanitized_modules_carry_no_c(fresh_kernel_cache, monkeypatch):
    monkeypatch.setenv("KF_SANITIZE", "1")
    assert "NATIVE_C = " not in chain_kernel.source("cpu", x_ptr="*fp32", y_ptr="*fp32", out_ptr="*fp32",
                                                     scale="fp32", BLOCK=64)


def test_the_launch_is_native_unless_turned_off(fresh_kernel_cache, monkeypatch):
    x = torch.randn(100)
    out = torch.empty(100)
    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    chain_kernel[(2,)](x, x, out, 100, 0.5, BLOCK=64)
    plans = list(chain_kernel._plans.values())
    assert any("native" in plan.launch.__code__.co_filename for plan in plans)
    monkeypatch.setenv("KF_CPU_NATIVE", "0")
    chain_kernel[(2,)](x, x, out, 100, 0.5, BLOCK=64)
    plans = list(chain_kernel._plans.values())
    assert any("native" not in plan.launch.__code__.co_filename for plan in plans)


@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 300), block=st.sampled_from([16, 64, 128]), dtype=st.sampled_from(FLOATS),
       seed=st.integers(0, 2**31 - 1), scale=st.floats(-2, 2))
def test_elementwise_chain_matches_the_torch_tier(n, block, dtype, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g).to(dtype)
    y = (torch.rand(n, generator=g) + 0.5).to(dtype)

    def launch():
        out = torch.full((n,), 7.0, dtype=dtype)
        chain_kernel[(kf.cdiv(n, block),)](x, y, out, n, scale, BLOCK=block)
        return out

    native, torch_tier = both_tiers(launch)
    # Each op rounds to float16/bfloat16 in both tiers; they may differ by the last bit
    # where an intermediate lands on a rounding boundary.
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(native.float(), torch_tier.float(), atol=tol, rtol=tol)


@settings(deadline=None, max_examples=30)
@given(rows=st.integers(1, 9), n_cols=st.integers(1, 200), seed=st.integers(0, 2**31 - 1),
       nan_at=st.none() | st.integers(0, 199))
def test_reductions_match_the_torch_tier(rows, n_cols, seed, nan_at):
    x = torch.randn(rows, n_cols, generator=torch.Generator().manual_seed(seed))
    if nan_at is not None and nan_at < n_cols:
        x[0, nan_at] = float("nan")
    block = max(16, 1 << (n_cols - 1).bit_length())

    def launch():
        out = torch.zeros(rows, 3)
        row_stats_kernel[(rows,)](x, out, n_cols, BLOCK=block)
        return out

    native, torch_tier = both_tiers(launch)
    torch.testing.assert_close(native, torch_tier, equal_nan=True)
    torch.testing.assert_close(native[:, 0], x.amax(dim=1), equal_nan=True)


@pytest.mark.parametrize("m,n", [(1, 1), (4, 8), (16, 2)])
def test_broadcasts_and_transposes_match_the_torch_tier(m, n):
    a, b = torch.randn(m), torch.randn(n)

    def launch():
        out = torch.zeros(n, m)
        outer_kernel[(1,)](a, b, out, M=m, N=n)
        return out

    native, torch_tier = both_tiers(launch)
    torch.testing.assert_close(native, torch_tier)
    torch.testing.assert_close(native, torch.outer(a, b).T)


def test_an_out_of_bounds_load_is_a_fault_naming_the_line(monkeypatch):
    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    x, idx, out = torch.randn(8), torch.tensor([0, 1, 2, 8]), torch.zeros(4)
    with pytest.raises(kf.KernelFault, match=r"in kernel 'gather_kernel'(.|\n)*kl.load\(x_ptr"):
        gather_kernel[(1,)](x, idx, out, BLOCK=4)


@pytest.mark.parametrize("bad", [4, -1, 1 << 40])
def test_an_out_of_bounds_store_lane_is_not_performed(monkeypatch, bad):
    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    storage = torch.zeros(8)
    out = storage[:4]  # the lanes past it would land in storage[4:]
    idx = torch.tensor([0, 1, 2, bad])
    with pytest.raises(kf.KernelFault, match="in kernel 'scatter_kernel'"):
        scatter_kernel[(1,)](idx, out, BLOCK=4)
    assert storage[4:].eq(0).all()


@kf.jit
def narrowed_store_kernel(out_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK).to(kl.int8)  # 128.. wrap to -128..: before the tensor
    kl.store(out_ptr + offs, kl.full((BLOCK,), 7.0, kl.float32))


def test_an_offset_that_wraps_in_a_narrow_type_is_checked_lane_by_lane(monkeypatch):
    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    storage = torch.zeros(512)
    out = storage[256:]
    with pytest.raises(kf.KernelFault, match="narrowed_store_kernel"):
        narrowed_store_kernel[(1,)](out, BLOCK=256)
    assert storage[:256].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_constants_are_rounded_to_their_type(dtype):
    @kf.jit
    def below_tenth(x_ptr, out_ptr, BLOCK: kl.constexpr):
        offs = kl.arange(0, BLOCK)
        x = kl.load(x_ptr + offs)
        kl.store(out_ptr + offs, kl.where(x < 0.1, x, kl.full((BLOCK,), 0.1, x.dtype)).to(kl.float32))

    x = torch.full((16,), 0.1).to(dtype)

    def launch():
        out = torch.zeros(16)
        below_tenth[(1,)](x, out, BLOCK=16)
        return out

    native, torch_tier = both_tiers(launch)
    torch.testing.assert_close(native, torch_tier, atol=0, rtol=0)
    assert native[0].item() == x[0].item()


def test_a_kernel_the_compiler_rejects_runs_on_the_torch_tier(fresh_kernel_cache, monkeypatch):
    def broken(source):
        raise c_build.NativeBuildError("cc failed on a generated kernel")

    @kf.jit
    def doubled(x_ptr, out_ptr, BLOCK: kl.constexpr):  # defined here: launched nowhere before
        offs = kl.arange(0, BLOCK)
        kl.store(out_ptr + offs, kl.load(x_ptr + offs) * 2.0)

    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    monkeypatch.setattr(c_build, "build", broken)
    x = torch.randn(64)
    out = torch.empty(64)
    with pytest.warns(RuntimeWarning, match="doubled runs on the torch tier"):
        doubled[(1,)](x, out, BLOCK=64)
    torch.testing.assert_close(out, x * 2)


def test_a_zero_loop_step_is_an_error(monkeypatch):
    @kf.jit
    def stepped(out_ptr, step):
        total = kl.zeros([], dtype=kl.int32)
        for i in range(0, 4, step):
            total = total + i
        kl.store(out_ptr, total)

    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    out = torch.zeros(1, dtype=torch.int32)
    stepped[(1,)](out, 1)
    assert out.item() == 6
    with pytest.raises(ValueError, match="step is zero"):
        stepped[(1,)](out, 0)


def test_a_library_is_compiled_once_per_source(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(c_build, "_loaded", {})
    source = c_emit.emit(gather_kernel.specialize(["*fp32", "*i64", "*fp32"], {"BLOCK": 4})).source
    c_build.build(source)
    built = list((tmp_path / "cpu-native").rglob("*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    c_build._loaded.clear()
    c_build.build(source)
    assert built[0].stat().st_mtime_ns == mtime


def test_a_compiler_error_names_the_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path))
    with pytest.raises(c_build.NativeBuildError, match="failed on a generated kernel"):
        c_build.build("int kf_kernel( {")


@kf.jit
def prefix_masked_kernel(x_ptr, out_ptr, start, bound, BLOCK: kl.constexpr, STEP: kl.constexpr, OP: kl.constexpr):
    lanes = start + STEP * kl.arange(0, BLOCK)
    if OP == "lt":
        mask = lanes < bound
    elif OP == "le":
        mask = lanes <= bound
    elif OP == "gt":
        mask = bound > lanes
    else:
        mask = bound >= lanes
    kl.store(out_ptr + lanes, kl.load(x_ptr + lanes, mask=mask, other=-1.0) + 1.0, mask=mask)


def _on_lanes(start: int, bound: int, block: int, step: int, op: str) -> list[int]:
    """The offsets `prefix_masked_kernel` accesses."""
    lanes = [start + step * i for i in range(block)]
    keep = {"lt": lambda v: v < bound, "le": lambda v: v <= bound, "gt": lambda v: bound > v,
            "ge": lambda v: bound >= v}[op]
    return [v for v in lanes if keep(v)]


@settings(deadline=None, max_examples=60)
@given(n=st.integers(0, 70), start=st.integers(-80, 80), bound=st.integers(-80, 150),
       block=st.sampled_from([1, 16, 64]), step=st.sampled_from([-2, -1, 1, 3]),
       op=st.sampled_from(["lt", "le", "gt", "ge"]))
@example(n=40, start=0, bound=40, block=64, step=1, op="lt")  # the last on lane is the tensor's last
@example(n=40, start=0, bound=41, block=64, step=1, op="lt")  # one on lane past the end
@example(n=40, start=0, bound=40, block=64, step=1, op="le")
@example(n=40, start=40, bound=200, block=16, step=3, op="ge")  # every on lane past the end
def test_masked_off_lanes_past_the_tensor_never_fault_and_on_lanes_are_checked(n, start, bound, block, step, op):
    """A mask on for the first k lanes lets the chunk skip per-lane checks when lanes
    0..k-1 are in bounds; the lanes past them may lie outside the tensor."""
    guard = 8
    storage = torch.zeros(n + 2 * guard)
    out = storage[guard:guard + n]
    x = torch.arange(n, dtype=torch.float32)
    on = _on_lanes(start, bound, block, step, op)
    with mock.patch.dict(os.environ, {"KF_CPU_NATIVE": "1"}):
        if all(0 <= v < n for v in on):
            prefix_masked_kernel[(1,)](x, out, start, bound, BLOCK=block, STEP=step, OP=op)
            expected = torch.zeros(n)
            expected[on] = x[on] + 1.0
            torch.testing.assert_close(out, expected)
        else:
            with pytest.raises(kf.KernelFault, match="prefix_masked_kernel"):
                prefix_masked_kernel[(1,)](x, out, start, bound, BLOCK=block, STEP=step, OP=op)
    assert storage[:guard].eq(0).all() and storage[guard + n:].eq(0).all()


def test_a_prefix_masked_chunk_is_proved_by_its_on_lanes():
    kernel = prefix_masked_kernel.specialize(["*fp32", "*fp32", "i32", "i32"], {"BLOCK": 64, "STEP": 1, "OP": "lt"})
    assert "kf_prefix(" in c_emit.emit(kernel).source.split("kf_kernel(")[1]
    suffix = prefix_masked_kernel.specialize(["*fp32", "*fp32", "i32", "i32"], {"BLOCK": 64, "STEP": -1, "OP": "lt"})
    assert "kf_prefix(" not in c_emit.emit(suffix).source.split("kf_kernel(")[1]


@kf.jit
def odd_columns_kernel(x_ptr, out_ptr, row_ptr, n_rows, WIDTH: kl.constexpr):
    """Row `row`'s odd columns: the row pointer is a [1, 1] block broadcast over the
    columns, the column offsets arrays an earlier loop filled from constants (the scalar
    load between ends that loop)."""
    cols = kl.arange(0, WIDTH)
    odd = 2 * cols + 1
    rows = kl.load(row_ptr) + kl.arange(0, 1)
    mask = kl.broadcast_to((rows < n_rows)[:, None], (1, WIDTH))
    x = kl.load(x_ptr + rows[:, None] * (2 * WIDTH) + odd[None, :], mask=mask, other=0.0)
    kl.store(out_ptr + rows[:, None] * WIDTH + cols[None, :], x, mask=mask)


def test_a_broadcast_row_pointer_and_constant_columns_are_proved_in_bounds():
    kernel = odd_columns_kernel.specialize(["*fp32", "*fp32", "*i32", "i32"], {"WIDTH": 16})
    source = c_emit.emit(kernel).source
    lines = source.splitlines()
    for access in ("p_x_ptr[", "p_out_ptr["):  # in the checked and the unchecked loop
        assert sum(access in line for line in lines) == 2
    # Later loops compute the constant columns instead of reading them back (a gather to gcc).
    reads = [line for line in source.splitlines() if re.search(r"v_odd\w*\[i\](?!\s*=)", line)]
    assert reads and all(re.search(r"LL \* i\) : v_odd\w*\[i\]", line) for line in reads)


@kf.jit
def narrowed_later_kernel(out_ptr, n_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK).to(kl.int8).to(kl.int32)  # 128.. wrap to -128..: before the tensor
    n = kl.load(n_ptr)  # ends the loop that fills offs
    kl.store(out_ptr + offs, kl.full((BLOCK,), 7.0, kl.float32), mask=offs < n)


def test_a_wrapped_constant_array_read_in_a_later_loop_keeps_its_wrapped_values(monkeypatch):
    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    storage = torch.zeros(512)
    out = storage[256:]
    with pytest.raises(kf.KernelFault, match="narrowed_later_kernel"):
        narrowed_later_kernel[(1,)](out, torch.tensor([1000], dtype=torch.int32), BLOCK=256)
    assert storage[:256].eq(0).all()


@pytest.mark.parametrize("row", [0, 2, 3, 5])
def test_broadcast_rows_past_the_tensor_fault_unless_masked_off(monkeypatch, row):
    monkeypatch.setenv("KF_CPU_NATIVE", "1")
    x = torch.arange(3 * 32, dtype=torch.float32)
    storage = torch.zeros(6 * 16)
    out = storage[:3 * 16]
    n_rows = 4  # row 3 is on but lies past both tensors; row 5 is masked off
    row_at = torch.tensor([row], dtype=torch.int32)
    if row == 3:
        with pytest.raises(kf.KernelFault, match="odd_columns_kernel"):
            odd_columns_kernel[(1,)](x, out, row_at, n_rows, WIDTH=16)
    else:
        odd_columns_kernel[(1,)](x, out, row_at, n_rows, WIDTH=16)
    if row < 3:
        torch.testing.assert_close(out.view(3, 16)[row], x.view(3, 32)[row, 1::2])
    assert storage[3 * 16:].eq(0).all()


@kf.jit
def convert_kernel(x_ptr, out_ptr, n, BLOCK: kl.constexpr, STRIDE: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    value = kl.load(x_ptr + offs * STRIDE, mask=mask).to(out_ptr.dtype.element_ty)
    kl.store(out_ptr + offs * STRIDE, value, mask=mask)


def _converted(x: torch.Tensor, dtype: torch.dtype, stride: int) -> torch.Tensor:
    """`x` converted by the native tier, read and written `stride` elements apart."""
    spread = torch.zeros(x.numel() * stride, dtype=x.dtype)
    spread[::stride] = x
    out = torch.zeros(spread.shape, dtype=dtype)
    with mock.patch.dict(os.environ, {"KF_CPU_NATIVE": "1"}):
        convert_kernel[(kf.cdiv(x.numel(), 1024),)](spread, out, x.numel(), BLOCK=1024, STRIDE=stride)
    return out[::stride]


def test_contiguous_float16_loops_convert_with_vectorisable_code():
    def source(stride):
        kernel = convert_kernel.specialize(["*fp16", "*fp32", "i32"], {"BLOCK": 64, "STRIDE": stride})
        return c_emit.emit(kernel).source
    assert "#define kf_f16_to_float kf_f16_to_float_bits" in source(1)
    assert "#define" not in source(2)


@pytest.mark.parametrize("stride", [1, 2])  # the _bits conversions, the CPU's
def test_every_float16_widens_to_the_float_torch_gives(stride):
    halves = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(torch.float16)
    got = _converted(halves, torch.float32, stride)
    assert torch.equal(got.view(torch.int32), halves.float().view(torch.int32))


@pytest.mark.parametrize("stride", [1, 2])
def test_floats_round_to_the_float16_torch_gives(stride):
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-(1 << 31), 1 << 31, (1 << 18,), generator=g, dtype=torch.int64).to(torch.int32)
    # Every half and the midpoints around it: the ties that round to even.
    halves = torch.arange(0, 0x7c01, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    ulps = torch.cat([halves[1:] - halves[:-1], torch.tensor([32.0])])
    edges = torch.cat([halves, halves + ulps / 2, halves + ulps / 2 * (1 - 2 ** -20), halves - ulps / 2])
    floats = torch.cat([bits.view(torch.float32), edges, -edges,
                        torch.tensor([float("inf"), -float("inf"), float("nan"), 65519.0, 65520.0, 1e-8, 1e-45])])
    expected = floats.to(torch.float16).view(torch.int16)
    got = _converted(floats, torch.float16, stride)
    nan = floats.isnan()
    assert torch.equal(got.view(torch.int16)[~nan], expected[~nan])
    assert got[nan].isnan().all()
