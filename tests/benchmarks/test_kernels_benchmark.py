"""`python -m benchmarks.kernels` runs end to end and checks every kernel against its reference."""

import json

from benchmarks import kernels as kernels_benchmark


def test_small_run_writes_checked_rows(tmp_path):
    path = tmp_path / "kernels.json"
    rows = kernels_benchmark.main(["--models", "smollm2", "--seqs", "1", "--contexts", "16", "--reps", "1",
                                   "--json", str(path)])
    assert json.loads(path.read_text()) == rows
    names = [(r["kernel"], r["shape"]) for r in rows]
    assert ("paged_attention", "smollm2 mixed 31 decodes (ctx 30-560) + 256-token chunk") in names
    assert ("paged_attention", "smollm2 prefill 12 prompts of 8-300") in names
    assert {k for k, _ in names} == {"rms_norm", "fused_add_rms_norm", "rotary_embedding", "reshape_and_cache",
                                     "paged_attention"}
    for row in rows:
        assert row["kf_ms"] > 0 and row["torch_ms"] > 0
        assert row["max_abs_err"] < 1e-4, row
