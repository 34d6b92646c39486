"""Backend selection: forcing a backend is checked against where the arguments live."""

import os
import threading

import pytest
import torch

import kernelforge as kf
import kernelforge.language as kl
from kernelforge.backends import BackendError, environ_get, select_backend_name


@kf.jit
def _increment(x_ptr, out_ptr, n, BLOCK: kl.constexpr):
    offs = kl.program_id(0) * BLOCK + kl.arange(0, BLOCK)
    kl.store(out_ptr + offs, kl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)


def test_device_picks_the_backend(monkeypatch):
    monkeypatch.delenv("KF_BACKEND", raising=False)
    assert select_backend_name(torch.device("cpu")) == "cpu"
    assert select_backend_name(torch.device("cuda", 0)) == "triton"


def test_repeated_selection_keeps_each_devices_backend(monkeypatch):
    monkeypatch.delenv("KF_BACKEND", raising=False)
    devices = [torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cpu")]
    for _ in range(2):
        assert [select_backend_name(d) for d in devices] == ["cpu", "triton", "triton", "cpu"]
    assert select_backend_name(None) == "cpu"


def test_a_forced_backend_applies_to_its_own_thread_only(monkeypatch):
    monkeypatch.delenv("KF_BACKEND", raising=False)
    seen = []
    with kf.backend("interpret"):
        assert select_backend_name(torch.device("cpu")) == "interpret"
        worker = threading.Thread(target=lambda: seen.append(select_backend_name(torch.device("cpu"))))
        worker.start()
        worker.join()
    assert seen == ["cpu"]
    assert select_backend_name(torch.device("cpu")) == "cpu"


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


_tuned_increment = kf.autotune(configs=[kf.Config(BLOCK=16)], key=["n"])(_increment)


def test_environ_get_sees_every_change_between_calls(monkeypatch):
    monkeypatch.delenv("KF_TEST_VARIABLE", raising=False)
    assert environ_get("KF_TEST_VARIABLE") is None
    assert environ_get("KF_TEST_VARIABLE", "0") == "0"
    monkeypatch.setenv("KF_TEST_VARIABLE", "1")
    assert environ_get("KF_TEST_VARIABLE", "0") == "1"
    os.environ["KF_TEST_VARIABLE"] = "caf\u00e9"
    assert environ_get("KF_TEST_VARIABLE") == "caf\u00e9"
    del os.environ["KF_TEST_VARIABLE"]
    assert environ_get("KF_TEST_VARIABLE", "0") == "0"


def test_environ_get_reads_a_replaced_plain_mapping(monkeypatch):
    monkeypatch.setattr(os, "environ", {"KF_TEST_VARIABLE": "2"})
    assert environ_get("KF_TEST_VARIABLE") == "2"
    assert environ_get("KF_OTHER_VARIABLE", "x") == "x"


def test_a_warm_launch_does_not_call_os_environ_get(monkeypatch):
    """`os.environ.get` of an unset variable costs ~0.8 us; a repeated launch reads the
    dictionary behind it instead."""
    monkeypatch.delenv("KF_BACKEND", raising=False)
    monkeypatch.delenv("KF_SANITIZE", raising=False)
    x = torch.ones(10)
    out = torch.empty_like(x)
    _increment[(1,)](x, out, 10, BLOCK=16)
    _tuned_increment[(1,)](x, out, 10)
    calls = []
    real_get = os.environ.get
    monkeypatch.setattr(os.environ, "get", lambda *a: calls.append(a) or real_get(*a), raising=False)
    _increment[(1,)](x, out, 10, BLOCK=16)
    _tuned_increment[(1,)](x, out, 10)
    assert calls == []
    assert torch.equal(out, x + 1)


@pytest.mark.parametrize("launch", [lambda x, out: _increment[(1,)](x, out, 10, BLOCK=16),
                                    lambda x, out: _tuned_increment[(1,)](x, out, 10)],
                         ids=["jit", "autotuned"])
def test_kf_backend_set_between_warm_launches_takes_effect(monkeypatch, launch):
    monkeypatch.delenv("KF_BACKEND", raising=False)
    x = torch.ones(10)
    out = torch.empty_like(x)
    launch(x, out)
    launch(x, out)
    monkeypatch.setenv("KF_BACKEND", "triton")
    with pytest.raises(BackendError, match="'triton' runs on CUDA or NPU tensors"):
        launch(x, out)
    monkeypatch.delenv("KF_BACKEND")
    launch(x, out)
    assert torch.equal(out, x + 1)


def test_unknown_backend_name_is_rejected():
    with pytest.raises(BackendError, match="unknown backend"):
        with kf.backend("tpu"):
            pass


def test_num_cores_on_a_cpu_only_machine_is_the_thread_count():
    assert kf.num_cores() == torch.get_num_threads()
    with pytest.raises(ValueError, match="kind"):
        kf.num_cores("tensor")
