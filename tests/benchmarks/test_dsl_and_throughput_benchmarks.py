"""`python -m benchmarks.dsl` and `python -m benchmarks.throughput` run end to end on tiny settings."""

import json

import pytest
import torch

from benchmarks import dsl, throughput


def test_dsl_benchmark_checks_and_times_every_case(tmp_path, monkeypatch):
    monkeypatch.setenv("KF_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    try:
        dsl.main(["--reps", "1", "--threads", str(threads), "--json", str(tmp_path / "dsl.json")])
    finally:
        torch.set_num_threads(threads)
    results = json.loads((tmp_path / "dsl.json").read_text())["results"]
    assert {r["kernel"] for r in results} == {"vector add", "softmax", "matmul"} and len(results) == 9
    for row in results:
        assert row["dsl_us"] > 0 and row["torch_us"] > 0
        assert row["max_abs_err"] < 1e-3, row


@pytest.mark.slow
def test_throughput_benchmark_counts_only_useful_tokens(tmp_path):
    path = tmp_path / "throughput.json"
    throughput.main(["--num-requests", "3", "--max-prompt-len", "12", "--max-output-len", "5", "--sweep", "1", "3",
                     "--json", str(path), "--plot", str(tmp_path / "throughput.png")])
    report = json.loads(path.read_text())
    expected = sum(throughput.make_workload(3, 49152, 0, 12, 5).output_lens)
    assert report["useful_tokens"] == expected
    assert [(r["system"], r["max_num_seqs"]) for r in report["runs"]] == [
        ("kernelforge LLM", 1), ("kernelforge LLM", 3), ("transformers static batching", None)]
    assert all(r["useful_tokens"] == expected and r["seconds"] > 0 for r in report["runs"])
    assert (tmp_path / "throughput.png").stat().st_size > 0
