"""SSE framing and streaming deltas, without a server."""

from dataclasses import dataclass, field

import pytest

from runtime.server import sse
from runtime.server.formatting import DeltaTracker, chat_logprobs, completion_logprobs
from runtime.server.responses import ChatDelta, Usage
from runtime.outputs import Logprob


def test_events_round_trip_and_end_with_done():
    body = sse.event({"a": "ü\n"}) + sse.event(Usage.of(3, 4)) + sse.DONE
    assert body.endswith("data: [DONE]\n\n")
    assert sse.parse_events(body) == [{"a": "ü\n"}, {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                                      "[DONE]"]
    with pytest.raises(ValueError, match="not an SSE data event"):
        sse.parse_events("event: x\n\n")


@dataclass
class Out:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    logprobs: list | None = field(default=None)


def test_deltas_carry_only_new_text_and_one_finish_reason():
    tracker = DeltaTracker()
    first = tracker.update(0, Out("He", [1]))
    assert (first.text, first.token_ids, first.first, first.finish_reason) == ("He", [1], True, None)
    assert tracker.update(0, Out("He", [1])) is None  # nothing new: no chunk
    held = tracker.update(0, Out("He", [1, 2]))  # a token whose text is still held back
    assert (held.text, held.token_ids, held.first) == ("", [2], False)
    last = tracker.update(0, Out("Hello", [1, 2, 3], "stop"))
    assert (last.text, last.token_ids, last.finish_reason, last.text_offset) == ("llo", [3], "stop", 2)
    assert tracker.update(0, Out("Hello", [1, 2, 3], "stop")) is None
    other = tracker.update(1, Out("", [], None))  # a choice's first output always opens it
    assert other.first and other.index == 1


def test_delta_logprobs_follow_their_tokens():
    lps = [{1: Logprob(-0.1, 1)}, {2: Logprob(-0.2, 1)}, {3: Logprob(-0.3, 1)}]
    tracker = DeltaTracker()
    tracker.update(0, Out("a", [1], logprobs=lps[:1]))
    d = tracker.update(0, Out("abc", [1, 2, 3], logprobs=lps))
    assert d.logprobs == lps[1:]


def _text(token_id: int) -> str:
    return {1: "a", 2: "bb", 3: "c", 4: "d"}[token_id]


def test_completion_logprobs_block():
    lps = [{1: Logprob(-0.5, 2), 4: Logprob(-0.25, 1)}, {2: -0.125, 3: -3.0}]
    block = completion_logprobs([1, 2], lps, 1, _text, text_offset=10)
    assert block.tokens == ["a", "bb"]
    assert block.token_logprobs == [-0.5, -0.125]
    assert block.top_logprobs == [{"d": -0.25}, {"bb": -0.125}]
    assert block.text_offset == [10, 11]


def test_chat_logprobs_block():
    lps = [{1: Logprob(-0.5, 2), 4: Logprob(-0.25, 1), 3: Logprob(-2.0, 3)}]
    (entry,) = chat_logprobs([1], lps, 2, _text).content
    assert (entry.token, entry.logprob, entry.bytes) == ("a", -0.5, [97])
    assert [(t.token, t.logprob) for t in entry.top_logprobs] == [("d", -0.25), ("a", -0.5)]
    assert chat_logprobs([1], lps, 0, _text).content[0].top_logprobs == []


def test_chat_delta_names_the_role_only_when_set():
    assert sse.parse_events(sse.event(ChatDelta(content="x"))) == [{"content": "x"}]
    assert sse.parse_events(sse.event(ChatDelta(role="assistant", content="")))[0]["role"] == "assistant"
