"""LLMEngine over the toy test-double model: greedy outputs survive batching, chunking,
prefix caching and preemption unchanged; request validation; abort; n > 1; seeds; stop
strings; logprobs; streaming outputs; metrics."""

from __future__ import annotations

import threading

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from prometheus_client import generate_latest

from runtime.engine import EngineArgs, LLMEngine
from runtime.llm import LLM
from runtime.sampling_params import SamplingParams
from toy_model import EOS, ToyModel, ToyTokenizer, reference_greedy


def run_all(engine: LLMEngine, requests: dict[str, tuple[list[int], SamplingParams]]):
    for rid, (prompt, params) in requests.items():
        engine.add_request(rid, prompt, params)
    finals = {}
    for _ in range(10_000):
        if not engine.has_unfinished_requests():
            break
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
    return finals


@settings(max_examples=15)
@given(prompts=st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=30), min_size=1, max_size=8),
       max_tokens=st.integers(1, 20), kv_blocks=st.integers(16, 40), budget=st.integers(1, 24),
       max_num_seqs=st.integers(1, 5), block_size=st.sampled_from([1, 4, 8]))
def test_greedy_matches_reference_under_batching_and_preemption(prompts, max_tokens, kv_blocks, budget,
                                                               max_num_seqs, block_size):
    blocks_for_max_len = -(-64 // block_size)
    args = EngineArgs(max_model_len=64, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                      block_size=block_size, kv_cache_memory=max(kv_blocks, blocks_for_max_len) * 2 * block_size * 8)
    engine = LLMEngine(args, model=ToyModel(), tokenizer=ToyTokenizer())
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    finals = run_all(engine, {str(i): (p, params) for i, p in enumerate(prompts)})
    for i, prompt in enumerate(prompts):
        expected = reference_greedy(prompt, min(max_tokens, 64 - len(prompt)), ignore_eos=True)
        assert finals[str(i)].outputs[0].token_ids == expected
    stats = engine.stats()
    assert stats.kv_usage == 0.0 and stats.running == stats.waiting == 0


def test_preemption_happens_and_outputs_stay_identical(toy_engine):
    engine = toy_engine(kv_cache_memory=16 * 64, max_num_seqs=4, max_num_batched_tokens=64)
    prompts = {str(i): ([1 + i % 3] * (5 + i), SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))
               for i in range(4)}
    finals = run_all(engine, prompts)
    assert engine.stats().num_preemptions > 0
    for rid, (prompt, _) in prompts.items():
        assert finals[rid].outputs[0].token_ids == reference_greedy(prompt, 30, ignore_eos=True)


def test_shared_prefixes_hit_the_cache(toy_engine):
    engine = toy_engine(max_num_batched_tokens=64)
    prefix = [1, 2, 3] * 6
    run_all(engine, {"a": (prefix + [1], SamplingParams(max_tokens=2, temperature=0))})
    run_all(engine, {"b": (prefix + [2], SamplingParams(max_tokens=2, temperature=0))})
    stats = engine.stats()
    assert stats.prefix_cache_hits == 16 and stats.prefix_cache_queries == 38


def test_eos_ends_a_greedy_request_with_stop():
    prompt = next(p for p in ([a, b] for a in range(1, 40) for b in range(1, 40))
                  if EOS in reference_greedy(p, 10))
    engine = LLMEngine(EngineArgs(max_model_len=64, block_size=4, kv_cache_memory=4096),
                       model=ToyModel(), tokenizer=ToyTokenizer())
    out = run_all(engine, {"r": (prompt, SamplingParams(max_tokens=10, temperature=0))})["r"].outputs[0]
    assert out.finish_reason == "stop" and out.token_ids == reference_greedy(prompt, 10) and out.token_ids[-1] == EOS


def test_bad_requests_are_rejected_at_add(toy_engine):
    engine = toy_engine(max_model_len=16)
    with pytest.raises(ValueError, match="max_model_len"):
        engine.add_request("long", [1] * 16, SamplingParams())
    engine.add_request("fits", [1] * 15, SamplingParams(max_tokens=5, temperature=0))
    with pytest.raises(ValueError, match="empty"):
        engine.add_request("empty", [], SamplingParams())
    with pytest.raises(ValueError, match="vocab|integers"):
        engine.add_request("oov", [1, 10_000], SamplingParams())
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request("fits", [1], SamplingParams())
    finals = run_all(engine, {})
    assert finals["fits"].outputs[0].finish_reason == "length" and len(finals["fits"].outputs[0].token_ids) == 1


