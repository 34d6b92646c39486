"""Early returns that only some programs take, combined with per-program loop lengths.

A regression suite for the CPU backend's predication: a returned program must neither
run later iterations nor lose iterations it is owed (this once computed the tail mask as
`step < (trips & alive)`).
"""

import torch

import kernelforge as kf
import kernelforge.language as kl


@kf.jit
def _return_then_ragged_loop(out_ptr, n):
    pid = kl.program_id(0)
    if pid >= n:
        return
    total = 0.0
    for j in range(0, pid + 1):
        total += 1.0
    kl.store(out_ptr + pid, total)


@kf.jit
def _return_inside_ragged_loop(x_ptr, out_ptr, count_ptr, row_len):
    pid = kl.program_id(0)
    for j in range(0, pid + 2):
        kl.atomic_add(count_ptr + pid, 1.0)
        if kl.load(x_ptr + pid * row_len + j) < 0:
            return
    kl.store(out_ptr + pid, 1.0)


def test_return_before_a_ragged_loop(backend):
    out = torch.zeros(6)
    with kf.backend(backend):
        _return_then_ragged_loop[(6,)](out, 4)
    assert out.tolist() == [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]


def test_return_inside_a_ragged_loop(backend):
    x = torch.ones(6, 8)
    x[1, 0] = -1.0  # program 1 returns in its first iteration
    x[3, 2] = -1.0  # program 3 returns in its third of five
    x[5, 6] = -1.0  # program 5 returns in its last
    out, count = torch.zeros(6), torch.zeros(6)
    with kf.backend(backend):
        _return_inside_ragged_loop[(6,)](x, out, count, 8)
    assert out.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert count.tolist() == [2.0, 1.0, 4.0, 3.0, 6.0, 7.0]
