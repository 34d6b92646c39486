"""Stop conditions: stop tokens, EOS, stop strings (cut from the text), lengths, and the
hold-back that keeps a possible partial stop string out of streamed text."""

from __future__ import annotations

from runtime.sampling_params import SamplingParams
from runtime.sequence import Sequence, SequenceStatus
from runtime.stop_checker import check_stop, find_stop_string, visible_text

EOS = 2


def generate(params: SamplingParams, pieces: list[tuple[int, str]], max_model_len: int = 100):
    seq = Sequence("r", [7, 7], params)
    for token_id, text in pieces:
        seq.append_token(token_id)
        reason = check_stop(seq, text, {EOS}, max_model_len)
        if reason:
            return seq, reason
    return seq, None


def test_eos_stops_unless_ignored_and_adds_no_text():
    seq, reason = generate(SamplingParams(), [(5, "a"), (EOS, "</s>")])
    assert reason == "stop" and seq.output_text == "a" and seq.output_token_ids == [5, EOS]
    seq, reason = generate(SamplingParams(ignore_eos=True), [(5, "a"), (EOS, "")])
    assert reason is None


def test_stop_token_ids_stop_with_reason_stop():
    seq, reason = generate(SamplingParams(stop_token_ids=[9]), [(5, "a"), (9, "Z"), (5, "b")])
    assert reason == "stop" and seq.output_text == "a"


def test_stop_string_spanning_tokens_is_cut():
    seq, reason = generate(SamplingParams(stop=["END", "xx"]), [(5, "hello E"), (6, "N"), (7, "D more")])
    assert reason == "stop" and seq.output_text == "hello "


def test_earliest_stop_string_wins():
    assert find_stop_string("ab STOP cd", 10, ("cd", "STOP")) == 3


def test_max_tokens_and_max_model_len_give_length():
    _, reason = generate(SamplingParams(max_tokens=2), [(5, "a"), (6, "b"), (7, "c")])
    assert reason == "length"
    seq, reason = generate(SamplingParams(max_tokens=None), [(5, "a"), (6, "b")], max_model_len=4)
    assert reason == "length" and seq.num_tokens == 4


def test_visible_text_holds_back_a_possible_stop_prefix_until_finished():
    seq, reason = generate(SamplingParams(stop="STOP"), [(5, "abcdef ST")])
    assert reason is None and visible_text(seq) == "abcdef"
    seq.status = SequenceStatus.FINISHED
    assert visible_text(seq) == "abcdef ST"
    short, _ = generate(SamplingParams(stop="STOP"), [(5, "a")])
    assert visible_text(short) == ""
