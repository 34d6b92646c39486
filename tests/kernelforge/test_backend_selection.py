"""Backend selection: forcing a backend is checked against where the arguments live."""

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends import BackendError, select_backend_name


@kf.jit
def _increment(x_ptr, out_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    kl.store(out_ptr + offs, kl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)


def test_device_picks_the_backend(monkeypatch):
    monkeypatch.delenv("KF_BACKEND", raising=False)
    assert select_backend_name(torch.device("cpu")) == "cpu"
    assert select_backend_name(torch.device("cuda", 0)) == "triton"


def test_forcing_a_gpu_backend_on_cpu_tensors_names_both(monkeypatch):
    monkeypatch.delenv("KF_BACKEND", raising=False)
    x = torch.ones(10)
    with pytest.raises(BackendError, match=r"'triton' runs on CUDA or NPU tensors.*on cpu"):
        with kf.backend("triton"):
            _increment[(1,)](x, torch.empty_like(x), 10, BLOCK=16)


def test_env_override_is_checked_too(monkeypatch):
    monkeypatch.setenv("KF_BACKEND", "cpu")
    with pytest.raises(BackendError, match="'cpu' runs on CPU tensors"):
        select_backend_name(torch.device("cuda", 0))
    monkeypatch.setenv("KF_BACKEND", "nonsense")
    with pytest.raises(BackendError, match="not one of"):
        select_backend_name(torch.device("cpu"))


def test_unknown_backend_name_is_rejected():
    with pytest.raises(BackendError, match="unknown backend"):
        with kf.backend("tpu"):
            pass


def test_num_cores_on_a_cpu_only_machine_is_the_thread_count():
    assert kf.num_cores() == torch.get_num_threads()
    with pytest.raises(ValueError, match="kind"):
        kf.num_cores("tensor")
