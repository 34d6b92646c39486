"""Server-sent events as OpenAI streams them: `data: {json}` lines, then `data: [DONE]`.

Kept apart from the routes so the framing (one blank line between events, compact JSON,
the terminator) is written once and unit-tested without a server.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

DONE = "data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"


def event(payload: BaseModel | dict[str, Any]) -> str:
    """One SSE event carrying `payload` as compact JSON (None fields kept: OpenAI sends them)."""
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json()
    else:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {text}\n\n"


def parse_events(body: str) -> list[dict[str, Any] | str]:
    """Split a whole SSE body back into payloads ("[DONE]" stays a string); for tests and the benchmark."""
    out: list[dict[str, Any] | str] = []
    for block in body.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        if not block.startswith("data: "):
            raise ValueError(f"not an SSE data event: {block[:80]!r}")
        data = block[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out