def test_kv_cache_too_small_for_max_model_len_is_an_error():
    with pytest.raises(ValueError, match="max_model_len"):
        LLMEngine(EngineArgs(max_model_len=64, block_size=4, kv_cache_memory=64), model=ToyModel(),
                  tokenizer=ToyTokenizer())


def test_abort_frees_blocks_and_unknown_ids_are_ignored(toy_engine):
    engine = toy_engine()
    engine.add_request("a", [1, 2, 3, 4, 5], SamplingParams(max_tokens=20, temperature=0))
    engine.add_request("b", [2, 2, 2], SamplingParams(max_tokens=20, temperature=0))
    engine.step()
    engine.step()
    assert engine.stats().kv_usage > 0
    engine.abort_request("a")
    engine.abort_request("a")
    engine.abort_request("never-existed")
    assert engine.stats().running == 1
    engine.abort_request("b")
    assert engine.stats().kv_usage == 0.0 and not engine.has_unfinished_requests()
    engine.add_request("a", [1], SamplingParams(max_tokens=1))  # an aborted id is free again
    assert engine.has_unfinished_requests()


def test_n_completions_with_seed_are_distinct_and_reproducible(toy_engine):
    params = SamplingParams(n=3, max_tokens=12, temperature=1.0, seed=42, ignore_eos=True)
    first = run_all(toy_engine(), {"r": ([1, 2, 3], params)})["r"]
    again = run_all(toy_engine(), {"x": ([3, 3], SamplingParams(max_tokens=5)), "r": ([1, 2, 3], params)})["r"]
    assert [o.index for o in first.outputs] == [0, 1, 2]
    assert [o.token_ids for o in first.outputs] == [o.token_ids for o in again.outputs]
    assert len({tuple(o.token_ids) for o in first.outputs}) == 3


def test_stop_string_is_cut_and_streamed_text_only_grows():
    tok = ToyTokenizer()
    prompt = [5, 6, 7]
    full = tok.decode(reference_greedy(prompt, 20, ignore_eos=True))
    stop = full[6:8]
    engine = LLMEngine(EngineArgs(max_model_len=64, block_size=4, kv_cache_memory=4096),
                       model=ToyModel(), tokenizer=tok)
    engine.add_request("r", prompt, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True, stop=stop))
    texts = []
    while engine.has_unfinished_requests():
        texts += [o.outputs[0].text for o in engine.step()]
    assert texts[-1] == full[:full.index(stop)]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:])), "streamed text never retracts"


def test_logprobs_hold_top_k_and_the_sampled_token(toy_engine):
    params = SamplingParams(max_tokens=4, temperature=1.0, seed=1, logprobs=3, ignore_eos=True)
    out = run_all(toy_engine(), {"r": ([1, 2], params)})["r"].outputs[0]
    assert len(out.logprobs) == 4
    for token_id, entry in zip(out.token_ids, out.logprobs):
        assert token_id in entry and 3 <= len(entry) <= 4
        ranks = sorted(lp.rank for tid, lp in entry.items())
        assert ranks[:3] == [1, 2, 3] and all(lp.logprob <= 0 for lp in entry.values())
        assert entry[token_id].decoded_token == ToyTokenizer().decode([token_id])


def test_llm_generate_orders_results_and_accepts_token_prompts():
    engine = LLMEngine(EngineArgs(max_model_len=64, block_size=4, kv_cache_memory=4096),
                       model=ToyModel(), tokenizer=ToyTokenizer())
    llm = LLM.from_engine(engine)
    params = SamplingParams(max_tokens=3, temperature=0, ignore_eos=True)
    outs = llm.generate(["ABC", {"prompt_token_ids": [4, 5]}, "DD"], params)
    assert [o.prompt for o in outs] == ["ABC", None, "DD"]
    assert [o.outputs[0].token_ids for o in outs] == [reference_greedy(p, 3, ignore_eos=True)
                                                      for p in ([0, 1, 2], [4, 5], [3, 3])]
    with pytest.raises(ValueError, match="2 SamplingParams for 3 prompts"):
        llm.generate(["A", "B", "C"], [params, params])
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate(["A", "B" * 64])
    assert not engine.has_unfinished_requests(), "a rejected batch leaves nothing queued"


