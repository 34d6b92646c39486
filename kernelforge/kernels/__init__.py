"""The LLM-serving kernels: public ops with vLLM's signatures (see ARCHITECTURE.md).

Each op lives in its own module with its DSL kernel and launcher; the launcher checks
its arguments (`validation`) and launches the kernel on the backend the tensors' device
(or `kf.backend` / `KF_BACKEND`) selects. `reference` holds the plain-PyTorch oracles.
"""

from kernelforge.kernels.paged_attention import paged_attention
from kernelforge.kernels.reshape_and_cache import reshape_and_cache
from kernelforge.kernels.rms_norm import fused_add_rms_norm, rms_norm
from kernelforge.kernels.rotary_embedding import rotary_embedding

__all__ = ["rms_norm", "fused_add_rms_norm", "rotary_embedding", "reshape_and_cache", "paged_attention"]
