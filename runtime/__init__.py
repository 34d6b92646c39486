"""The serving runtime: continuous batching over a paged KV cache, offline and online.

    from runtime import LLM, SamplingParams
    outs = LLM().generate(["Hello"], SamplingParams(max_tokens=32, temperature=0.0))

`LLMEngine` (runtime/engine.py) is the step-by-step interface the OpenAI server drives.
"""

from runtime.engine import EngineArgs, EngineStats, LLMEngine
from runtime.llm import LLM
from runtime.outputs import CompletionOutput, Logprob, RequestOutput
from runtime.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "CompletionOutput",
    "EngineArgs",
    "EngineStats",
    "LLMEngine",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
]
