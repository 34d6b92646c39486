"""`python -m benchmarks.attention_bandwidth` runs end to end on the CPU and counts bytes right."""

import json

import pytest
import torch

from benchmarks import attention_bandwidth
from benchmarks.kernels import MODELS


def test_small_run_writes_checked_rows(tmp_path):
    path = tmp_path / "bw.json"
    rows = attention_bandwidth.main(["--device", "cpu", "--models", "smollm2", "--seqs", "1,3", "--contexts", "17",
                                     "--reps", "1", "--copy-mb", "4", "--json", str(path)])
    assert json.loads(path.read_text()) == rows
    assert [(r["seqs"], r["context"]) for r in rows] == [(1, 17), (3, 17)]
    for row in rows:
        assert row["ms"] > 0 and row["gb_per_s"] > 0 and row["copy_gb_per_s"] > 0
        assert row["max_abs_err"] < 1e-4, row
        assert row["share_of_peak"] is None  # no memory clock on a CPU


def test_bytes_counts_every_key_and_value_once():
    m = MODELS["smollm2"]  # 9 query / 3 KV heads of 64
    kv = 2 * 2 * 17 * 3 * 64 * 4
    q_and_out = 2 * 2 * 9 * 64 * 4
    assert attention_bandwidth.bytes_moved(m, 2, 17, torch.float32) == kv + q_and_out + 2 * 2 * 4


def test_unknown_model_is_named():
    with pytest.raises(SystemExit):
        attention_bandwidth.main(["--device", "cpu", "--models", "gpt5"])
