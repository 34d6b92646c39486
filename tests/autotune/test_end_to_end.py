"""The whole loop on real DSL kernels: declare, tune through the CLI, launch with the tuned
config. Runs on every CPU-side backend that works here (`cpu`, `interpret`)."""

from __future__ import annotations

import json

import torch

import autotune
from autotune import AutotuneCache, Tuner
from autotune.__main__ import main
from kernelforge import autotuning


def test_cli_tune_show_export_import_clear(dsl_backend, kernels_package, tmp_path, capsys):
    kernel = kernels_package()
    assert main(["tune", "--kernel", "double", "--shape", "num_tokens=3", "hidden_size=100",
                 "--search", "exhaustive", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "double_kernel" in out and "n=512" in out

    (entry,) = AutotuneCache().entries()
    assert entry.backend == dsl_backend and entry.key == (512, "float32", "")
    assert len(entry.timings) == 4
    assert "arange" in entry.failures[autotuning.Config(BLOCK=3).to_json()]  # CompilationError

    assert main(["show"]) == 0
    assert "double_kernel" in capsys.readouterr().out
    assert main(["show", "--failures"]) == 0
    assert "arange" in capsys.readouterr().out

    bundle = tmp_path / "bundle.json"
    assert main(["export", str(bundle)]) == 0
    assert len(json.loads(bundle.read_text())["entries"]) == 1
    assert main(["clear"]) == 0 and AutotuneCache().entries() == []
    assert main(["import", str(bundle)]) == 0
    assert [e.timings for e in AutotuneCache().entries()] == [entry.timings]

    # the provider now launches the tuned config for that key, the default elsewhere
    autotune.install()
    (launch,) = kernel.launches({"num_tokens": 3, "hidden_size": 100})
    assert kernel.autotuned.choose(launch) == entry.best()[0]
    (other,) = kernel.launches({"num_tokens": 30, "hidden_size": 100})
    assert kernel.autotuned.choose(other) == autotuning.Config(BLOCK=16)
    x, out = launch["x_ptr"], launch["out_ptr"]
    assert torch.equal(out, x * 2)


def test_editing_the_kernel_re_tunes_it(dsl_backend, kernels_package):
    kernel = kernels_package("2.0")
    (launch,) = kernel.launches({"num_tokens": 1, "hidden_size": 64})
    assert Tuner(search="exhaustive").tune(launch).timed == 4
    assert Tuner(search="exhaustive").tune(launch).timed == 0
    edited = kernels_package("2.0 + 0.0")
    (launch,) = edited.launches({"num_tokens": 1, "hidden_size": 64})
    assert edited.autotuned.source_hash != kernel.autotuned.source_hash
    assert Tuner(search="exhaustive").tune(launch).timed == 4


def test_kf_autotune_tunes_real_kernel_at_first_launch(dsl_backend, kernels_package, monkeypatch):
    monkeypatch.setenv("KF_AUTOTUNE", "1")
    kernel = kernels_package()
    autotune.install()
    (launch,) = kernel.launches({"num_tokens": 2, "hidden_size": 64})
    (entry,) = AutotuneCache().entries()
    assert entry.key == (128, "float32", "") and entry.best() is not None
    assert torch.equal(launch["out_ptr"], launch["x_ptr"] * 2)


def test_unknown_kernel_name_lists_the_tunable_ones(kernels_package, capsys):
    kernels_package()
    assert main(["tune", "--kernel", "nope"]) == 2
    assert "double_kernel" in capsys.readouterr().err
