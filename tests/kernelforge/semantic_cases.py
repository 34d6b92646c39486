"""DSL kernels that exercise one language feature each, plus concrete example launches.

`test_semantics.py` runs these against torch with hypothesis-drawn inputs. `CASES` gives
each kernel one concrete launch (CPU example tensors, constexprs, grid) so tools such as
the Ascend check can specialise every kernel without running the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: kl.constexpr):
    pid = kl.program_id(0)
    offs = pid * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    x = kl.load(x_ptr + offs, mask=mask, other=0.0)
    y = kl.load(y_ptr + offs, mask=mask, other=0.0)
    kl.store(out_ptr + offs, x + y, mask=mask)


@kf.jit
def scale_shift_kernel(x_ptr, out_ptr, n, BLOCK: kl.constexpr):
    """Weak Python scalars keep the block's dtype: out = x * 2.0 - 1 (in x's dtype)."""
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    x = kl.load(x_ptr + offs, mask=mask)
    kl.store(out_ptr + offs, x * 2.0 - 1, mask=mask)


@kf.jit
def outer_kernel(x_ptr, y_ptr, bias_ptr, out_ptr, m, n, BM: kl.constexpr, BN: kl.constexpr):
    """out[i, j] = x[i] * y[j] + bias[j] over a 2-D grid of [BM, BN] tiles."""
    rows = kl.program_id(0) * BM + kl.arange(0, BM)
    cols = kl.program_id(1) * BN + kl.arange(0, BN)
    x = kl.load(x_ptr + rows, mask=rows < m, other=0.0)
    y = kl.load(y_ptr + cols, mask=cols < n, other=0.0)
    bias = kl.load(bias_ptr + cols, mask=cols < n, other=0.0)
    out = x[:, None] * y[None, :] + bias
    mask = (rows[:, None] < m) & (cols[None, :] < n)
    kl.store(out_ptr + rows[:, None] * n + cols[None, :], out, mask=mask)


@kf.jit
def reduce_kernel(x_ptr, out_ptr, m, n, OP: kl.constexpr, AXIS: kl.constexpr,
                  BM: kl.constexpr, BN: kl.constexpr):
    """One [BM, BN] block (masked to [m, n]) reduced with OP over AXIS."""
    rows = kl.arange(0, BM)[:, None]
    cols = kl.arange(0, BN)[None, :]
    mask = (rows < m) & (cols < n)
    if OP == "sum":
        x = kl.load(x_ptr + rows * n + cols, mask=mask, other=0.0)
        r = kl.sum(x, axis=AXIS)
    elif OP == "max":
        x = kl.load(x_ptr + rows * n + cols, mask=mask, other=float("-inf"))
        r = kl.max(x, axis=AXIS)
    elif OP == "min":
        x = kl.load(x_ptr + rows * n + cols, mask=mask, other=float("inf"))
        r = kl.min(x, axis=AXIS)
    else:
        x = kl.load(x_ptr + rows * n + cols, mask=mask, other=float("-inf"))
        r = kl.argmax(x, axis=AXIS)
    if AXIS == 0:
        idx = kl.arange(0, BN)
        kl.store(out_ptr + idx, r, mask=idx < n)
    else:
        idx = kl.arange(0, BM)
        kl.store(out_ptr + idx, r, mask=idx < m)


@kf.jit
def int_sum_kernel(x_ptr, out_ptr, M: kl.constexpr, N: kl.constexpr):
    """int8 rows summed with keep_dims (accumulates in int32), stored as an [M, 1] column."""
    rows = kl.arange(0, M)[:, None]
    x = kl.load(x_ptr + rows * N + kl.arange(0, N)[None, :])
    s = kl.sum(x, axis=1, keep_dims=True)
    kl.store(out_ptr + rows + kl.zeros((M, 1), dtype=kl.int32), s)


@kf.jit
def shape_ops_kernel(x_ptr, t_ptr, flat_ptr, bcast_ptr, M: kl.constexpr, N: kl.constexpr):
    """trans, reshape and broadcast_to of one [M, N] block."""
    rows = kl.arange(0, M)
    cols = kl.arange(0, N)
    x = kl.load(x_ptr + rows[:, None] * N + cols[None, :])
    kl.store(t_ptr + cols[:, None] * M + rows[None, :], kl.trans(x))
    kl.store(flat_ptr + kl.arange(0, M * N), kl.reshape(x, M * N))
    first_row = kl.load(x_ptr + cols)
    kl.store(bcast_ptr + rows[:, None] * N + cols[None, :], kl.broadcast_to(first_row[None, :], (M, N)))


@kf.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, m, n, k, BM: kl.constexpr, BN: kl.constexpr, BK: kl.constexpr):
    """C = A @ B with a K loop carrying an fp32 accumulator through kl.dot(a, b, acc)."""
    rows = kl.program_id(0) * BM + kl.arange(0, BM)
    cols = kl.program_id(1) * BN + kl.arange(0, BN)
    acc = kl.zeros((BM, BN), dtype=kl.float32)
    for k0 in range(0, k, BK):
        ks = k0 + kl.arange(0, BK)
        a = kl.load(a_ptr + rows[:, None] * k + ks[None, :],
                    mask=(rows[:, None] < m) & (ks[None, :] < k), other=0.0)
        b = kl.load(b_ptr + ks[:, None] * n + cols[None, :],
                    mask=(ks[:, None] < k) & (cols[None, :] < n), other=0.0)
        acc = kl.dot(a, b, acc)
    kl.store(c_ptr + rows[:, None] * n + cols[None, :], acc,
             mask=(rows[:, None] < m) & (cols[None, :] < n))


@kf.jit
def segment_sum_kernel(x_ptr, starts_ptr, counts_ptr, out_ptr, STEP: kl.constexpr):
    """Each program sums x[start], x[start + STEP], ... for its own trip count."""
    pid = kl.program_id(0)
    start = kl.load(starts_ptr + pid)
    count = kl.load(counts_ptr + pid)
    acc = 0.0
    for i in range(start, start + count * STEP, STEP):
        acc += kl.load(x_ptr + i)
    kl.store(out_ptr + pid, acc)


@kf.jit
def pointer_walk_kernel(x_ptr, out_ptr, n_chunks, BLOCK: kl.constexpr):
    """Sums n_chunks consecutive chunks of BLOCK by advancing a block of pointers in the loop."""
    ptrs = x_ptr + kl.program_id(0) * n_chunks * BLOCK + kl.arange(0, BLOCK)
    acc = kl.zeros((BLOCK,), dtype=kl.float32)
    for _ in range(n_chunks):
        acc += kl.load(ptrs)
        ptrs += BLOCK
    kl.store(out_ptr + kl.program_id(0) * BLOCK + kl.arange(0, BLOCK), acc)


@kf.jit
def branch_kernel(x_ptr, out_ptr, n, BLOCK: kl.constexpr):
    """Per-program control flow: programs with pid % 3 == 0 return early, odd ones
    double, the rest add one; all others also record their pid afterwards."""
    pid = kl.program_id(0)
    offs = pid * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    if pid % 3 == 0:
        return
    x = kl.load(x_ptr + offs, mask=mask)
    if pid % 2 == 1:
        y = x * 2
    else:
        y = x + 1
    kl.store(out_ptr + offs, y + pid, mask=mask)


@kf.jit
def early_exit_loop_kernel(x_ptr, limits_ptr, out_ptr, n_iter):
    """Accumulates x[i] for i < n_iter, but returns (storing nothing more) once i reaches
    the program's limit; the running sum is stored every iteration before that."""
    pid = kl.program_id(0)
    limit = kl.load(limits_ptr + pid)
    acc = 0.0
    for i in range(0, n_iter):
        if i == limit:
            return
        acc += kl.load(x_ptr + i)
        kl.store(out_ptr + pid, acc)


