"""The CPU backend's malloc settings: applied on glibc, never over the user's own."""

import platform

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends.cpu import allocator

ON_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_configure_sets_thresholds_on_glibc():
    assert allocator.configure({}) is ON_GLIBC


@pytest.mark.parametrize("environ", [
    {"MALLOC_TRIM_THRESHOLD_": "131072"},
    {"MALLOC_MMAP_THRESHOLD_": "65536"},
    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
])
def test_user_malloc_settings_win(environ):
    assert allocator.configure(environ) is False


@kf.jit
def _copy_kernel(src_ptr, dst_ptr, BLOCK: kl.constexpr):
    offs = kl.arange(0, BLOCK)
    kl.store(dst_ptr + offs, kl.load(src_ptr + offs))


def test_loading_a_cpu_kernel_configures_malloc_once():
    allocator.keep_freed_memory.cache_clear()
    src, dst = torch.arange(8.0), torch.zeros(8)
    with kf.backend("cpu"):
        _copy_kernel[(1,)](src, dst, BLOCK=8)
    assert torch.equal(dst, src)
    assert allocator.keep_freed_memory.cache_info().currsize == 1
