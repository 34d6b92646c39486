"""The CPU backend runs DSL kernels with Triton's semantics, grid-vectorised.

Each kernel is launched through `@kf.jit` on CPU tensors and compared with a short,
obviously-correct torch computation. Kernels cover the affine fast paths and their
fallbacks (tails, strides, non-contiguous tensors), gathers/scatters, reductions,
dot, uniform and divergent control flow, early return and atomics.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl


pytestmark = pytest.mark.usefixtures("fresh_kernel_cache")


# ------------------------------------------------------------------ elementwise


@kf.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: kl.constexpr):
    pid = kl.program_id(0)
    offs = pid * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    x = kl.load(x_ptr + offs, mask=mask, other=0.0)
    y = kl.load(y_ptr + offs, mask=mask, other=0.0)
    kl.store(out_ptr + offs, x + y, mask=mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 127, 128, 1000, 4096])
def test_vector_add(n, dtype):
    x, y = torch.randn(n).to(dtype), torch.randn(n).to(dtype)
    out = torch.full((n,), 7.0, dtype=dtype)
    add_kernel[(kf.cdiv(n, 128),)](x, y, out, n, BLOCK=128)
    torch.testing.assert_close(out, x + y)


@given(n=st.integers(1, 3000), block=st.sampled_from([16, 64, 256]), extra=st.integers(0, 3))
def test_vector_add_any_size_and_grid(n, block, extra):
    x, y = torch.randn(n), torch.randn(n)
    out = torch.zeros(n)
    add_kernel[(kf.cdiv(n, block) + extra,)](x, y, out, n, BLOCK=block)
    torch.testing.assert_close(out, x + y)


def test_affine_add_uses_views_not_gathers():
    src = add_kernel.source("cpu", x_ptr="*fp32", y_ptr="*fp32", out_ptr="*fp32", n="i32", BLOCK=128)
    src = src.split("NATIVE_KERNEL = ")[0]  # the torch tier's module, without the native tier's C
    assert "views.load" in src and "views.store" in src
    assert "gather" not in src and "scatter" not in src
    assert "offs" not in src  # the offsets tensor is never materialised on the fast path


@kf.jit
def math_kernel(x_ptr, out_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    m = offs < n
    x = kl.load(x_ptr + offs, mask=m, other=1.0)
    a = kl.abs(x) + 0.5
    y = kl.exp(x) + kl.log(a) + kl.sqrt(a) + kl.rsqrt(a) + kl.sigmoid(x) + kl.cos(x) + kl.sin(x)
    y = y + kl.exp2(x) + kl.log2(a) + kl.maximum(x, 0.25) - kl.minimum(x, -0.25)
    y = kl.where(x > 0, y, -y)
    kl.store(out_ptr + offs, y, mask=m)


def test_elementwise_math():
    x = torch.randn(300)
    out = torch.empty(300)
    math_kernel[(3,)](x, out, 300, BLOCK=128)
    a = x.abs() + 0.5
    y = (x.exp() + a.log() + a.sqrt() + a.rsqrt() + x.sigmoid() + x.cos() + x.sin() + x.exp2() + a.log2()
         + x.clamp(min=0.25) - x.clamp(max=-0.25))
    torch.testing.assert_close(out, torch.where(x > 0, y, -y))


@kf.jit
def intdiv_kernel(a_ptr, b_ptr, q_ptr, r_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    a = kl.load(a_ptr + offs)
    b = kl.load(b_ptr + offs)
    kl.store(q_ptr + offs, a // b)
    kl.store(r_ptr + offs, a % b)


def test_integer_division_truncates_like_c():
    a = torch.tensor([7, -7, 7, -7, 0, 5, -9, 9], dtype=torch.int32)
    b = torch.tensor([2, 2, -2, -2, 3, 5, 4, -4], dtype=torch.int32)
    q, r = torch.empty_like(a), torch.empty_like(a)
    intdiv_kernel[(1,)](a, b, q, r, BLOCK=8)
    assert q.tolist() == [3, -3, -3, 3, 0, 1, -2, -2]
    assert r.tolist() == [1, -1, 1, -1, 0, 0, -1, 1]


@kf.jit
def scalar_math_kernel(out_ptr, a, b):
    kl.store(out_ptr + 0, a // b)
    kl.store(out_ptr + 1, a % b)
    kl.store(out_ptr + 2, kl.maximum(a, b))
    kl.store(out_ptr + 3, kl.where(a > b, a, b * 2))


def test_uniform_scalar_arithmetic():
    out = torch.zeros(4, dtype=torch.int32)
    scalar_math_kernel[(1,)](out, -7, 2)
    assert out.tolist() == [-3, -1, 2, 4]


@kf.jit
def cast_kernel(x_ptr, h_ptr, i_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    x = kl.load(x_ptr + offs)
    kl.store(h_ptr + offs, x.to(kl.float16))
    kl.store(i_ptr + offs, x.to(kl.int32))


def test_casts_round_and_truncate():
    x = torch.tensor([1.7, -1.7, 2.5, 1e-4, 70000.0, -0.2, 3.0, 100.9])
    h, i = torch.empty(8, dtype=torch.float16), torch.empty(8, dtype=torch.int32)
    cast_kernel[(1,)](x, h, i, BLOCK=8)
    assert torch.equal(h, x.to(torch.float16))
    assert torch.equal(i, x.to(torch.int32))


# ------------------------------------------------------------------ rows, reductions, 2-D


@kf.jit
def softmax_kernel(out_ptr, in_ptr, in_stride, out_stride, n_cols, BLOCK: kl.constexpr):
    row = kl.program_id(0)
    cols = kl.arange(0, BLOCK)
    mask = cols < n_cols
    x = kl.load(in_ptr + row * in_stride + cols, mask=mask, other=-float("inf"))
    x = x - kl.max(x, axis=0)
    num = kl.exp(x)
    kl.store(out_ptr + row * out_stride + cols, num / kl.sum(num, axis=0), mask=mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 100), (33, 128), (5, 781)])
def test_softmax_rows(rows, cols, dtype):
    x = torch.randn(rows, cols).to(dtype)
    out = torch.empty_like(x)
    block = 1 << (cols - 1).bit_length()
    softmax_kernel[(rows,)](out, x, x.stride(0), out.stride(0), cols, BLOCK=block)
    tol = {} if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out, torch.softmax(x.float(), dim=-1).to(dtype), **tol)


def test_softmax_on_strided_rows():
    base = torch.randn(6, 300)  # rows 300 apart, the kernel reads 100 columns of each
    out = torch.empty(6, 100)
    softmax_kernel[(6,)](out, base, base.stride(0), out.stride(0), 100, BLOCK=128)
    torch.testing.assert_close(out, torch.softmax(base[:, :100], dim=-1))


@kf.jit
def reduce_kernel(x_ptr, out_ptr, M: kl.constexpr, N: kl.constexpr):
    pid = kl.program_id(0)
    rm = kl.arange(0, M)
    rn = kl.arange(0, N)
    x = kl.load(x_ptr + pid * M * N + rm[:, None] * N + rn[None, :])
    base = out_ptr + pid * (2 * M + 2 * N + 3)
    kl.store(base + rm, kl.sum(x, axis=1))
    kl.store(base + M + rn, kl.max(x, axis=0))
    kl.store(base + M + N + rm, kl.min(x, axis=1))
    kl.store(base + 2 * M + N + rn, kl.argmax(x, axis=0).to(kl.float32))
    kl.store(base + 2 * M + 2 * N, kl.sum(x))
    kl.store(base + 2 * M + 2 * N + 1, kl.max(x))
    kl.store(base + 2 * M + 2 * N + 2, kl.sum(kl.sum(x, axis=1, keep_dims=True)))


def test_reductions():
    G, M, N = 3, 4, 8
    x = torch.randn(G, M, N)
    out = torch.empty(G, 2 * M + 2 * N + 3)
    reduce_kernel[(G,)](x, out, M=M, N=N)
    want = torch.cat([x.sum(2), x.amax(1), x.amin(2), x.argmax(1).float(), x.sum((1, 2))[:, None],
                      x.amax((1, 2))[:, None], x.sum((1, 2))[:, None]], dim=1)
    torch.testing.assert_close(out, want)


@kf.jit
def grid2d_kernel(out_ptr, stride):
    i = kl.program_id(0)
    j = kl.program_id(1)
    k = kl.program_id(2)
    value = i * 100 + j * 10 + k + kl.num_programs(0) * 1000
    kl.store(out_ptr + k * stride * kl.num_programs(1) + j * stride + i, value)


def test_three_grid_axes():
    out = torch.zeros(2, 3, 4, dtype=torch.int32)
    grid2d_kernel[(4, 3, 2)](out, 4)
    i, j, k = torch.meshgrid(torch.arange(4), torch.arange(3), torch.arange(2), indexing="ij")
    assert torch.equal(out, (i * 100 + j * 10 + k + 4000).permute(2, 1, 0).to(torch.int32))


@kf.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                  stride_cm, stride_cn, BM: kl.constexpr, BN: kl.constexpr, BK: kl.constexpr):
    pid_m = kl.program_id(0)
    pid_n = kl.program_id(1)
    offs_m = pid_m * BM + kl.arange(0, BM)
    offs_n = pid_n * BN + kl.arange(0, BN)
    offs_k = kl.arange(0, BK)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = kl.zeros((BM, BN), dtype=kl.float32)
    for k in range(0, kl.cdiv(K, BK)):
        a = kl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < K - k * BK), other=0.0)
        b = kl.load(b_ptrs, mask=(offs_k[:, None] < K - k * BK) & (offs_n[None, :] < N), other=0.0)
        acc = kl.dot(a, b, acc)
        a_ptrs += BK * stride_ak
        b_ptrs += BK * stride_bk
    c = acc.to(c_ptr.dtype.element_ty)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    kl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn, c, mask=mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("M,N,K", [(16, 16, 16), (33, 17, 50), (64, 32, 128)])
def test_matmul(M, N, K, dtype):
    a, b = torch.randn(M, K).to(dtype), torch.randn(K, N).to(dtype)
    c = torch.empty(M, N, dtype=dtype)
    grid = (kf.cdiv(M, 16), kf.cdiv(N, 16))
    matmul_kernel[grid](a, b, c, M, N, K, *a.stride(), *b.stride(), *c.stride(), BM=16, BN=16, BK=16)
    torch.testing.assert_close(c.float(), a.float() @ b.float(), atol=1e-2, rtol=1e-2)


def test_matmul_transposed_operand():
    a, bt = torch.randn(20, 24), torch.randn(12, 24)
    c = torch.empty(20, 12)
    # b = bt.T: element (k, n) sits at n * 24 + k
    matmul_kernel[(2, 1)](a, bt, c, 20, 12, 24, *a.stride(), 1, 24, *c.stride(), BM=16, BN=16, BK=16)
    torch.testing.assert_close(c, a @ bt.T)


@kf.jit
def int8_dot_kernel(a_ptr, b_ptr, c_ptr, N: kl.constexpr):
    r = kl.arange(0, N)
    a = kl.load(a_ptr + r[:, None] * N + r[None, :])
    b = kl.load(b_ptr + r[:, None] * N + r[None, :])
    kl.store(c_ptr + r[:, None] * N + r[None, :], kl.dot(a, b))


def test_int8_dot_accumulates_in_int32():
    a = torch.randint(-128, 127, (16, 16), dtype=torch.int8)
    b = torch.randint(-128, 127, (16, 16), dtype=torch.int8)
    c = torch.empty(16, 16, dtype=torch.int32)
    int8_dot_kernel[(1,)](a, b, c, N=16)
    assert torch.equal(c, a.int() @ b.int())


# ------------------------------------------------------------------ control flow


@kf.jit
def ragged_sum_kernel(x_ptr, starts_ptr, lens_ptr, out_ptr, BLOCK: kl.constexpr):
    pid = kl.program_id(0)
    start = kl.load(starts_ptr + pid)
    length = kl.load(lens_ptr + pid)
    acc = kl.zeros((BLOCK,), dtype=kl.float32)
    for i in range(0, length, BLOCK):
        offs = i + kl.arange(0, BLOCK)
        acc += kl.load(x_ptr + start + offs, mask=offs < length, other=0.0)
    kl.store(out_ptr + pid, kl.sum(acc))


@pytest.mark.parametrize("lens", [[5, 0, 300, 17, 64, 1], [1000] + [3] * 40, [16] * 8])
def test_divergent_loop_trip_counts(lens):
    lens_t = torch.tensor(lens, dtype=torch.int32)
    starts = torch.cumsum(lens_t, 0, dtype=torch.int32) - lens_t
    x = torch.randn(int(lens_t.sum()) + 1)
    out = torch.empty(len(lens))
    ragged_sum_kernel[(len(lens),)](x, starts, lens_t, out, BLOCK=16)
    want = torch.stack([x[s:s + n].sum() for s, n in zip(starts.tolist(), lens)])
    torch.testing.assert_close(out, want)


@kf.jit
def gated_ragged_sum_kernel(x_ptr, lens_ptr, stops_ptr, out_ptr, WIDTH: kl.constexpr, BLOCK: kl.constexpr):
    """Sums x[pid, :len] in BLOCK chunks for the programs with an even pid, stopping (and
    returning without a store) before the chunk that starts at or past `stop`."""
    pid = kl.program_id(0)
    length = kl.load(lens_ptr + pid)
    stop = kl.load(stops_ptr + pid)
    acc = kl.zeros((BLOCK,), dtype=kl.float32)
    if pid % 2 == 0:
        for i in range(0, length, BLOCK):
            if i >= stop:
                return
            offs = i + kl.arange(0, BLOCK)
            acc += kl.load(x_ptr + pid * WIDTH + offs, mask=offs < length, other=0.0)
    kl.store(out_ptr + pid, kl.sum(acc))


@given(lens=st.lists(st.integers(0, 40), min_size=40, max_size=40),
       stops=st.lists(st.sampled_from([0, 16, 100]), min_size=40, max_size=40))
def test_a_compacted_tail_runs_its_shared_steps_unmasked(lens, stops):
    """Most programs run no chunk, so the tail is compacted to the rest, which all run its
    first step (and some more): that step takes the unmasked path, whose results must
    match, also under an enclosing divergent `if` and with programs returning."""
    lens = [n if p >= 24 else 0 for p, n in enumerate(lens)]
    source = gated_ragged_sum_kernel.source("cpu", x_ptr="*fp32", lens_ptr="*i32", stops_ptr="*i32",
                                            out_ptr="*fp32", WIDTH=40, BLOCK=16)
    assert "every program the tail kept iterates" in source
    x = torch.randn(40, 40)
    out = torch.full((40,), -7.0)
    gated_ragged_sum_kernel[(40,)](x, torch.tensor(lens, dtype=torch.int32), torch.tensor(stops, dtype=torch.int32),
                                   out, WIDTH=40, BLOCK=16)
    for p, (n, stop) in enumerate(zip(lens, stops)):
        if p % 2 == 1 or n == 0:
            torch.testing.assert_close(out[p], x[p, :0].sum())
        elif stop < n:  # returns before storing
            assert out[p] == -7.0
        else:
            torch.testing.assert_close(out[p], x[p, :n].sum())


@kf.jit
def branchy_kernel(x_ptr, out_ptr, flag, BLOCK: kl.constexpr):
    pid = kl.program_id(0)
    offs = pid * BLOCK + kl.arange(0, BLOCK)
    x = kl.load(x_ptr + offs)
    s = kl.sum(x)
    if s > 0:
        y = x * 2.0
        scale = 1.0
    else:
        y = x - 1.0
        scale = -1.0
    if flag:
        y = y * scale
    kl.store(out_ptr + offs, y)


@pytest.mark.parametrize("flag", [0, 1])
def test_divergent_and_uniform_if(flag):
    x = torch.randn(6, 8)
    out = torch.empty_like(x)
    branchy_kernel[(6,)](x, out, flag, BLOCK=8)
    pos = x.sum(1, keepdim=True) > 0
    y = torch.where(pos, x * 2, x - 1)
    if flag:
        y = y * torch.where(pos, 1.0, -1.0)
    torch.testing.assert_close(out, y)


@kf.jit
def early_return_kernel(x_ptr, out_ptr, n, BLOCK: kl.constexpr):
    pid = kl.program_id(0)
    if pid * BLOCK >= n:
        return
    offs = pid * BLOCK + kl.arange(0, BLOCK)
    x = kl.load(x_ptr + offs)  # unmasked: only in-bounds programs get here
    kl.store(out_ptr + offs, x + 1.0)


def test_early_return_ends_programs():
    x = torch.randn(64)
    out = torch.zeros(64)
    early_return_kernel[(10,)](x, out, 64, BLOCK=16)  # programs 4..9 would read out of bounds
    torch.testing.assert_close(out, x + 1)


@kf.jit
def loop_return_kernel(x_ptr, out_ptr, limits_ptr, BLOCK: kl.constexpr):
    pid = kl.program_id(0)
    limit = kl.load(limits_ptr + pid)
    total = 0.0
    for i in range(0, 10):
        if i >= limit:
            kl.store(out_ptr + pid, total)
            return
        total += kl.load(x_ptr + pid * 10 + i)
    kl.store(out_ptr + pid, -total)


def test_return_inside_loop():
    x = torch.randn(5, 10)
    limits = torch.tensor([0, 3, 10, 7, 12], dtype=torch.int32)
    out = torch.empty(5)
    loop_return_kernel[(5,)](x, out, limits, BLOCK=1)
    want = torch.stack([x[p, :min(int(l), 10)].sum() * (1 if l < 10 else -1) for p, l in enumerate(limits)])
    torch.testing.assert_close(out, want)


@kf.jit
def while_like_kernel(out_ptr, n_ptr):
    pid = kl.program_id(0)
    n = kl.load(n_ptr + pid)
    count = 0
    total = 0
    for i in range(0, n):
        if i % 3 == 0:
            count += 1
        else:
            total += i
    kl.store(out_ptr + 2 * pid, count)
    kl.store(out_ptr + 2 * pid + 1, total)


def test_if_inside_divergent_loop():
    ns = torch.tensor([0, 1, 5, 9, 2], dtype=torch.int32)
    out = torch.empty(10, dtype=torch.int32)
    while_like_kernel[(5,)](out, ns)
    want = []
    for n in ns.tolist():
        want += [sum(1 for i in range(n) if i % 3 == 0), sum(i for i in range(n) if i % 3)]
    assert out.tolist() == want


# ------------------------------------------------------------------ scatter and atomics


@kf.jit
def counter_kernel(counter_ptr, slots_ptr):
    slot = kl.atomic_add(counter_ptr, 1)
    kl.store(slots_ptr + kl.program_id(0), slot)


def test_atomic_counter_hands_out_distinct_slots():
    counter = torch.zeros(1, dtype=torch.int32)
    slots = torch.empty(50, dtype=torch.int32)
    counter_kernel[(50,)](counter, slots)
    assert counter.item() == 50
    assert sorted(slots.tolist()) == list(range(50))


@kf.jit
def histogram_kernel(x_ptr, hist_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    m = offs < n
    bins = kl.load(x_ptr + offs, mask=m, other=0)
    kl.atomic_add(hist_ptr + bins, 1.0, mask=m)


def test_atomic_add_collisions():
    x = torch.randint(0, 5, (1000,), dtype=torch.int32)
    hist = torch.zeros(5)
    histogram_kernel[(8,)](x, hist, 1000, BLOCK=128)
    assert torch.equal(hist, torch.bincount(x, minlength=5).float())


@kf.jit
def scatter_kernel(idx_ptr, val_ptr, out_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    m = offs < n
    idx = kl.load(idx_ptr + offs, mask=m, other=0)
    kl.store(out_ptr + idx, kl.load(val_ptr + offs, mask=m, other=0.0), mask=m & (idx >= 0))


def test_scatter_skips_masked_lanes_and_tolerates_duplicates():
    idx = torch.tensor([3, -1, 0, 3, 5, -1, 1], dtype=torch.int32)
    vals = torch.arange(7, dtype=torch.float32)
    out = torch.full((6,), -9.0)
    scatter_kernel[(2,)](idx, vals, out, 7, BLOCK=4)
    assert out[0] == 2 and out[1] == 6 and out[5] == 4 and out[3] in (0, 3)
    assert out[2] == -9 and out[4] == -9


# ------------------------------------------------------------------ sanitizer


@kf.jit
def oob_kernel(x_ptr, out_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    x = kl.load(x_ptr + offs, mask=offs < n + 3)
    kl.store(out_ptr + offs, x, mask=offs < n)


def test_sanitizer_reports_the_offending_line(monkeypatch):
    monkeypatch.setenv("KF_SANITIZE", "1")
    x, out = torch.randn(10), torch.empty(10)
    with pytest.raises(kf.KernelFault) as info:
        oob_kernel[(1,)](x, out, 10, BLOCK=16)
    fault = info.value
    assert fault.offset == 10 and fault.size == 10
    assert "kl.load(x_ptr + offs, mask=offs < n + 3)" in fault.source
    assert fault.kernel == "oob_kernel"


def test_sanitizer_ignores_masked_off_lanes(monkeypatch):
    monkeypatch.setenv("KF_SANITIZE", "1")
    x, y, out = torch.randn(10), torch.randn(10), torch.empty(10)
    add_kernel[(1,)](x, y, out, 10, BLOCK=16)
    torch.testing.assert_close(out, x + y)
    early_return_kernel[(10,)](torch.randn(64), torch.zeros(64), 64, BLOCK=16)


@kf.jit
def row_copy_kernel(x_ptr, out_ptr, N: kl.constexpr):
    row = kl.program_id(0)
    col_block = kl.program_id(1)
    cols = kl.arange(0, N)
    x = kl.load(x_ptr + row * N + cols)  # the same row for every col_block
    kl.store(out_ptr + (row * kl.num_programs(1) + col_block) * N + cols, x * (col_block + 1).to(kl.float32))


@pytest.mark.parametrize("grid", [(1, 4), (3, 1), (3, 4), (1, 1)])
def test_tiles_shared_across_a_grid_axis(grid):
    g0, g1 = grid
    x = torch.randn(g0, 8)
    out = torch.empty(g0, g1, 8)
    row_copy_kernel[grid](x, out, N=8)
    torch.testing.assert_close(out, x[:, None, :] * torch.arange(1, g1 + 1).float()[None, :, None])


def test_store_fusion_in_place_and_with_tails():
    src = add_kernel.source("cpu", x_ptr="*fp32", y_ptr="*fp32", out_ptr="*fp32", n="i32", BLOCK=64)
    assert "out=target" in src
    x, y = torch.randn(256), torch.randn(256)
    want = x + y
    add_kernel[(4,)](x, y, x, 256, BLOCK=64)  # out aliases x exactly
    torch.testing.assert_close(x, want)
    x, y, out = torch.randn(200), torch.randn(200), torch.zeros(256)
    add_kernel[(4,)](x, y, out, 200, BLOCK=64)  # tail: the fused path must not apply
    torch.testing.assert_close(out[:200], x + y)
    assert not out[200:].any()


@kf.jit
def tile_kernel(x_ptr, out_ptr, M, N, stride, BM: kl.constexpr, BN: kl.constexpr):
    rm = kl.arange(0, BM)
    rn = kl.arange(0, BN)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    x = kl.load(x_ptr + rm[:, None] * stride + rn[None, :], mask=mask, other=-1.0)
    kl.store(out_ptr + rm[:, None] * BN + rn[None, :], x * 2.0)


@pytest.mark.parametrize("M,N", [(3, 5), (8, 8), (0, 4), (8, 1)])
def test_two_axis_trimmed_tile_is_padded_with_other(M, N):
    x = torch.randn(8, 10)
    out = torch.empty(8, 8)
    tile_kernel[(1,)](x, out, M, N, 10, BM=8, BN=8)
    want = torch.full((8, 8), -1.0)
    want[:M, :N] = x[:M, :N]
    torch.testing.assert_close(out, want * 2)


@pytest.mark.slow
def test_compiled_regions_match_eager(monkeypatch):
    from kernelforge.backends.cpu import CPUBackend
    from kernelforge.backends.cpu.codegen import generate

    x = torch.randn(9, 100)
    kernel = softmax_kernel.specialize((torch.empty(9, 100), x, 100, 100, 100), {"BLOCK": 128})
    backend = CPUBackend()
    source = generate(kernel, peepholes=False)  # the op-by-op chain, not one torch.softmax
    assert "def _compute" in source
    monkeypatch.setenv("KF_CPU_COMPILE", "1")
    launch = backend.load(source, "softmax_compiled_test")
    out = torch.empty(9, 100)
    launch((9, 1, 1), [out, x, 100, 100, 100])
    torch.testing.assert_close(out, torch.softmax(x, dim=-1))
    launch((4, 1, 1), [out, x, 100, 100, 100])  # another grid size reuses the dynamic graph
    torch.testing.assert_close(out[:4], torch.softmax(x[:4], dim=-1))


@kf.jit
def accumulate_kernel(a_ptr, b_ptr, out_ptr, prev_ptr, steps, N: kl.constexpr):
    r = kl.arange(0, N)
    tile = r[:, None] * N + r[None, :]
    acc = kl.zeros((N, N), dtype=kl.float32)
    prev = acc
    for _ in range(0, steps):
        prev = acc  # must keep the value from before the in-place update
        acc = kl.dot(kl.load(a_ptr + tile), kl.load(b_ptr + tile), acc)
    kl.store(out_ptr + kl.program_id(0) * N * N + tile, acc)
    kl.store(prev_ptr + kl.program_id(0) * N * N + tile, prev)


def test_accumulator_shared_with_another_variable_is_not_updated_in_place():
    a, b = torch.randn(16, 16), torch.randn(16, 16)
    out, prev = torch.empty(2, 16, 16), torch.empty(2, 16, 16)
    accumulate_kernel[(2,)](a, b, out, prev, 3, N=16)
    torch.testing.assert_close(out, (3 * (a @ b)).expand(2, 16, 16), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(prev, (2 * (a @ b)).expand(2, 16, 16), rtol=1e-4, atol=1e-4)
    accumulate_kernel[(2,)](a, b, out, prev, 1, N=16)  # the zero constant must be intact
    torch.testing.assert_close(prev, torch.zeros(2, 16, 16))


@kf.jit
def embedding_kernel(table_ptr, ids_ptr, lens_ptr, out_ptr, n_ids, dim, stride,
                     BLOCK_T: kl.constexpr, BLOCK_D: kl.constexpr):
    offs_t = kl.program_id(0) * BLOCK_T + kl.arange(0, BLOCK_T)
    cols = kl.arange(0, BLOCK_D)
    ids = kl.load(ids_ptr + offs_t, mask=offs_t < n_ids, other=-1)
    lens = kl.load(lens_ptr + offs_t, mask=offs_t < n_ids, other=0)
    mask = (ids >= 0)[:, None] & (cols < dim)[None, :] & (cols[None, :] < lens[:, None])
    rows = kl.load(table_ptr + ids[:, None] * stride + cols[None, :], mask=mask, other=-7.0)
    kl.store(out_ptr + offs_t[:, None] * BLOCK_D + cols[None, :], rows, mask=(offs_t < n_ids)[:, None])


@pytest.mark.parametrize("dim", [12, 16])  # 16: rows overlap the next; the last one runs off the end
@pytest.mark.parametrize("last_row", [False, True])
def test_row_gather_with_data_dependent_rows_and_lengths(last_row, dim):
    vocab, stride = 50, 12
    table = torch.randn(vocab, stride)
    ids = torch.tensor([3, -1, 49 if last_row else 7, 0, 12], dtype=torch.int32)
    lens = torch.tensor([12, 5, 12 if dim == 12 else 10, 0, 16], dtype=torch.int32)
    out = torch.empty(5, 16)
    src = embedding_kernel.source("cpu", table_ptr="*fp32", ids_ptr="*i32", lens_ptr="*i32", out_ptr="*fp32",
                                  BLOCK_T=4, BLOCK_D=16)
    assert "rows.load_rows" in src
    embedding_kernel[(2,)](table, ids, lens, out, 5, dim, stride, BLOCK_T=4, BLOCK_D=16)
    want = torch.full((5, 16), -7.0)
    flat = table.view(-1)
    for t, (i, n) in enumerate(zip(ids.tolist(), lens.tolist())):
        if i >= 0:
            k = min(n, dim)
            want[t, :k] = flat[i * stride:i * stride + k]
    torch.testing.assert_close(out, want)


def test_reused_temporaries_are_private_to_each_thread():
    from concurrent.futures import ThreadPoolExecutor

    def run(seed: int) -> bool:
        x = torch.randn(64, 100, generator=torch.Generator().manual_seed(seed))
        out = torch.empty_like(x)
        for _ in range(20):
            softmax_kernel[(64,)](out, x, 100, 100, 100, BLOCK=128)
            if not torch.allclose(out, torch.softmax(x, dim=-1), atol=1e-6):
                return False
        return True

    src = softmax_kernel.source("cpu", out_ptr="*fp32", in_ptr="*fp32", BLOCK=128)
    assert "rt.scratch(" in src
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(8)))


# ------------------------------------------------------------------ row scatters


@kf.jit
def cache_rows_kernel(src_ptr, dst_ptr, slots_ptr, row_size, BLOCK: kl.constexpr):
    token = kl.program_id(0)
    slot = kl.load(slots_ptr + token).to(kl.int64)
    if slot >= 0:
        for start in range(0, row_size, BLOCK):
            cols = start + kl.arange(0, BLOCK)
            mask = cols < row_size
            x = kl.load(src_ptr + token * row_size + cols, mask=mask)
            kl.store(dst_ptr + slot * row_size + cols, x, mask=mask)


def _cache_rows(slots: list[int], row_size: int, block: int, n_slots: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.randn(len(slots), row_size)
    dst = torch.full((n_slots, row_size), -1.0)
    cache_rows_kernel[(len(slots),)](src, dst, torch.tensor(slots, dtype=torch.int64), row_size, BLOCK=block)
    return src, dst


def test_row_scatter_is_generated_for_data_dependent_row_starts():
    src = cache_rows_kernel.source("cpu", src_ptr="*fp32", dst_ptr="*fp32", slots_ptr="*i64", BLOCK=16)
    assert "rows.store_rows" in src and "rt.scatter" not in src


@pytest.mark.parametrize("row_size, block", [(16, 16), (12, 16), (40, 16)])  # aligned, trimmed, unaligned tail
@pytest.mark.parametrize("slots", [[3, 0, 7, 5], [2, -1, 6, -1], [-1, -1, -1, -1]])
def test_row_scatter_writes_only_the_rows_of_active_programs(slots, row_size, block):
    src, dst = _cache_rows(slots, row_size, block)
    want = torch.full((8, row_size), -1.0)
    for t, s in enumerate(slots):
        if s >= 0:
            want[s] = src[t]
    torch.testing.assert_close(dst, want)


def test_row_scatter_with_duplicate_rows_writes_one_of_them_whole():
    src, dst = _cache_rows([4, 4, 1], 12, 16)
    assert any(torch.equal(dst[4], src[t]) for t in (0, 1))
    torch.testing.assert_close(dst[1], src[2])
    assert (dst[[0, 2, 3, 5, 6, 7]] == -1.0).all()


def test_row_scatter_with_an_empty_row_writes_nothing():
    src, dst = _cache_rows([1, 2], 0, 16)
    assert (dst == -1.0).all()


@kf.jit
def ragged_rows_kernel(src_ptr, dst_ptr, rows_ptr, lens_ptr, BLOCK_T: kl.constexpr, BLOCK_D: kl.constexpr):
    t = kl.arange(0, BLOCK_T)
    cols = kl.arange(0, BLOCK_D)
    row = kl.load(rows_ptr + t)
    n = kl.load(lens_ptr + t)
    x = kl.load(src_ptr + t[:, None] * BLOCK_D + cols[None, :])
    kl.store(dst_ptr + row[:, None] * BLOCK_D + cols[None, :], x, mask=cols[None, :] < n[:, None])


def test_row_scatter_with_per_row_lengths_falls_back_to_lane_masks():
    src = torch.randn(4, 8)
    dst = torch.zeros(6, 8)
    rows, lens = torch.tensor([5, 0, 2, 3], dtype=torch.int32), torch.tensor([8, 3, 0, 5], dtype=torch.int32)
    source = ragged_rows_kernel.source("cpu", src_ptr="*fp32", dst_ptr="*fp32", rows_ptr="*i32", lens_ptr="*i32",
                                       BLOCK_T=4, BLOCK_D=8)
    assert "rows.store_rows" in source
    ragged_rows_kernel[(1,)](src, dst, rows, lens, BLOCK_T=4, BLOCK_D=8)
    want = torch.zeros(6, 8)
    for t, (r, n) in enumerate(zip(rows.tolist(), lens.tolist())):
        want[r, :n] = src[t, :n]
    torch.testing.assert_close(dst, want)


def test_row_scatter_of_rows_past_the_end_is_reported():
    with pytest.raises(kf.KernelFault, match="out-of-bounds memory access"):
        _cache_rows([0, 9], 16, 16)


# ------------------------------------------------------------------ in-place masking of temporaries


@kf.jit
def masked_tile_kernel(x_ptr, valid_ptr, out_ptr, raw_ptr, N: kl.constexpr, D: kl.constexpr):
    rows = kl.arange(0, N)
    cols = kl.arange(0, D)
    ok = kl.load(valid_ptr + kl.program_id(0) * N + rows) != 0
    x = kl.load(x_ptr + kl.program_id(0) * N * D + rows[:, None] * D + cols[None, :]) * 2.0
    kept = kl.where(ok[:, None], x, -1.0)
    kl.store(out_ptr + kl.program_id(0) * N * D + rows[:, None] * D + cols[None, :], kept)
    y = kl.load(x_ptr + kl.program_id(0) * N * D + rows[:, None] * D + cols[None, :]) + 1.0
    kl.store(raw_ptr + kl.program_id(0) * N * D + rows[:, None] * D + cols[None, :], kl.where(ok[:, None], y, 0.0) + y)


@pytest.mark.parametrize("valid", ["all", "some", "none"])
def test_where_on_a_dead_temporary_masks_it_in_place(valid):
    x = torch.randn(3, 4, 8)
    ok = {"all": torch.ones(3, 4), "some": torch.tensor([[1, 0, 1, 1]] * 3), "none": torch.zeros(3, 4)}[valid]
    ok = ok.to(torch.int32)
    out, raw = torch.empty(3, 4, 8), torch.empty(3, 4, 8)
    src = masked_tile_kernel.source("cpu", x_ptr="*fp32", valid_ptr="*i32", out_ptr="*fp32", raw_ptr="*fp32", N=4, D=8)
    assert src.count("rt.keep_where(") == 1  # `y` is read twice: a plain where
    masked_tile_kernel[(3,)](x, ok, out, raw, N=4, D=8)
    keep = ok.bool()[..., None]
    torch.testing.assert_close(out, torch.where(keep, x * 2.0, -1.0))
    torch.testing.assert_close(raw, torch.where(keep, x + 1.0, 0.0) + (x + 1.0))


def test_keep_where_tests_the_condition_without_its_broadcast():
    from kernelforge.backends.cpu import runtime as rt

    x = torch.arange(6.0).view(2, 3)
    assert rt.keep_where(x, torch.ones(2, 1, dtype=torch.bool).expand(2, 3), 0.0) is x
    cond = torch.tensor([[True], [False]]).expand(2, 3)
    assert rt.unbroadcast(cond).shape == (2, 1)
    torch.testing.assert_close(rt.keep_where(x, cond, -1.0), torch.tensor([[0.0, 1.0, 2.0], [-1.0, -1.0, -1.0]]))


@kf.jit
def two_index_rows_kernel(table_ptr, a_ptr, b_ptr, out_ptr, n, stride_a, stride_b, BLOCK_T: kl.constexpr,
                          D: kl.constexpr):
    t = kl.arange(0, BLOCK_T)
    cols = kl.arange(0, D)
    a = kl.load(a_ptr + t)
    b = kl.load(b_ptr + t)
    ok = t < n
    rows = table_ptr + a[:, None] * stride_a
    rows = rows + b[:, None] * stride_b  # a pointer summing two loaded terms: read as one variable
    x = kl.load(rows + cols[None, :], mask=kl.broadcast_to(ok[:, None], (BLOCK_T, D)), other=-1.0)
    kl.store(out_ptr + t[:, None] * D + cols[None, :], x)


def test_row_gather_through_a_pointer_with_several_data_dependent_terms():
    table = torch.randn(6, 4, 8)
    a, b = torch.tensor([5, 0, 2, 3], dtype=torch.int32), torch.tensor([1, 3, 0, 2], dtype=torch.int32)
    out = torch.empty(4, 8)
    src = two_index_rows_kernel.source("cpu", table_ptr="*fp32", a_ptr="*i32", b_ptr="*i32", out_ptr="*fp32",
                                       BLOCK_T=4, D=8)
    assert "rows.load_rows" in src and "rt.gather" not in src
    two_index_rows_kernel[(1,)](table, a, b, out, 3, 32, 8, BLOCK_T=4, D=8)
    want = table[a.long(), b.long()]
    want[3] = -1.0
    torch.testing.assert_close(out, want)


@kf.jit
def gather_kernel(x_ptr, idx_ptr, out_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    kl.store(out_ptr + offs, kl.load(x_ptr + kl.load(idx_ptr + offs)))


def test_an_unsanitized_out_of_bounds_gather_is_a_kernel_fault(monkeypatch):
    monkeypatch.delenv("KF_SANITIZE", raising=False)
    x, out = torch.randn(8), torch.empty(4)
    with pytest.raises(kf.KernelFault, match="in kernel 'gather_kernel'.*KF_SANITIZE=1"):
        gather_kernel[(1,)](x, torch.tensor([0, 1, 2, 100], dtype=torch.int32), out, BLOCK=4)
