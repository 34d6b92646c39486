"""The DSL's semantics, end to end: each kernel of `semantic_cases` against torch.

Every test runs on each backend that executes on CPU tensors (`backend` fixture), with
hypothesis drawing sizes (ragged, block boundaries, n=1), dtypes and data.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import kernelforge as kf
import kernelforge.language as kl
from kernelforge import ir
import semantic_cases as sc

FLOATS = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}
KL_DTYPES = {
    torch.bool: kl.int1, torch.int8: kl.int8, torch.int16: kl.int16, torch.int32: kl.int32,
    torch.int64: kl.int64, torch.uint8: kl.uint8, torch.float16: kl.float16,
    torch.bfloat16: kl.bfloat16, torch.float32: kl.float32,
}

seeds = st.integers(0, 2**31 - 1)


def rand(seed: int, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = torch.float32, scale: float = 1.0):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol * scale, rtol=rtol * scale)


@given(n=st.integers(1, 300), block=st.sampled_from([16, 32, 64]), dtype=st.sampled_from(FLOATS), seed=seeds)
@example(n=1, block=16, dtype=torch.float32, seed=0)
@example(n=64, block=64, dtype=torch.float16, seed=1)
@example(n=65, block=64, dtype=torch.bfloat16, seed=2)
def test_elementwise_masked(backend, n, block, dtype, seed):
    x, y = rand(seed, n, dtype=dtype), rand(seed + 1, n, dtype=dtype)
    out = torch.full((n + 5,), 7.0, dtype=dtype)
    with kf.backend(backend):
        sc.add_kernel[(kf.cdiv(n, block),)](x, y, out, n, BLOCK=block)
    close(out[:n], x + y, dtype)
    assert (out[n:] == 7).all(), "masked lanes must not be written"


@given(n=st.integers(1, 100), dtype=st.sampled_from(FLOATS), seed=seeds)
def test_weak_scalars_keep_the_block_dtype(backend, n, dtype, seed):
    x = rand(seed, n, dtype=dtype)
    out = torch.empty(n, dtype=dtype)
    with kf.backend(backend):
        sc.scale_shift_kernel[(kf.cdiv(n, 64),)](x, out, n, BLOCK=64)
    close(out, x * 2.0 - 1, dtype)


@given(m=st.integers(1, 40), n=st.integers(1, 40), seed=seeds)
@example(m=1, n=1, seed=0)
@example(m=16, n=17, seed=1)
def test_2d_blocks_and_broadcasting(backend, m, n, seed):
    x, y, bias = rand(seed, m), rand(seed + 1, n), rand(seed + 2, n)
    out = torch.empty(m, n)
    with kf.backend(backend):
        sc.outer_kernel[(kf.cdiv(m, 16), kf.cdiv(n, 16))](x, y, bias, out, m, n, BM=16, BN=16)
    close(out, x[:, None] * y[None, :] + bias)


@given(m=st.integers(1, 16), n=st.integers(1, 16), op=st.sampled_from(["sum", "max", "min", "argmax"]),
       axis=st.sampled_from([0, 1]), seed=seeds)
def test_reductions(backend, m, n, op, axis, seed):
    x = rand(seed, m, n)
    out_dtype = torch.int32 if op == "argmax" else torch.float32
    out = torch.zeros(16, dtype=out_dtype)
    with kf.backend(backend):
        sc.reduce_kernel[(1,)](x, out, m, n, OP=op, AXIS=axis, BM=16, BN=16)
    expected = {"sum": lambda: x.sum(axis), "max": lambda: x.amax(axis), "min": lambda: x.amin(axis),
                "argmax": lambda: x.argmax(axis).to(torch.int32)}[op]()
    got = out[: (n if axis == 0 else m)]
    if op == "argmax":
        assert torch.equal(got, expected)
    else:
        close(got, expected)


@given(m=st.sampled_from([1, 2, 8]), n=st.sampled_from([4, 16]), seed=seeds)
def test_small_integer_sums_accumulate_in_int32(backend, m, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (m, n), generator=g, dtype=torch.int32).to(torch.int8)
    out = torch.empty(m, dtype=torch.int32)
    with kf.backend(backend):
        sc.int_sum_kernel[(1,)](x, out, M=m, N=n)
    assert torch.equal(out, x.to(torch.int32).sum(1, dtype=torch.int32))


@given(m=st.sampled_from([1, 2, 4]), n=st.sampled_from([2, 8]), seed=seeds)
def test_trans_reshape_broadcast_to(backend, m, n, seed):
    x = rand(seed, m, n)
    t, flat, bcast = torch.empty(n, m), torch.empty(m * n), torch.empty(m, n)
    with kf.backend(backend):
        sc.shape_ops_kernel[(1,)](x, t, flat, bcast, M=m, N=n)
    assert torch.equal(t, x.t()) and torch.equal(flat, x.reshape(-1))
    assert torch.equal(bcast, x[:1].expand(m, n))


@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 50),
       dtype=st.sampled_from([torch.float32, torch.float16]), seed=seeds)
def test_dot_with_accumulator(backend, m, n, k, dtype, seed):
    a, b = rand(seed, m, k, dtype=dtype), rand(seed + 1, k, n, dtype=dtype)
    c = torch.empty(m, n)
    with kf.backend(backend):
        sc.matmul_kernel[(kf.cdiv(m, 16), kf.cdiv(n, 16))](a, b, c, m, n, k, BM=16, BN=16, BK=16)
    torch.testing.assert_close(c, a.float() @ b.float(), atol=1e-3 * math.sqrt(k), rtol=1e-3)


@given(m=st.integers(1, 8), n=st.integers(1, 8), k=st.integers(1, 8), seed=seeds)
def test_dot_with_blocks_below_16_on_cpu(m, n, k, seed):
    """Triton needs dot dimensions >= 16; the cpu backend takes any (decode-sized tiles)."""
    a, b = rand(seed, m, k), rand(seed + 1, k, n)
    c = torch.empty(m, n)
    with kf.backend("cpu"):
        sc.matmul_kernel[(kf.cdiv(m, 4), kf.cdiv(n, 8))](a, b, c, m, n, k, BM=4, BN=8, BK=2)
    torch.testing.assert_close(c, a @ b, atol=1e-4, rtol=1e-4)


@given(counts=st.lists(st.integers(0, 12), min_size=1, max_size=8), step=st.sampled_from([1, 2, 3]), seed=seeds)
def test_for_loop_with_per_program_trip_counts(backend, counts, step, seed):
    g = torch.Generator().manual_seed(seed)
    x = rand(seed, 64)
    starts = torch.randint(0, 64 - 12 * step, (len(counts),), generator=g, dtype=torch.int32)
    cnt = torch.tensor(counts, dtype=torch.int32)
    out = torch.empty(len(counts))
    with kf.backend(backend):
        sc.segment_sum_kernel[(len(counts),)](x, starts, cnt, out, STEP=step)
    expected = torch.stack([x[int(s): int(s) + c * step: step].sum() for s, c in zip(starts, counts)])
    close(out, expected)


@given(programs=st.integers(1, 4), chunks=st.integers(0, 5), seed=seeds)
def test_loop_carried_pointer_blocks(backend, programs, chunks, seed):
    x = rand(seed, programs, chunks, 16)
    out = torch.full((programs, 16), -1.0)
    with kf.backend(backend):
        sc.pointer_walk_kernel[(programs,)](x, out, chunks, BLOCK=16)
    close(out, x.sum(1))


@given(n=st.integers(1, 200), seed=seeds)
def test_per_program_if_else_and_early_return(backend, n, seed):
    x = rand(seed, n)
    out = torch.full((n,), -100.0)
    with kf.backend(backend):
        sc.branch_kernel[(kf.cdiv(n, 16),)](x, out, n, BLOCK=16)
    pid = torch.arange(n) // 16
    expected = torch.where(pid % 2 == 1, x * 2, x + 1) + pid
    expected = torch.where(pid % 3 == 0, torch.full_like(x, -100.0), expected)
    close(out, expected)


@given(limits=st.lists(st.integers(0, 12), min_size=1, max_size=6), n_iter=st.integers(0, 10), seed=seeds)
def test_early_return_inside_a_loop(backend, limits, n_iter, seed):
    x = rand(seed, 10)
    out = torch.full((len(limits),), -100.0)
    with kf.backend(backend):
        sc.early_exit_loop_kernel[(len(limits),)](x, torch.tensor(limits, dtype=torch.int32), out, n_iter)
    expected = [x[: min(lim, n_iter)].sum() if min(lim, n_iter) > 0 else torch.tensor(-100.0) for lim in limits]
    close(out, torch.stack(expected))


@given(n=st.integers(1, 60), taps=st.integers(1, 4), seed=seeds)
def test_static_range_unrolls(backend, n, taps, seed):
    x = rand(seed, n)
    out = torch.empty(n)
    with kf.backend(backend):
        sc.static_range_kernel[(kf.cdiv(n, 16),)](x, out, n, BLOCK=16, TAPS=taps)
    padded = torch.cat([x, torch.zeros(taps)])
    expected = sum((t + 1) * padded[t: t + n] for t in range(taps))
    close(out, expected)


@given(n=st.integers(1, 60), scale=st.floats(-2, 2), hi=st.sampled_from([0, 1]), seed=seeds)
def test_inlined_helpers(backend, n, scale, hi, seed):
    x = rand(seed, n)
    out, flags = torch.empty(n), torch.empty(n, dtype=torch.int32)
    with kf.backend(backend):
        sc.helper_kernel[(kf.cdiv(n, 16),)](x, out, flags, n, scale, BLOCK=16, HI=hi)
    y = x * torch.tensor(scale, dtype=torch.float32) + 1.0
    expected = y.clamp(-1.0, float(hi)) if hi > 0 else y
    close(out, expected)
    assert torch.equal(flags, (expected != y).to(torch.int32))


@given(rows=st.integers(1, 5), cols=st.integers(1, 9), repeat=st.sampled_from([1, 3]), seed=seeds)
def test_nested_loops_through_a_helper(backend, rows, cols, repeat, seed):
    x = rand(seed, rows, cols)
    best, arg = torch.empty(rows), torch.empty(rows, dtype=torch.int32)
    with kf.backend(backend):
        sc.nested_loop_kernel[(rows,)](x, best, arg, cols, REPEAT=repeat)
    close(best, x.amax(1))
    assert torch.equal(arg, x.argmax(1).to(torch.int32))


@given(n=st.integers(1, 100), slots=st.integers(1, 5), dtype=st.sampled_from([torch.float32, torch.int32]),
       seed=seeds)
def test_atomic_add_with_colliding_addresses(backend, n, slots, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, slots, (n,), generator=g, dtype=torch.int32)
    val = torch.randint(-5, 6, (n,), generator=g).to(dtype) if dtype == torch.int32 else rand(seed, n)
    out = torch.zeros(slots, dtype=dtype)
    with kf.backend(backend):
        sc.atomic_add_kernel[(kf.cdiv(n, 16),)](idx, val, out, n, BLOCK=16)
    expected = torch.zeros(slots, dtype=dtype).index_add_(0, idx.long(), val)
    if dtype == torch.int32:
        assert torch.equal(out, expected)
    else:
        close(out, expected, scale=10)


CAST_DTYPES = [torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
               torch.float16, torch.bfloat16, torch.float32]


@pytest.mark.parametrize("src", CAST_DTYPES, ids=str)
@pytest.mark.parametrize("dst", CAST_DTYPES, ids=str)
@settings(max_examples=3)
@given(n=st.integers(1, 40), seed=seeds)
def test_casts_between_dtypes(backend, src, dst, n, seed):
    g = torch.Generator().manual_seed(seed)
    # Values every destination represents, so that no conversion is undefined behaviour.
    low = 0 if torch.uint8 in (src, dst) else -100
    if src == torch.bool:
        x = torch.rand(n, generator=g) > 0.5
    elif src.is_floating_point:
        x = (torch.rand(n, generator=g) * (100 - low) + low).to(src)
    else:
        x = torch.randint(low, 101, (n,), generator=g).to(src)
    out = torch.empty(n, dtype=dst)
    with kf.backend(backend):
        sc.cast_kernel[(kf.cdiv(n, 16),)](x, out, n, DST=KL_DTYPES[dst], BLOCK=16)
    assert torch.equal(out, x.to(dst)), f"{src} -> {dst}: {x} -> {out}"


@given(n=st.integers(1, 60), seed=seeds)
def test_where_minimum_maximum(backend, n, seed):
    x, y = rand(seed, n), rand(seed + 1, n)
    out = torch.empty(n)
    with kf.backend(backend):
        sc.select_kernel[(kf.cdiv(n, 16),)](x, y, out, n, BLOCK=16)
    close(out, torch.where(x > y, x.clamp(max=0.5), y.clamp(min=-0.5)))


MATH = {
    "exp": torch.exp, "exp2": torch.exp2, "log": torch.log, "log2": torch.log2, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "sigmoid": torch.sigmoid, "abs": torch.abs, "cos": torch.cos, "sin": torch.sin,
}


@given(fn=st.sampled_from(sorted(MATH)), dtype=st.sampled_from(FLOATS), n=st.integers(1, 40), seed=seeds)
def test_math_functions(backend, fn, dtype, n, seed):
    x = rand(seed, n) * 3
    if fn in ("log", "log2", "sqrt", "rsqrt"):
        x = x.abs() + 0.05
    x = x.to(dtype)
    out = torch.empty(n, dtype=dtype)
    with kf.backend(backend):
        sc.math_kernel[(kf.cdiv(n, 16),)](x, out, n, FN=fn, BLOCK=16)
    expected = MATH[fn](x.float()).to(dtype)
    close(out, expected, dtype, scale=4)


@given(n=st.integers(1, 40), dtype=st.sampled_from([torch.int32, torch.int64, torch.int8]), seed=seeds)
def test_integer_div_mod_truncate_toward_zero(backend, n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-100, 101, (n,), generator=g).to(dtype)
    b = torch.randint(1, 13, (n,), generator=g) * (torch.randint(0, 2, (n,), generator=g) * 2 - 1)
    b = b.to(dtype)
    q, r = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
    with kf.backend(backend):
        sc.divmod_kernel[(kf.cdiv(n, 16),)](a, b, q, r, n, BLOCK=16)
    assert torch.equal(q, torch.div(a, b, rounding_mode="trunc"))
    assert torch.equal(r, torch.fmod(a, b))


@given(n=st.integers(1, 40), seed=seeds)
def test_int_truediv_is_fp32(backend, n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-100, 101, (n,), generator=g, dtype=torch.int32)
    b = torch.randint(1, 13, (n,), generator=g, dtype=torch.int32)
    out = torch.empty(n)
    with kf.backend(backend):
        sc.int_truediv_kernel[(kf.cdiv(n, 16),)](a, b, out, n, BLOCK=16)
    close(out, a.float() / b.float())


@pytest.mark.parametrize("case", sc.CASES, ids=lambda c: c.name)
def test_every_case_specialises_to_valid_ir(case):
    kernel = case.fn.specialize(case.args, case.constexprs)
    ir.verify(kernel)
    assert [p.name for p in kernel.params] == list(case.fn.runtime_names)
