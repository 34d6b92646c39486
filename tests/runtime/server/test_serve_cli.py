"""`python -m runtime.serve` flags: vLLM's names and defaults; a bad value names its flag."""

import subprocess
import sys

import pytest

from runtime.serve import build_parser


def test_defaults_follow_vllm():
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.model, args.api_key) == ("127.0.0.1", 8000, None, None)
    assert (args.max_model_len, args.max_num_seqs, args.max_num_batched_tokens, args.block_size) == (2048, 64, 2048, 16)
    assert (args.dtype, args.device, args.kv_cache_memory) == ("auto", "auto", "auto")


@pytest.mark.parametrize("text, size", [("auto", "auto"), ("1048576", 2**20), ("64MiB", 64 * 2**20),
                                        ("2G", 2 * 2**30), ("1.5k", 1536)])
def test_kv_cache_memory_sizes(text, size):
    assert build_parser().parse_args(["--kv-cache-memory", text]).kv_cache_memory == size


@pytest.mark.parametrize("argv, flag", [
    (["--port", "http"], "--port"),
    (["--port", "70000"], "--port"),
    (["--max-model-len", "0"], "--max-model-len"),
    (["--max-num-seqs", "-4"], "--max-num-seqs"),
    (["--block-size", "24"], "--block-size"),
    (["--dtype", "float64"], "--dtype"),
    (["--kv-cache-memory", "lots"], "--kv-cache-memory"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_flag_is_an_argparse_error_naming_it(argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_module_entry_point_rejects_bad_flags_before_loading_a_model():
    proc = subprocess.run([sys.executable, "-m", "runtime.serve", "--max-num-batched-tokens", "many"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--max-num-batched-tokens" in proc.stderr