def test_metrics_follow_the_engine(toy_engine):
    engine = toy_engine()
    run_all(engine, {str(i): ([1, 2, 3], SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
                     for i in range(3)})
    text = generate_latest(engine.metrics.registry).decode()
    assert 'kernelforge:generation_tokens_total{model_name="toy"} 15.0' in text
    assert 'kernelforge:prompt_tokens_total{model_name="toy"} 9.0' in text
    assert 'kernelforge:request_success_total{finished_reason="length",model_name="toy"} 3.0' in text
    assert 'kernelforge:num_requests_running{model_name="toy"} 0.0' in text
    assert 'kernelforge:time_to_first_token_seconds_count{model_name="toy"} 3.0' in text
    assert 'kernelforge:e2e_request_latency_seconds_count{model_name="toy"} 3.0' in text
    for name in ("num_requests_waiting", "kv_cache_usage_perc", "prefix_cache_queries_total",
                 "prefix_cache_hits_total", "inter_token_latency_seconds_bucket"):
        assert f"kernelforge:{name}" in text


def test_requests_added_from_another_thread_during_steps_are_served(toy_engine):
    engine = toy_engine()
    engine.add_request("first", [1, 2], SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))
    adder = threading.Thread(target=lambda: [engine.add_request(f"t{i}", [2, 3], SamplingParams(
        max_tokens=3, temperature=0, ignore_eos=True)) for i in range(20)])
    adder.start()
    finished = set()
    while adder.is_alive() or engine.has_unfinished_requests():
        finished |= {o.request_id for o in engine.step() if o.finished}
    adder.join()
    assert finished == {"first"} | {f"t{i}" for i in range(20)}


def test_n_siblings_reuse_the_first_completions_prompt_blocks(toy_engine):
    engine = toy_engine(max_num_batched_tokens=64)
    prompt = [1, 2, 3, 1, 2, 3, 1, 2, 3]
    params = SamplingParams(n=3, max_tokens=4, temperature=0, ignore_eos=True)
    out = run_all(engine, {"r": (prompt, params)})["r"]
    assert [o.token_ids for o in out.outputs] == [reference_greedy(prompt, 4, ignore_eos=True)] * 3
    assert engine.stats().prefix_cache_hits == 2 * 8, "each sibling reuses the two full prompt blocks"


def test_abort_before_the_siblings_start(toy_engine):
    engine = toy_engine()
    engine.add_request("r", [1, 2, 3], SamplingParams(n=4, max_tokens=4))
    engine.abort_request("r")
    assert not engine.has_unfinished_requests() and engine.step() == []


@pytest.mark.parametrize("field, value, message", [
    ("block_size", 7, "block_size must be a power of two"),
    ("block_size", 0, "block_size must be an integer >= 1"),
    ("max_num_seqs", 0, "max_num_seqs must be an integer >= 1"),
    ("max_num_batched_tokens", 2.5, "max_num_batched_tokens must be an integer"),
    ("max_model_len", 1, "max_model_len must be an integer >= 2"),
])
def test_bad_engine_args_fail_before_anything_loads(field, value, message):
    with pytest.raises(ValueError, match=message):
        LLMEngine(EngineArgs(**{field: value}))


def test_generate_names_a_prompt_of_the_wrong_type(toy_engine):
    llm = LLM.from_engine(toy_engine())
    with pytest.raises(TypeError, match="prompts must be a string"):
        llm.generate(5)


def test_running_and_waiting_count_requests_not_sequences(toy_engine):
    engine = toy_engine(max_num_seqs=3)
    engine.add_request("siblings", [1, 2, 3], SamplingParams(n=3, max_tokens=4, temperature=0.0))
    engine.add_request("later", [2, 3], SamplingParams(max_tokens=4, temperature=0.0))
    engine.step()
    engine.step()
    assert (len(engine.scheduler.running), len(engine.scheduler.waiting)) == (3, 1), "precondition"
    stats = engine.stats()
    assert (stats.running, stats.waiting) == (2, 0), "a request with one sibling in the batch is running"
    text = generate_latest(engine.metrics.registry).decode()
    assert 'kernelforge:num_requests_running{model_name="toy"} 2.0' in text
    assert 'kernelforge:num_requests_waiting{model_name="toy"} 0.0' in text
    run_all(engine, {})
    assert (engine.stats().running, engine.stats().waiting) == (0, 0)
