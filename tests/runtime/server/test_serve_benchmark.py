"""benchmarks/serve.py: metric arithmetic, and a tiny real run against the test server."""

import json

import pytest

from benchmarks import serve as bench


def test_summary_follows_vllm_definitions():
    results = [bench.RequestResult(ok=True, prompt_tokens=10, output_tokens=5, ttft=0.1, e2el=0.5,
                                   itl=[0.1, 0.1, 0.1, 0.1]),
               bench.RequestResult(ok=True, prompt_tokens=10, output_tokens=3, ttft=0.3, e2el=0.5, itl=[0.1, 0.1]),
               bench.RequestResult(ok=False, error="HTTP 500")]
    m = bench.summarize(results, duration=2.0)
    assert (m["completed"], m["failed"], m["total_output_tokens"]) == (2, 1, 8)
    assert m["request_throughput"] == 1.0 and m["output_throughput"] == 4.0 and m["total_token_throughput"] == 14.0
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["mean_tpot_ms"] == pytest.approx(100.0)  # (0.5 - 0.1) / 4 and (0.5 - 0.3) / 2
    assert m["median_itl_ms"] == pytest.approx(100.0) and m["p99_e2el_ms"] == pytest.approx(500.0)
    table = bench.markdown_table([{"max_concurrency": 2, **m}]).splitlines()
    assert len(table) == 3 and table[2].startswith("| 2 | 2 | 1 |")


def test_prompts_are_fixed_by_the_seed():
    assert bench.make_prompts(3, 8, seed=1) == bench.make_prompts(3, 8, seed=1)
    assert bench.make_prompts(3, 8, seed=1) != bench.make_prompts(3, 8, seed=2)
    assert all(len(p.split()) == 8 for p in bench.make_prompts(3, 8, seed=1))


@pytest.mark.slow
@pytest.mark.xdist_group("openai-server")
def test_tiny_run_against_a_real_server(server, tmp_path, capsys):
    out = tmp_path / "serve.json"
    bench.main(["--base-url", server.base_url, "--api-key", server.api_key, "--num-prompts", "4",
                "--input-len", "8", "--output-len", "4", "--max-concurrency", "1", "2", "--request-rate", "50",
                "--warmup", "1", "--output-json", str(out), "--plot", str(tmp_path / "serve.png")])
    rows = json.loads(out.read_text())["results"]
    assert [(r["max_concurrency"], r["completed"], r["failed"], r["total_output_tokens"]) for r in rows] == \
        [(1, 4, 0, 16), (2, 4, 0, 16)]
    assert "| conc |" in capsys.readouterr().out
    assert (tmp_path / "serve.png").stat().st_size > 0
    assert "api_key" not in json.loads(out.read_text())["args"]
