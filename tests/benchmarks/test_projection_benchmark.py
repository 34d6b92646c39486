"""`python -m benchmarks.projection` runs end to end and writes what it printed."""

import json

import torch

from benchmarks import projection
from models.llama import Projection


def test_small_run_writes_rows(tmp_path):
    path = tmp_path / "projection.json"
    rows = projection.main(["--rows", "1,5", "--layers", "1", "--reps", "1", "--threads", "0", "--json", str(path)])
    assert json.loads(path.read_text()) == rows
    assert [r["rows"] for r in rows] == [1, 5]
    assert all(r["linear_ms"] > 0 and r["projection_ms"] > 0 for r in rows)


def test_projection_is_linear_with_its_checkpoint_weight():
    weight, bias, x = torch.randn(7, 5), torch.randn(7), torch.randn(3, 5)
    layer = Projection(weight, bias)
    assert torch.equal(layer.weight, weight) and layer.weight_t.is_contiguous()
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, weight, bias))
    torch.testing.assert_close(Projection(weight)(x), x @ weight.T)
