"""Triton kernels, each beside its plain-torch reference (the spec, and what the CPU path runs).

The engine picks `*_ref` on CPU and the Triton version on CUDA; both take the same arguments.
Importing this package needs triton importable but no GPU.
"""

from aios.kernels.activation import gelu_tanh_and_mul, gelu_tanh_and_mul_ref, silu_and_mul, silu_and_mul_ref
from aios.kernels.decode_attention import decode_attention, decode_attention_ref
from aios.kernels.fused_gemv import add_rmsnorm_gemv, add_rmsnorm_gemv_ref, silu_mul_gemv, silu_mul_gemv_ref
from aios.kernels.gemv import gemv, gemv_ref
from aios.kernels.gemv_silu_and_mul import gemv_silu_and_mul, gemv_silu_and_mul_ref
from aios.kernels.prefill_attention import prefill_attention, prefill_attention_ref
from aios.kernels.qk_norm_rope import (
    qk_norm_rope,
    qk_norm_rope_ref,
    qk_norm_rope_store_kvcache,
    qk_norm_rope_store_kvcache_ref,
    rope_ref,
    rope_store_kvcache,
    rope_store_kvcache_ref,
)
from aios.kernels.rmsnorm import (
    fused_add_gemma_rms_norm,
    fused_add_gemma_rms_norm_ref,
    fused_add_rms_norm,
    fused_add_rms_norm_ref,
    gemma_rms_norm,
    gemma_rms_norm_ref,
    rms_norm,
    rms_norm_ref,
)
from aios.kernels.sampling import sample, sample_ref
from aios.kernels.store_kvcache import store_kvcache, store_kvcache_ref
from aios.kernels.token_bitmask import apply_token_bitmask, apply_token_bitmask_ref

__all__ = [
    "add_rmsnorm_gemv", "add_rmsnorm_gemv_ref",
    "apply_token_bitmask", "apply_token_bitmask_ref",
    "decode_attention", "decode_attention_ref",
    "fused_add_rms_norm", "fused_add_rms_norm_ref",
    "gemv", "gemv_ref",
    "gemv_silu_and_mul", "gemv_silu_and_mul_ref",
    "prefill_attention", "prefill_attention_ref",
    "qk_norm_rope", "qk_norm_rope_ref",
    "qk_norm_rope_store_kvcache", "qk_norm_rope_store_kvcache_ref",
    "rope_store_kvcache", "rope_store_kvcache_ref",
    "rms_norm", "rms_norm_ref",
    "gemma_rms_norm", "gemma_rms_norm_ref", "fused_add_gemma_rms_norm", "fused_add_gemma_rms_norm_ref",
    "gelu_tanh_and_mul", "gelu_tanh_and_mul_ref",
    "rope_ref",
    "sample", "sample_ref",
    "silu_and_mul", "silu_and_mul_ref",
    "silu_mul_gemv", "silu_mul_gemv_ref",
    "store_kvcache", "store_kvcache_ref",
]
