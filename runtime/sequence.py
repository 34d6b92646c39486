"""One completion being generated: its tokens, its KV blocks and its progress.

A request with `n` completions becomes `n` sequences. A sequence owns its token ids and
its block table (the KV blocks holding its cached keys and values); the block manager
only lends blocks. `num_computed_tokens` counts the tokens whose KV is in the cache: the
scheduler feeds the model `token_ids[num_computed_tokens:]` in chunks, and a sequence
samples a new token only when a step brings it level with its token list.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from runtime.detokenizer import IncrementalDetokenizer
    from runtime.outputs import Logprob
    from runtime.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


_seq_ids = itertools.count()


@dataclass(eq=False)
class Sequence:
    """A prompt plus the tokens generated so far, scheduled as a unit."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    index: int = 0
    seq_id: int = field(default_factory=lambda: next(_seq_ids))
    token_ids: list[int] = field(init=False)
    num_prompt_tokens: int = field(init=False)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None
    output_text: str = ""
    logprobs: list[dict[int, Logprob]] | None = None
    generator: torch.Generator | None = None
    detokenizer: IncrementalDetokenizer | None = None

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_token_ids)
        self.num_prompt_tokens = len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def reset_for_recompute(self) -> None:
        """Forget the KV cache after preemption; the tokens (prompt + output) stay."""
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table = []
        self.block_hashes = []
        self.status = SequenceStatus.WAITING