@kf.jit
def static_range_kernel(x_ptr, out_ptr, n, BLOCK: kl.constexpr, TAPS: kl.constexpr):
    """out[i] = sum_t (t + 1) * x[i + t] over the TAPS taps, unrolled at compile time."""
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    acc = kl.zeros((BLOCK,), dtype=kl.float32)
    for t in kl.static_range(TAPS):
        acc += (t + 1) * kl.load(x_ptr + offs + t, mask=offs + t < n, other=0.0)
    kl.store(out_ptr + offs, acc, mask=offs < n)


@kf.jit
def _clamp_pair(x, lo, hi: kl.constexpr):
    """Returns (clamped x, whether it was clamped), through returns on both arms."""
    if hi > 0:
        clamped = kl.minimum(kl.maximum(x, lo), hi)
        return clamped, clamped != x
    return x, x != x


@kf.jit
def _affine(x, scale, SHIFT: kl.constexpr):
    return x * scale + SHIFT


@kf.jit
def helper_kernel(x_ptr, out_ptr, flags_ptr, n, scale, BLOCK: kl.constexpr, HI: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    x = _affine(kl.load(x_ptr + offs, mask=mask), scale, 1.0)
    y, changed = _clamp_pair(x, -1.0, HI)
    kl.store(out_ptr + offs, y, mask=mask)
    kl.store(flags_ptr + offs, changed.to(kl.int32), mask=mask)


@kf.jit
def _running_max(x_ptr, start, n):
    """Max and first argmax of x[start:start+n] with a scalar loop and a one-armed if."""
    best = float("-inf")
    arg = -1
    for i in range(start, start + n):
        v = kl.load(x_ptr + i)
        if v > best:
            best = v
            arg = i
    return best, arg


@kf.jit
def nested_loop_kernel(x_ptr, best_ptr, arg_ptr, n_cols, REPEAT: kl.constexpr):
    """The helper's loop nested in an outer runtime loop: carried values cross two levels."""
    pid = kl.program_id(0)
    total = 0.0
    idx = 0
    for _ in range(REPEAT):
        best, arg = _running_max(x_ptr, pid * n_cols, n_cols)
        total += best
        idx = arg
    kl.store(best_ptr + pid, total / REPEAT)
    kl.store(arg_ptr + pid, idx - pid * n_cols)


@kf.jit
def atomic_add_kernel(idx_ptr, val_ptr, out_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    idx = kl.load(idx_ptr + offs, mask=mask, other=0)
    val = kl.load(val_ptr + offs, mask=mask, other=0)
    kl.atomic_add(out_ptr + idx, val, mask=mask)


@kf.jit
def cast_kernel(x_ptr, out_ptr, n, DST: kl.constexpr, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    kl.store(out_ptr + offs, kl.load(x_ptr + offs, mask=mask).to(DST), mask=mask)


@kf.jit
def select_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: kl.constexpr):
    """where / minimum / maximum with a block, a block and a scalar."""
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    x = kl.load(x_ptr + offs, mask=mask, other=0.0)
    y = kl.load(y_ptr + offs, mask=mask, other=0.0)
    r = kl.where(x > y, kl.minimum(x, 0.5), kl.maximum(y, -0.5))
    kl.store(out_ptr + offs, r, mask=mask)


@kf.jit
def math_kernel(x_ptr, out_ptr, n, FN: kl.constexpr, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    x = kl.load(x_ptr + offs, mask=mask, other=1.0)
    if FN == "exp":
        y = kl.exp(x)
    elif FN == "exp2":
        y = kl.exp2(x)
    elif FN == "log":
        y = kl.log(x)
    elif FN == "log2":
        y = kl.log2(x)
    elif FN == "sqrt":
        y = kl.sqrt(x)
    elif FN == "rsqrt":
        y = kl.rsqrt(x)
    elif FN == "sigmoid":
        y = kl.sigmoid(x)
    elif FN == "abs":
        y = kl.abs(x)
    elif FN == "cos":
        y = kl.cos(x)
    else:
        y = kl.sin(x)
    kl.store(out_ptr + offs, y, mask=mask)


@kf.jit
def divmod_kernel(a_ptr, b_ptr, q_ptr, r_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    a = kl.load(a_ptr + offs, mask=mask, other=0)
    b = kl.load(b_ptr + offs, mask=mask, other=1)
    kl.store(q_ptr + offs, a // b, mask=mask)
    kl.store(r_ptr + offs, a % b, mask=mask)


@kf.jit
def int_truediv_kernel(a_ptr, b_ptr, out_ptr, n, BLOCK: kl.constexpr):
    """int / int is fp32 division."""
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    mask = offs < n
    a = kl.load(a_ptr + offs, mask=mask, other=0)
    b = kl.load(b_ptr + offs, mask=mask, other=1)
    kl.store(out_ptr + offs, a / b, mask=mask)


@dataclass
class Case:
    """One concrete launch of a semantics kernel: `fn[grid](*args, **constexprs)`."""

    name: str
    fn: Any
    args: tuple
    constexprs: dict = field(default_factory=dict)
    grid: tuple = (1,)


def _f32(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _i32(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


CASES: list[Case] = [
    Case("add", add_kernel, (_f32(100), _f32(100), _f32(100), 100), {"BLOCK": 32}, (4,)),
    Case("scale_shift_fp16", scale_shift_kernel, (_f32(50).half(), _f32(50).half(), 50), {"BLOCK": 64}),
    Case("outer", outer_kernel, (_f32(20), _f32(30), _f32(30), _f32(20, 30), 20, 30),
         {"BM": 16, "BN": 16}, (2, 2)),
    *[Case(f"reduce_{op}_axis{axis}", reduce_kernel, (_f32(10, 12), _f32(16), 10, 12),
           {"OP": op, "AXIS": axis, "BM": 16, "BN": 16})
      for op in ("sum", "max", "min", "argmax") for axis in (0, 1)],
    Case("int_sum", int_sum_kernel, (torch.ones(4, 8, dtype=torch.int8), _i32([0] * 4)), {"M": 4, "N": 8}),
    Case("shape_ops", shape_ops_kernel, (_f32(4, 8), _f32(8, 4), _f32(32), _f32(4, 8)), {"M": 4, "N": 8}),
    Case("matmul", matmul_kernel, (_f32(20, 40), _f32(40, 24), _f32(20, 24), 20, 24, 40),
         {"BM": 16, "BN": 16, "BK": 16}, (2, 2)),
    Case("segment_sum", segment_sum_kernel, (_f32(64), _i32([0, 5, 9]), _i32([3, 0, 7]), _f32(3)),
         {"STEP": 2}, (3,)),
    Case("pointer_walk", pointer_walk_kernel, (_f32(2, 3, 16), _f32(2, 16), 3), {"BLOCK": 16}, (2,)),
    Case("branch", branch_kernel, (_f32(100), _f32(100), 100), {"BLOCK": 16}, (7,)),
    Case("early_exit_loop", early_exit_loop_kernel, (_f32(10), _i32([0, 3, 20]), _f32(3), 10), {}, (3,)),
    Case("static_range", static_range_kernel, (_f32(40), _f32(40), 40), {"BLOCK": 16, "TAPS": 3}, (3,)),
    Case("helper", helper_kernel, (_f32(40), _f32(40), _i32([0] * 40), 40, 0.5),
         {"BLOCK": 16, "HI": 1}, (3,)),
    Case("nested_loop", nested_loop_kernel, (_f32(3, 7), _f32(3), _i32([0] * 3), 7), {"REPEAT": 2}, (3,)),
    Case("atomic_add", atomic_add_kernel, (_i32([0, 1, 1, 2] * 10), _f32(40), _f32(3), 40), {"BLOCK": 16}, (3,)),
    Case("cast", cast_kernel, (_f32(40), _f32(40).half(), 40), {"DST": kl.float16, "BLOCK": 16}, (3,)),
    Case("select", select_kernel, (_f32(40), _f32(40), _f32(40), 40), {"BLOCK": 16}, (3,)),
    *[Case(f"math_{fn}", math_kernel, (_f32(40).abs() + 0.1, _f32(40), 40), {"FN": fn, "BLOCK": 16}, (3,))
      for fn in ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "sigmoid", "abs", "cos", "sin")],
    Case("divmod", divmod_kernel, (_i32([-7, 7, -7, 7]), _i32([2, -2, -2, 2]), _i32([0] * 4), _i32([0] * 4), 4),
         {"BLOCK": 16}),
    Case("int_truediv", int_truediv_kernel, (_i32([-7, 7]), _i32([2, 3]), _f32(2), 2), {"BLOCK": 16}),
]
