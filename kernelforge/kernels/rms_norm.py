"""RMSNorm and the fused residual-add + RMSNorm, one DSL kernel for both.

Each work item is one row (`launch` says how programs map to items). The row is walked
in chunks of BLOCK columns twice: the first pass accumulates the sum of squares (and,
fused, writes residual += x), the second reads the row again and writes the normalised,
weighted result. Two passes keep the live
block at BLOCK elements whatever the hidden size, which bounds the NPU's on-chip
buffer; when BLOCK covers the row each pass is a single iteration.
"""

from __future__ import annotations

from torch import Tensor

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.autotuning import next_power_of_2, pow2_between
from kernelforge.kernels import validation
from kernelforge.jit import BoundLaunch
from kernelforge.kernels.launch import (LaunchMemo, flat_view, grid_size, memo_key, on_cpu_backend, on_native_cpu,
                                        persistent)

# Columns per chunk: the compiler's NPU estimate puts the fused kernel at 100 KB of live
# blocks for 4096 columns, over the 96 KB budget, and at half that for 2048.
MAX_BLOCK = 2048


# The CPU backend has no on-chip budget; its cost per chunk is mostly fixed (a dozen
# torch calls over all rows at once), so it takes wider chunks while the rows' chunk
# stays cache-sized: measured at 1 thread on 4096 columns, one 4096 chunk beats two of
# 2048 by 30% for one row and 13% for 16, and loses 4% for 64 (1 MB blocks).
CPU_CHUNK_ELEMS = 1 << 17


# The native CPU tier walks a row's chunk lane by lane: a quarter of the padded row (at
# most 512) wastes few masked lanes and still vectorises. Measured at 1 thread: 64 rows of
# 576 take 26-29 us in chunks of 128-256 against 52 us in one chunk of 1024, and 64 rows
# of 4096 take 95 us in chunks of 512 against 115 us in one of 4096.
NATIVE_MAX_BLOCK = 512


def _default(args: dict) -> kf.Config:
    """One chunk per row when it fits the budget: fewest loop iterations on every backend
    but the native CPU tier (see NATIVE_MAX_BLOCK)."""
    full = next_power_of_2(args["hidden"])
    if on_native_cpu(args["x_ptr"].device):
        return kf.Config(BLOCK=min(NATIVE_MAX_BLOCK, max(64, full // 4)))
    block = min(MAX_BLOCK, full)
    if block < full and on_cpu_backend(args["x_ptr"].device):
        while block < full and args["n_rows"] * block * 2 <= CPU_CHUNK_ELEMS:
            block *= 2
    return kf.Config(BLOCK=block)


def _configs(args: dict) -> list[kf.Config]:
    top = _default(args)["BLOCK"]
    return [kf.Config(BLOCK=b) for b in pow2_between(min(256, top), top)]


@kf.jit
def _rms_norm_row(
    row, out_ptr, x_ptr, residual_ptr, weight_ptr, hidden, out_stride, x_stride, residual_stride, eps,
    FUSED_ADD: kl.constexpr, BLOCK: kl.constexpr,
):
    # A scalar sum per chunk (not a [BLOCK] accumulator reduced at the end): the CPU
    # backend then computes only the row's valid lanes (their masked lanes add 0.0).
    sum_sq = kl.zeros([], dtype=kl.float32)
    for start in range(0, hidden, BLOCK):
        cols = start + kl.arange(0, BLOCK)
        mask = cols < hidden
        x = kl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(kl.float32)
        if FUSED_ADD:
            x = x + kl.load(residual_ptr + row * residual_stride + cols, mask=mask, other=0.0).to(kl.float32)
            kl.store(residual_ptr + row * residual_stride + cols, x, mask=mask)
        sum_sq = sum_sq + kl.sum(x * x, axis=0)
    rstd = kl.rsqrt(sum_sq / hidden + eps)
    for start in range(0, hidden, BLOCK):
        cols = start + kl.arange(0, BLOCK)
        mask = cols < hidden
        # Fused, the normalised input is the residual as stored (rounded to its dtype).
        if FUSED_ADD:
            x = kl.load(residual_ptr + row * residual_stride + cols, mask=mask, other=0.0).to(kl.float32)
        else:
            x = kl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(kl.float32)
        w = kl.load(weight_ptr + cols, mask=mask, other=0.0).to(kl.float32)
        kl.store(out_ptr + row * out_stride + cols, x * rstd * w, mask=mask)


@kf.autotune(configs=_configs, key=["hidden", "n_rows"], bucket={"n_rows": "pow2"},
             default=_default, outputs=["out_ptr", "residual_ptr"])
@kf.jit
def _rms_norm_kernel(
    out_ptr, x_ptr, residual_ptr, weight_ptr,
    n_rows, hidden, out_stride, x_stride, residual_stride, eps,
    FUSED_ADD: kl.constexpr, PERSISTENT: kl.constexpr, BLOCK: kl.constexpr,
):
    if PERSISTENT:
        for row in range(kl.program_id(0), n_rows, kl.num_programs(0)):
            _rms_norm_row(row, out_ptr, x_ptr, residual_ptr, weight_ptr, hidden, out_stride, x_stride,
                          residual_stride, eps, FUSED_ADD, BLOCK)
    else:
        _rms_norm_row(kl.program_id(0), out_ptr, x_ptr, residual_ptr, weight_ptr, hidden, out_stride, x_stride,
                      residual_stride, eps, FUSED_ADD, BLOCK)


def _rows(name: str, t: Tensor) -> Tensor:
    """`t` as a [rows, hidden] view (a copy would lose the in-place write)."""
    if t.dim() == 2:
        return t
    try:
        return t.view(-1, t.shape[-1])
    except RuntimeError:
        raise ValueError(f"{name} must be viewable as [rows, hidden]; got strides {t.stride()}") from None


_memo = LaunchMemo(_rms_norm_kernel)


def _launch(out: Tensor, x: Tensor, residual: Tensor, weight: Tensor, eps: float, fused_add: bool,
            memo: tuple | None, found: BoundLaunch | None) -> None:
    n_rows, hidden = x.shape
    if n_rows == 0:
        return
    device = x.device
    _memo.launch(memo, device, found, (grid_size(n_rows, device),),
                 (flat_view(out), flat_view(x), flat_view(residual), weight, n_rows, hidden,
                  out.stride(0), x.stride(0), residual.stride(0), float(eps)),
                 {"FUSED_ADD": fused_add, "PERSISTENT": persistent(device)})


def rms_norm(out: Tensor, x: Tensor, weight: Tensor, eps: float) -> None:
    """out = x / sqrt(mean(x^2) + eps) * weight over the last dim (math in float32)."""
    memo = memo_key((False, eps), out, x, weight)
    found = _memo.find(memo, x)
    if found is None:
        validation.check_rms_norm("rms_norm", out, x, weight, eps)
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    _launch(_rows("out", out), x2, x2, weight, eps, False, memo, found)


def fused_add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> None:
    """In place: residual += x; x = rms_norm(residual) * weight."""
    memo = memo_key((True, eps), x, residual, weight)
    found = _memo.find(memo, x)
    if found is None:
        validation.check_rms_norm("fused_add_rms_norm", residual, x, weight, eps, out_name="residual")
        validation.check_same("fused_add_rms_norm", ("residual", "x"), residual, x, "dtype")
    x2 = _rows("x", x)
    _launch(x2, x2, _rows("residual", residual), weight, eps, True, memo, found)


__all__ = ["rms_norm", "fused_add_rms_norm"]
